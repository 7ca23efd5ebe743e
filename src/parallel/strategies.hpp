// Factories of the attention strategies, one file each (parallel/<name>.cpp), gathered
// by make_attention (parallel/attention.cpp).
#pragma once
#include <memory>

#include "parallel/attention.hpp"

namespace seqpar {

#define SEQPAR_STRATEGY_FACTORY(fn)                                                           \
  std::unique_ptr<AttentionStrategy> fn(Arena& arena, const SpSetup& sp, int B, int T, int H, \
                                        int Hkv, int d)
SEQPAR_STRATEGY_FACTORY(make_local_attention);
SEQPAR_STRATEGY_FACTORY(make_ring_attention);
SEQPAR_STRATEGY_FACTORY(make_allgather_attention);
SEQPAR_STRATEGY_FACTORY(make_ulysses_attention);
SEQPAR_STRATEGY_FACTORY(make_usp_attention);
SEQPAR_STRATEGY_FACTORY(make_mqsp_attention);
SEQPAR_STRATEGY_FACTORY(make_rsa_attention);
SEQPAR_STRATEGY_FACTORY(make_materialized_attention);

}  // namespace seqpar
