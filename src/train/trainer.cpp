#include "train/trainer.hpp"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <type_traits>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "core/check.hpp"
#include "core/memory.hpp"
#include "core/profile.hpp"
#include "core/threads.hpp"
#include "parallel/layout.hpp"
#include "train/checkpoint.hpp"
#include "train/checkpoint_stream.hpp"
#include "train/data.hpp"
#include "train/eval.hpp"
#include "train/hf_import.hpp"
#include "train/planner.hpp"
#include "train/progress.hpp"
#include "train/run_dir.hpp"
#include "train/setup.hpp"
#include "train/state.hpp"
#include "train/step.hpp"

namespace seqpar {

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;

void on_stop_signal(int sig) {
  if (sig == SIGINT && g_stop_signal != 0) {
    // The second interrupt: the user wants out now. Only async-signal-safe calls here.
    static const char msg[] = "seqpar: second interrupt: exiting now without a checkpoint\n";
    (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
    ::_exit(130);
  }
  g_stop_signal = sig;
}

std::string human_bytes(double b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) {
    b /= 1024;
    ++i;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %s", b, u[i]);
  return buf;
}

// Where a resumed run starts, and what it refuses: a checkpoint at or beyond --steps leaves
// nothing to do; a setting that changes what the run means (resume_keys) must match the
// checkpoint's unless the user named it in --override.
struct ResumePoint {
  bool resumed = false;
  int64_t step = 0;
  uint64_t next_sample = 0;  // global index of the first sample the next step reads
  std::string dir;
};

void check_resume_settings(const TrainConfig& cfg, const Checkpoint& ck) {
  const nlohmann::json saved = ck.manifest.value("train", nlohmann::json::object());
  const nlohmann::json now = cfg.to_json();
  // A key a checkpoint lacks (saved before the setting existed) had its default value.
  const nlohmann::json defaults = TrainConfig{}.to_json();
  std::ostringstream diff;
  std::string keys;
  for (const std::string& k : resume_keys()) {
    const nlohmann::json was = saved.contains(k) ? saved[k] : defaults.value(k, nlohmann::json());
    if (was.is_null() || was == now[k]) continue;
    if (std::find(cfg.overrides.begin(), cfg.overrides.end(), k) != cfg.overrides.end()) continue;
    diff << (keys.empty() ? "" : ", ") << k << " " << was.dump() << " -> " << now[k].dump();
    keys += " --override " + k;
  }
  SP_CHECK_USAGE(keys.empty(), "--resume from ", ck.dir, ": ", diff.str(),
                 " differ from the checkpoint's run, which changes what the run means (its "
                 "data, shapes or schedule); resume with the saved values, or accept the "
                 "change with",
                 keys);
}

// The training data (checked against the model, the packing and the loss targets:
// train/setup.hpp) and, with --eval-every, its held-out split: refused on every rank alike
// when they do not fit the model.
void open_sources(const TrainConfig& cfg, Comm& world, std::unique_ptr<DataSource>& src,
                  std::unique_ptr<DataSource>& val) {
  agree_or_throw(world, [&] {
    src = open_data(cfg, Split::train);
    if (cfg.eval_every > 0) val = make_source(cfg.data, cfg.seed, cfg.seq_len, Split::validation);
  });
}

// Start fresh, or resume. Every rank reads the same files and reaches the same verdict.
ResumePoint start_or_resume(const TrainConfig& cfg, Comm& world, const Mesh& mesh, RunDir& run,
                            TrainState& state, const nlohmann::json& data_id) {
  const int B = cfg.batch, dp = mesh.dp, tp = mesh.tp;
  ResumePoint at;
  agree_or_throw(world, [&] {
    const bool saved = has_checkpoint(run.checkpoints());
    // Nothing the user saved is overwritten: a run directory that already holds
    // checkpoints is only continued (--resume), never restarted over.
    SP_CHECK_USAGE(cfg.resume || !saved, "output directory '", cfg.out,
                   "' already holds checkpoints of an earlier run; pass --resume to continue "
                   "it, or choose another --out");
    if (!cfg.init_from.empty() && !saved) return;  // below
    if (!cfg.resume || !saved) {
      state.init_weights(cfg.seed);
      return;
    }
    Checkpoint ck = open_checkpoint(run.checkpoints());  // verified; tensors streamed below
    at = {true, ck.step, ck.state.value("next_sample", uint64_t(ck.step) * B * dp), ck.dir};
    if (cfg.steps <= ck.step) return;  // nothing left to do: said below, on every rank
    check_resume_settings(cfg, ck);
    // The same --data must be the same bytes (not another file of that name).
    if (std::find(cfg.overrides.begin(), cfg.overrides.end(), "data") == cfg.overrides.end())
      check_same_data(ck.manifest, ck.dir, data_id);
    load_state_checkpoint(state, ck, cfg.model, tp, mesh.tp_rank);
  });
  if (at.resumed || cfg.init_from.empty() || !at.dir.empty()) return at;
  // --init-from on a fresh run: rank 0 imports the Hugging Face weights as this run's
  // step 0 (train/hf_import), then every rank loads it as a resume would, on any mesh.
  std::string dir;
  agree_or_throw(world, [&] {
    if (world.rank() == 0 && !has_checkpoint(run.checkpoints()))
      dir = import_hf(cfg.init_from, run.checkpoints(), cfg, data_id);
  });
  agree_or_throw(world, [&] {
    Checkpoint ck = open_checkpoint(run.checkpoints());
    at = {true, 0, 0, ck.dir};  // step 0 is on disk: never saved over
    load_state_checkpoint(state, ck, cfg.model, tp, mesh.tp_rank);
  });
  if (world.rank() == 0)
    std::cout << "initialised from " << cfg.init_from << " (saved as " << at.dir << ")"
              << std::endl;
  return at;
}

// True (with `result` saying why, and rank 0 saying it) when the run ends before its first
// step: a stop signal during the set-up (allocation, zeroing, loading) on any rank stops
// every rank, and a checkpoint at or beyond --steps leaves nothing to do. Nothing is saved.
bool ends_before_first_step(const TrainConfig& cfg, Comm& world, const ResumePoint& at,
                            TrainResult& result) {
  const bool rank0 = world.rank() == 0;
  int64_t sig = g_stop_signal;
  world.allreduce_max(&sig, 1);
  if (sig != 0) {
    if (rank0)
      std::cout << "stopped by signal " << sig << " during set-up, before step " << at.step + 1
                << "; nothing was trained or saved" << std::endl;
    result.setup_signal = int(sig);
    return true;
  }
  if (at.resumed && cfg.steps <= at.step) {
    if (rank0)
      std::cout << "nothing left to do: the newest checkpoint " << at.dir << " is at step "
                << at.step << " and --steps is " << cfg.steps
                << "; pass a larger --steps to train on" << std::endl;
    result.nothing_to_do = true;
    return true;
  }
  return false;
}

// The step loop over the objects train() set up, in the order it built them: steps,
// metrics, progress, periodic and final checkpoints, the stop on a signal or --stop-after.
class StepLoop {
 public:
  StepLoop(const TrainConfig& cfg, Comm& world, Mesh& mesh, RunDir& run, Arena& arena,
           TrainState& state, const DataSource& src, const DataSource* val,
           const std::vector<int64_t>& pos, const ResumePoint& at, const nlohmann::json& shared_cfg,
           const nlohmann::json& data_id)
      : cfg_(cfg),
        world_(world),
        mesh_(mesh),
        run_(run),
        arena_(arena),
        state_(state),
        src_(src),
        val_(val),
        pos_(pos),
        at_(at),
        shared_cfg_(shared_cfg),
        data_id_(data_id),
        rank0_(world.rank() == 0),
        B_(cfg.batch),
        dp_(mesh.dp),
        last_saved_(at.resumed ? at.step : -1),
        progress_(cfg.progress, rank0_, cfg.steps),
        global_tokens_per_step_(int64_t(B_) * dp_ * cfg.seq_len) {}

  // Steps from the resume point to --steps (or to a stop), then the final save.
  void run(TrainResult& result, const ProcessPlan& mem) {
    for (int64_t s = at_.step; s < cfg_.steps; ++s) {
      if (stop_before(s)) {
        result.interrupted = true;
        return;
      }
      step(s, result);
    }
    finish(result, mem);
  }

 private:
  // Global sample index of step s's first sample: the data position continues from the
  // checkpoint's, whatever batch and dp this run uses.
  uint64_t first_sample(int64_t s) const {
    return at_.next_sample + uint64_t(s - at_.step) * B_ * dp_;
  }

  void save(int64_t step) {
    if (step == last_saved_) return;  // that state is on disk already (a stop right after resume)
    // Streamed through the state's bounded buffer (train/checkpoint_stream.hpp): collective
    // over world, written by world rank 0; a failure there is reported on every rank.
    nlohmann::json st = {{"step", step},
                         {"seed", cfg_.seed},
                         {"next_sample", first_sample(step)},
                         {"batch", B_},
                         {"dp", dp_},
                         {"lr", json_float(lr_at(cfg_, std::max<int64_t>(0, step - 1)))}};
    nlohmann::json extra = {{"model", cfg_.model.to_json()},
                            {"parallel", mesh_json(mesh_, cfg_)},
                            {"train", shared_cfg_},
                            {"data", data_id_}};
    const std::string dir = save_state_checkpoint(state_, mesh_, world_, cfg_.model,
                                                  run_.checkpoints(), step, st, extra);
    if (rank0_) std::cout << "saved checkpoint " << dir << std::endl;
    last_saved_ = step;
  }

  // A stop signal on any rank (or --stop-after) stops every rank before step s, after
  // checkpointing the state it reached. Returns whether it stopped.
  bool stop_before(int64_t s) {
    int64_t stop = g_stop_signal;
    world_.allreduce_max(&stop, 1);
    if (!stop && !(cfg_.stop_after > 0 && s == cfg_.stop_after)) return false;
    progress_.finish();
    if (rank0_)
      std::cout << (stop ? "stop signal received" : "stop_after reached")
                << ": checkpointing at step " << s << std::endl;
    if (rank0_ && stop && world_.size() > 1)  // said first: mpiexec may not let the save finish
      std::cout << "note: if the signal went to mpiexec itself, mpiexec itself exits 1 all "
                   "the same (OpenMPI counts a signalled job as failed), and it kills the "
                   "ranks odls_base_sigkill_timeout seconds (default 1) after forwarding the "
                   "signal, which cuts a longer save short (the previous checkpoint stays); "
                   "signal the rank processes instead (docs/checkpoints.md)"
                << std::endl;
    save(s);
    return true;
  }

  // Step s, its held-out loss when due, its metrics row, and its periodic checkpoint.
  void step(int64_t s, TrainResult& result) {
    if (cfg_.profile && !profile_enabled()) profile_enable(true);
    world_.stats().reset();
    mesh_.reset_stats();
    auto t0 = std::chrono::steady_clock::now();
    profile_begin_step();
    StepResult r = train_step(state_, mesh_, world_, cfg_, src_, pos_, s, first_sample(s));
    const PhaseSeconds phases = profile_end_step();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (cfg_.profile) {
      for (int p = 0; p < kPhases; ++p) phase_total_[size_t(p)] += phases[size_t(p)];
      step_total_ += dt;
      last_phases_ = phases;
    }
    result.last_step = s + 1;
    result.last_loss = r.loss;
    result.losses.push_back(r.loss);
    // Held-out loss after this step (and after the last), in the same metrics row.
    const bool eval_now =
        cfg_.eval_every > 0 && ((s + 1) % cfg_.eval_every == 0 || s + 1 == cfg_.steps);
    const nlohmann::json ev =
        eval_now ? evaluate(state_.model, mesh_, world_, cfg_, *val_, pos_).to_json()
                 : nlohmann::json();
    if (rank0_ && ((s + 1) % cfg_.log_every == 0 || s + 1 == cfg_.steps || eval_now))
      log_step(s, r, dt, eval_now ? &ev : nullptr);
    if (cfg_.ckpt_every > 0 && (s + 1) % cfg_.ckpt_every == 0 && s + 1 < cfg_.steps) save(s + 1);
  }

  // Rank 0: step s's metrics row (with the held-out loss `ev` when evaluated) and progress.
  void log_step(int64_t s, const StepResult& r, double dt, const nlohmann::json* ev) {
    nlohmann::json rec = {{"step", s + 1},
                          {"loss", r.loss},
                          {"grad_norm", r.grad_norm},
                          {"lr", json_float(r.lr)},
                          {"target_tokens", int64_t(r.targets)},
                          {"tokens_per_s", global_tokens_per_step_ / dt},
                          {"step_ms", dt * 1e3}};
    if (r.answers > 0) rec["answer_acc"] = r.answers_correct / r.answers;
    if (cfg_.profile) {  // rank 0's phases of this step, in ms (core/profile.hpp)
      nlohmann::json prof;
      for (int p = 0; p < kPhases; ++p) prof[phase_name(Phase(p))] = last_phases_[size_t(p)] * 1e3;
      rec["profile_ms"] = prof;
    }
    if (ev) rec.update(*ev);
    nlohmann::json peak;
    for (int c = 0; c < kMemCategories; ++c) peak[mem_name(Mem(c))] = arena_.peak(Mem(c));
    peak["total"] = arena_.total_peak();
    rec["peak_bytes"] = peak;
    // Bytes this rank sent during the step: attention (sp group) and the rest (gradient
    // all-reduce and loss sums over the world), as comm/ counts them.
    rec["bytes_sent"] = {
        {"sp", mesh_.sp_comm.stats().total_bytes_sent()},
        {"tp", mesh_.tp_comm.stats().total_bytes_sent()},
        {"world", world_.stats().total_bytes_sent() + mesh_.shard_comm.stats().total_bytes_sent()}};
    run_.append_metrics(rec);
    progress_.update(s + 1, r.loss, global_tokens_per_step_ / dt, rec);
  }

  // --profile: the phases' share of the steps this launch ran, rank 0's, in one line.
  void print_profile() const {
    if (!cfg_.profile || !rank0_ || step_total_ <= 0) return;
    std::ostringstream o;
    o << "profile (rank 0, " << std::fixed << std::setprecision(1) << step_total_
      << " s of steps):";
    for (int p = 1; p <= kPhases; ++p) {  // `other` (what no phase covers) last
      const int q = p % kPhases;
      o << " " << phase_name(Phase(q)) << " " << std::setprecision(1)
        << 100.0 * phase_total_[size_t(q)] / step_total_ << "%";
    }
    std::cout << o.str() << std::endl;
  }

  // After the last step: the final checkpoint and the process's peak memory.
  void finish(TrainResult& result, const ProcessPlan& mem) {
    progress_.finish();
    print_profile();
    result.arena_peak = arena_.total_peak();
    // The final state is saved, step 0 included (--steps 0 saves the initial weights).
    if (cfg_.save_final) save(cfg_.steps);
    // The process's peak resident memory against the plan: the budget must hold (issue 10).
    int64_t hwm = int64_t(process_peak_rss_bytes());
    world_.allreduce_max(&hwm, 1);
    result.peak_rss = uint64_t(hwm);
    if (rank0_)
      std::cout << "peak resident memory (VmHWM, max over ranks): " << hwm << " bytes ("
                << format_bytes(uint64_t(hwm)) << "), plan " << mem.total << " bytes" << std::endl;
  }

  PhaseSeconds phase_total_{}, last_phases_{};
  double step_total_ = 0;
  const TrainConfig& cfg_;
  Comm& world_;
  Mesh& mesh_;
  RunDir& run_;
  Arena& arena_;
  TrainState& state_;
  const DataSource& src_;
  const DataSource* val_;  // the held-out split, with --eval-every
  const std::vector<int64_t>& pos_;
  const ResumePoint& at_;
  const nlohmann::json& shared_cfg_;
  const nlohmann::json& data_id_;
  const bool rank0_;
  const int B_, dp_;
  int64_t last_saved_;  // the step whose state is on disk (−1: none)
  Progress progress_;
  const int64_t global_tokens_per_step_;
};

}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

TrainResult train(const TrainConfig& cfg, Comm& world) {
  agree_or_throw(world, [&] {
    cfg.validate();
    cfg.validate_for_world(world.size());
  });
  // Every rank must run the same configuration: refuse on every rank before any work.
  const nlohmann::json shared_cfg = cfg.to_json();
  world.check_same("configuration", shared_cfg.dump());

  const int W = world.size();
  Mesh mesh = make_mesh(world, cfg);
  const int threads = apply_threads(cfg, W);

  std::unique_ptr<DataSource> src, val;  // val: the held-out split, with --eval-every
  open_sources(cfg, world, src, val);
  nlohmann::json data_id;  // recorded in every checkpoint, compared on resume
  agree_or_throw(world, [&] { data_id = data_identity(cfg.data); });
  const std::vector<int64_t> pos = shard_positions(cfg.seq_len, cfg.sp, mesh.sp_rank, cfg.layout);

  // The whole process must fit before anything is allocated: the arena's dry-run peak (the
  // checkpoint's stream buffer included) and the runtime baseline against --max-memory
  // (train/planner).
  const ProcessPlan mem = process_plan(cfg, world);
  refuse_over_memory(mem, cfg);

  RunDir run(cfg.out, world);  // locked from here to the end of the run
  Arena arena;
  static_assert(std::is_same_v<std::sig_atomic_t, int>, "Arena::set_interrupt takes an int flag");
  arena.set_interrupt(&g_stop_signal);  // a stop during the set-up skips the zeroing left
  TrainState state(cfg, arena, mesh, cfg.batch, int(pos.size()));

  const ResumePoint at = start_or_resume(cfg, world, mesh, run, state, data_id);
  TrainResult result;
  result.start_step = result.last_step = at.step;
  if (ends_before_first_step(cfg, world, at, result)) return result;
  run.write_config(shared_cfg);
  run.open_metrics(at.step);
  if (world.rank() == 0) {
    if (at.resumed)
      std::cout << "resumed from " << at.dir << " at step " << at.step << ", sample "
                << at.next_sample << std::endl;
    std::cout << "seqpar train: " << W << " rank(s) = dp " << mesh.dp << " x tp " << mesh.tp
              << " x sp " << cfg.sp << " (" << cfg.strategy << ", " << layout_name(cfg.layout)
              << "), " << threads << " thread(s)/rank\n"
              << "data: " << src->describe() << "\n"
              << "model: " << model_kind_name(cfg.model.kind) << ", " << state.model.num_params()
              << " parameters on this rank (tp " << mesh.tp << ", recompute "
              << recompute_name(cfg.recompute) << ", zero " << cfg.zero << ")\n"
              << "arena after setup: " << human_bytes(double(arena.total_current())) << "\n"
              << "memory plan: " << mem.describe() << " of "
              << (mem.max_memory_given ? "--max-memory " : "available ")
              << human_bytes(double(mem.max_memory)) << "\n"
              << "config: " << shared_cfg.dump() << std::endl;
  }
  StepLoop(cfg, world, mesh, run, arena, state, *src, val.get(), pos, at, shared_cfg, data_id)
      .run(result, mem);
  return result;
}

}  // namespace seqpar
