// Memory planner. The training state of one rank (model parameters, gradients, saved
// activations, backward scratch, the attention strategy's communication and scratch
// buffers, AdamW moments) is allocated at start-up, once, by TrainState (train/state.hpp)
// — the same code the trainer runs. In a dry-run arena nothing is touched, so the exact per-rank
// peak of any shape costs only the allocation calls, and the planner searches the longest sequence
// whose peak fits a per-rank budget.
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "model/model.hpp"
#include "train/config.hpp"
#include "train/state.hpp"

namespace seqpar {

struct MemoryPlan {
  int64_t L = 0;
  uint64_t peak_total = 0;                      // max over ranks
  std::array<uint64_t, kMemCategories> peak{};  // per category, max over ranks
  // MPI's temporaries outside the arena: the largest the code declared while it set up
  // (Arena::note_outside, comm.hpp: Comm::scratch_bytes), max over ranks.
  uint64_t mpi_scratch = 0;
};

// Dry-run per-rank peak of cfg as given (cfg.seq_len). Collective over world.
MemoryPlan dry_run_peak(const TrainConfig& cfg, Comm& world);

// Longest L ≤ max_len (any L from the shortest the configuration accepts) whose dry-run
// arena peak fits `budget` bytes per rank; L = 0 if even the smallest does not fit.
MemoryPlan longest_under_budget(TrainConfig cfg, Comm& world, uint64_t budget, int64_t max_len);

// The whole process per rank, what a memory limit must hold: an upper bound of its peak
// resident memory (VmHWM), in two phases, the larger of
//   set-up = VmHWM after the runtimes' warm-ups (max over ranks): the data source opened,
//            MPI up, and the warm-ups' own transients (an 8 MiB sgemm output, the
//            transport's messages and all-reduce), which nothing later repeats;
//   steady = arena peak (dry run, max over ranks; it includes the checkpoint's stream
//                        buffer, Mem::ckpt, reported as `checkpoint`: a save touches
//                        nothing else, train/checkpoint_stream.hpp, and every per-thread
//                        scratch of the kernels)
//          + baseline   (resident memory of the process with MPI (its shared-memory
//                        transport's segments and per-peer buffers touched by the warm-up),
//                        OpenBLAS (its pack buffer at the largest product the kernels issue)
//                        and OpenMP's default team of `baseline_threads` up, before the
//                        arena: max over ranks)
//          + threads    ((num_threads() − baseline_threads)⁺ × thread_bytes(): the kernels'
//                        teams are num_threads() strong, and OpenBLAS caps OpenMP's default
//                        team below a larger request, so those threads are not in the
//                        baseline; core/memory.hpp has the terms of thread_bytes())
//          + MPI scratch (the largest temporary an MPI collective of the step allocates:
//                        c·m + κ for an operand of m bytes, comm.hpp; 0 on one rank)
//          + reserve    (what a training step touches outside the arena and the baseline:
//                        host vectors of the batch, masks and schedules, heap growth, the
//                        transport's fragments beyond the warm-up's (≤ 0.16 MiB measured at
//                        N = 4); measured 0–5.7 MB at N = 2 for arena peaks of 128 MiB to
//                        1 GiB, docs/results.md. Reserved: 8 MiB + 1 % of the arena peak)
// against max_memory (cfg.max_memory, or the smallest available memory over ranks).
// docs/memory.md has the measurements behind each term.
struct ProcessPlan {
  MemoryPlan arena;
  uint64_t baseline = 0, checkpoint = 0, threads = 0, mpi = 0, reserve = 0, setup = 0, total = 0,
           max_memory = 0;
  int baseline_threads = 1, extra_threads = 0;  // threads = extra_threads × thread_bytes()
  bool max_memory_given = false;                // false: max_memory is what the machines offer
  bool fits() const { return total <= max_memory; }
  uint64_t steady() const { return arena.peak_total + baseline + threads + mpi + reserve; }
  // One line for errors and logs: "9.80 GiB per rank (arena peak …, of which checkpoint
  // buffer …, + runtime baseline …, + … threads beyond it …, + MPI scratch …, + step
  // reserve …; set-up peak …)".
  std::string describe() const;
  // The terms by name (bytes), for check and plan's JSON.
  nlohmann::json terms() const;
};
// Collective over world. Measures this process now (after warm_up_runtimes()).
ProcessPlan process_plan(const TrainConfig& cfg, Comm& world);
// The reserve above for an arena peak of `arena_peak` bytes.
uint64_t step_reserve_bytes(uint64_t arena_peak);
// Throws UsageError naming every term when the plan does not fit (same verdict and text on
// every rank: all terms are reduced over ranks).
void refuse_over_memory(const ProcessPlan& p, const TrainConfig& cfg);

}  // namespace seqpar
