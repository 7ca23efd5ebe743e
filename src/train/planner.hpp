// Memory planner. The training state of one rank (model parameters, gradients, saved
// activations, backward scratch, the attention strategy's communication and scratch
// buffers, AdamW moments) is allocated at start-up, once, by TrainState — the same code
// the trainer runs. In a dry-run arena nothing is touched, so the exact per-rank peak of
// any shape costs only the allocation calls, and the planner searches the longest
// sequence whose peak fits a per-rank budget.
#pragma once
#include <array>
#include <cstdint>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "model/model.hpp"
#include "train/trainer.hpp"

namespace seqpar {

// The dp × tp × sp mesh of the world: world = dp·tp·sp and
// rank = (dp_rank·tp + tp_rank)·sp + sp_rank (sp innermost, as its traffic is heaviest).
struct Mesh {
  int dp = 1, tp = 1, sp = 1, dp_rank = 0, tp_rank = 0, sp_rank = 0;
  Comm sp_comm;     // same dp_rank and tp_rank: the attention strategy's group
  Comm tp_comm;     // same dp_rank and sp_rank: Megatron's all-gather / reduce-scatter group
  Comm shard_comm;  // same tp_rank: ranks holding the same parameter shards (their grads sum)
  Comm kv_comm;     // within tp: the ranks sharing one replicated kv head (Hkv < tp)
  ModelParallel model_parallel(const TrainConfig& cfg);
};
Mesh make_mesh(Comm& world, const TrainConfig& cfg);

// Everything one rank keeps in memory for training.
struct TrainState {
  TrainState(const TrainConfig& cfg, Arena& arena, const ModelParallel& par, int B, int T);
  Model model;
  Buffer m, v;  // AdamW moments (P floats each)
};

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
