// Memory planner. The training state of one rank (model parameters, gradients, saved
// activations, backward scratch, the attention strategy's communication and scratch
// buffers, AdamW moments) is allocated at start-up, once, by TrainState (train/state.hpp)
// — the same code the trainer runs. In a dry-run arena nothing is touched, so the exact per-rank
// peak of any shape costs only the allocation calls, and the planner searches the longest sequence
// whose peak fits a per-rank budget.
#pragma once
#include <array>
#include <cstdint>
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
};

// Dry-run per-rank peak of cfg as given (cfg.seq_len). Collective over world.
MemoryPlan dry_run_peak(const TrainConfig& cfg, Comm& world);

// Longest L ≤ max_len (any L from the shortest the configuration accepts) whose dry-run
// arena peak fits `budget` bytes per rank; L = 0 if even the smallest does not fit.
MemoryPlan longest_under_budget(TrainConfig cfg, Comm& world, uint64_t budget, int64_t max_len);

// The whole process per rank, what a memory limit must hold:
//   total = arena peak (dry run, max over ranks; it includes the checkpoint's stream
//                       buffer, Mem::ckpt, reported as `checkpoint`: a save touches
//                       nothing else, train/checkpoint_stream.hpp)
//         + baseline   (resident memory of the process with MPI, OpenBLAS (its pack buffer
//                       at the largest product the kernels issue) and the OpenMP threads
//                       up, before the arena: max over ranks)
//         + reserve    (what a training step touches outside the arena and the baseline:
//                       host vectors of the batch, masks and schedules, heap growth;
//                       measured 0–5.7 MB at N = 2 for arena peaks of 128 MiB to 1 GiB,
//                       docs/results.md. Reserved: 8 MiB + 1 % of the arena peak)
// against max_memory (cfg.max_memory, or the smallest available memory over ranks).
struct ProcessPlan {
  MemoryPlan arena;
  uint64_t baseline = 0, checkpoint = 0, reserve = 0, total = 0, max_memory = 0;
  bool max_memory_given = false;  // false: max_memory is what the machines offer
  bool fits() const { return total <= max_memory; }
  // One line for errors and logs:
  // "9.80 GiB (arena …, of which checkpoint …, + baseline …, + reserve …)".
  std::string describe() const;
};
// Collective over world. Measures this process now (after warm_up_runtimes()).
ProcessPlan process_plan(const TrainConfig& cfg, Comm& world);
// The reserve above for an arena peak of `arena_peak` bytes.
uint64_t step_reserve_bytes(uint64_t arena_peak);
// Throws UsageError naming every term when the plan does not fit (same verdict and text on
// every rank: all terms are reduced over ranks).
void refuse_over_memory(const ProcessPlan& p, const TrainConfig& cfg);

}  // namespace seqpar
