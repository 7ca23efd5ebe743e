// Per-phase step times (`seqpar train --profile`), as Megatron's timers: where a step's
// wall-clock time goes on this rank. Phases are exclusive: a scope opened inside another
// (a collective inside ring attention, a linear inside a layer) charges its time to itself
// and not to the enclosing one, so the phases of a step add up to the time they cover;
// what no scope covers is `other`. Only the thread that enabled it records (the kernels'
// OpenMP workers run inside a scope of that thread). Off, a scope costs one branch.
//
//   data           the batch: sampling, tokens, masks
//   attention_fwd  the strategy's forward (and a selective recompute), communication excluded
//   attention_bwd  the strategy's backward, communication excluded
//   linear         every linear layer's products (forward and backward)
//   norm_act       the rest of the layers: norms, activations, RoPE, residuals, embedding
//   loss           the head's logits and the cross-entropy (fused or materialized)
//   comm           blocking communication: collectives and waits on transfers
//   optimizer      gradient clipping and AdamW (gradient all-reduces are comm)
//   other          the rest of the step
#pragma once
#include <array>
#include <chrono>

namespace seqpar {

enum class Phase : int {
  other,
  data,
  attention_fwd,
  attention_bwd,
  linear,
  norm_act,
  loss,
  comm,
  optimizer,
  count
};
constexpr int kPhases = int(Phase::count);
const char* phase_name(Phase p);
using PhaseSeconds = std::array<double, kPhases>;

// Turns recording on or off for the calling thread (the trainer's).
void profile_enable(bool on);
bool profile_enabled();
// Starts a step in phase `other` / ends it: the seconds of each phase since begin.
void profile_begin_step();
PhaseSeconds profile_end_step();

class PhaseScope {
 public:
  explicit PhaseScope(Phase p);
  ~PhaseScope();
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  Phase prev_ = Phase::other;
  bool active_ = false;
};

}  // namespace seqpar
