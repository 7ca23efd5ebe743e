// Memory planner. The training state of one rank (model parameters, gradients, saved
// activations, backward scratch, the attention strategy's communication and scratch
// buffers, AdamW moments) is allocated at start-up, once, by TrainState (train/state.hpp)
// — the same code the trainer runs. In a dry-run arena nothing is touched, so the exact per-rank
// peak of any shape costs only the allocation calls, and the planner searches the longest sequence
// whose peak fits a per-rank budget.
#pragma once
#include <array>
#include <cstdint>

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

// Longest L ≤ max_len, a multiple of the layout's unit (sp, or 2·sp for zigzag, times what
// makes the B·L/sp shard rows divide over tp), whose
// dry-run peak fits `budget` bytes per rank; L = 0 if even the smallest does not fit.
MemoryPlan longest_under_budget(TrainConfig cfg, Comm& world, uint64_t budget, int64_t max_len);

}  // namespace seqpar
