#include "core/profile.hpp"

namespace seqpar {

namespace {

using Clock = std::chrono::steady_clock;

// The recording thread's state: the open phase and when it was last charged.
struct State {
  bool on = false;
  Phase cur = Phase::other;
  Clock::time_point last;
  PhaseSeconds sec{};
};
thread_local State t_state;

void charge(State& s, Clock::time_point now) {
  s.sec[size_t(s.cur)] += std::chrono::duration<double>(now - s.last).count();
  s.last = now;
}

}  // namespace

const char* phase_name(Phase p) {
  static const char* const names[kPhases] = {"other",         "data",   "attention_fwd",
                                             "attention_bwd", "linear", "norm_act",
                                             "loss",          "comm",   "optimizer"};
  return names[int(p)];
}

void profile_enable(bool on) { t_state = State{on, Phase::other, Clock::now(), {}}; }
bool profile_enabled() { return t_state.on; }

void profile_begin_step() {
  State& s = t_state;
  if (!s.on) return;
  s.cur = Phase::other;
  s.sec = {};
  s.last = Clock::now();
}

PhaseSeconds profile_end_step() {
  State& s = t_state;
  if (s.on) charge(s, Clock::now());
  return s.sec;
}

PhaseScope::PhaseScope(Phase p) {
  State& s = t_state;
  if (!s.on) return;
  charge(s, Clock::now());
  prev_ = s.cur;
  s.cur = p;
  active_ = true;
}

PhaseScope::~PhaseScope() {
  if (!active_) return;
  State& s = t_state;
  charge(s, Clock::now());
  s.cur = prev_;
}

}  // namespace seqpar
