// KV cache for generation, sharded over the sequence-parallel ranks.
//
// Each rank keeps the keys and values of the tokens it holds, per layer, with their global
// positions: after the prefill, its shard of the prompt (the layout's positions); during
// decoding, every N-th new token (position p lives on sp rank p mod N), so the cache grows
// evenly and no rank ever holds more than ⌈(prompt + new) / N⌉ + 1 tokens.
//
// Two attention strategies fill and read it, so the model runs unchanged
// (model/model.hpp, ModelParallel::attention):
//  * prefill: wraps the training strategy (ring, ulysses, allgather, ...). Its forward
//    copies each local token's K, V (after RoPE) into the cache, then runs the wrapped
//    strategy on the prompt shard: the prompt is attended exactly as in training.
//  * decode: the model runs on one token (B = T = 1), the same row on every sp rank. Each
//    rank attends the query to its own cache entries with the blocked kernel, giving a
//    partial (o_r, lse_r) per head; one all-gather of the N partials (H·d + H floats each)
//    and the log-sum-exp merge
//        M = max_r lse_r,  w_r = exp(lse_r − M),  o = Σ_r w_r·o_r / Σ_r w_r,
//        lse = M + log Σ_r w_r
//    give every rank the attention over the whole cache, in the same order everywhere.
//    A rank with no key contributes lse = −inf, o = 0 (w = 0).
#pragma once
#include <cstdint>
#include <memory>

#include "core/arena.hpp"
#include "parallel/attention.hpp"

namespace seqpar {

class Comm;

class KvCache {
 public:
  // Room for `capacity` tokens per layer of Hkv heads of size d (this rank's kv heads
  // under tensor parallelism), from `arena` (Mem::acts).
  KvCache(Arena& arena, int n_layer, int Hkv, int d, int64_t capacity);
  // Appends one token's K and V rows (Hkv·d floats each) at global position pos.
  void append(int layer, int64_t pos, const float* k, const float* v);
  int64_t size(int layer) const { return n_[size_t(layer)]; }
  int64_t capacity() const { return cap_; }
  int64_t row() const { return row_; }  // floats per token: Hkv·d
  const float* k(int layer) const { return k_.data() + int64_t(layer) * cap_ * row_; }
  const float* v(int layer) const { return v_.data() + int64_t(layer) * cap_ * row_; }
  const int64_t* pos(int layer) const { return positions() + int64_t(layer) * cap_; }

 private:
  int64_t* positions() const { return reinterpret_cast<int64_t*>(pos_.data()); }
  int64_t cap_, row_;
  Buffer k_, v_, pos_;  // pos_: n_layer·capacity int64 positions (64-byte aligned)
  std::vector<int64_t> n_;
};

// The prefill strategy: `inner` on the prompt shard, K and V kept in `cache`.
std::unique_ptr<AttentionStrategy> make_prefill_attention(std::unique_ptr<AttentionStrategy> inner,
                                                          KvCache& cache);
// The decode strategy over the sp group `sp` (null: one rank) for H query and Hkv kv heads
// of size d on this rank; its kernel scratch comes from `arena`.
std::unique_ptr<AttentionStrategy> make_decode_attention(Arena& arena, KvCache& cache, Comm* sp,
                                                         int H, int Hkv, int d);

}  // namespace seqpar
