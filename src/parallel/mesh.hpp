// The dp × tp × sp mesh of the world: world = dp·tp·sp and
// rank = (dp_rank·tp + tp_rank)·sp + sp_rank (sp innermost, as its traffic is heaviest).
#pragma once
#include "comm/comm.hpp"

namespace seqpar {

struct Mesh {
  int dp = 1, tp = 1, sp = 1, dp_rank = 0, tp_rank = 0, sp_rank = 0;
  Comm sp_comm;     // same dp_rank and tp_rank: the attention strategy's group
  Comm tp_comm;     // same dp_rank and sp_rank: Megatron's all-gather / reduce-scatter group
  Comm shard_comm;  // same tp_rank: ranks holding the same parameter shards (their grads sum)
  Comm kv_comm;     // within tp: the ranks sharing one replicated kv head (kv_replicas > 1)
  void reset_stats();
};

// Collective over world. `kv_replicas` = tp ranks sharing one kv head (1 when Hkv ≥ tp).
// Throws UsageError if world is not divisible by tp·sp.
Mesh make_mesh(Comm& world, int tp, int sp, int kv_replicas);

}  // namespace seqpar
