// Blocked exact attention with online softmax (FlashAttention-2 style, on the CPU).
//
// For one head:  S = Q Kᵀ·scale (+ mask),  P = softmax_rows(S),  O = P V,
//                LSE_i = log Σ_j exp(S_ij).
// Forward saves only O and LSE; no Tq×Tk matrix is ever held: keys are visited in
// blocks of Bk columns with a running (max, sum) per query row, and the block scores
// live in a per-thread Bq×Bk scratch tile.
//
// Backward (uses the final LSE of the full key set and Δ_i = Σ_c dO_ic O_ic):
//   P = exp(S − LSE),  dV += Pᵀ dO,  dP = dO Vᵀ,  dS = P∘(dP − Δ),
//   dQ += dS K·scale,  dK += dSᵀ Q·scale.
//
// The kernel works on any (query block, key block) pair with the global positions of
// their tokens, so sequence-parallel strategies call it on shard pairs:
//  * masking is by global position: causal hides key j from query i when pos_k[j] > pos_q[i];
//    document masks and sliding windows arrive as a visible key range per query row,
//    key_lo[i] <= pos_k[j] <= key_hi[i] (parallel/mask.hpp builds them). Because the range
//    is an interval of global positions, a (query block, key block) tile is classified
//    from the block's key range [kmin, kmax] alone: skipped when no row's range meets it,
//    computed without a mask when every row's range covers it, masked per element
//    otherwise;
//  * `accumulate` merges this key block's result into an existing (O, LSE) with the
//    log-sum-exp rule  lse = max(a,b) + log1p(exp(min(a,b) − max(a,b))),
//    O = O_a·exp(a − lse) + O_b·exp(b − lse);
//  * a query row that sees no key gets O = 0, LSE = −inf, and merges as a no-op.
// Grouped-query attention: query head h reads key/value head h / (H / Hkv).
// Attention-probability dropout: P̃_ij = P_ij·keep_ij/(1−p) with keep_ij drawn from the
// counter-based RNG keyed by (seed, step, layer, head, pos_q[i], pos_k[j]), so the
// backward pass regenerates it and sharding never changes it. LSE is pre-dropout.
#pragma once
#include <cstdint>

#include "core/bf16.hpp"
#include "core/rng.hpp"

namespace seqpar {

struct AttnParams {
  // Tensors are (B, T, heads, d) with a token stride and a batch stride in floats, so
  // the kernel can read Q/K/V straight out of a packed (B, T, H + 2·Hkv, d) QKV buffer.
  const float* q = nullptr;  // (B, Tq, H, d)
  const float* k = nullptr;  // (B, Tk, Hkv, d)
  const float* v = nullptr;  // (B, Tk, Hkv, d)
  // Keys and values stored as bf16 (strategies whose K|V blocks travel in bf16, --precision
  // bf16): when set (both, with k and v null) the kernel reads them instead of k, v, with the
  // same strides in elements, widening tile by tile into fp32; all arithmetic stays fp32.
  // The blocked kernels only; the naive references refuse them.
  const bf16* k16 = nullptr;              // (B, Tk, Hkv, d)
  const bf16* v16 = nullptr;              // (B, Tk, Hkv, d)
  float* o = nullptr;                     // (B, Tq, H, d)
  float* lse = nullptr;                   // (B, H, Tq), contiguous
  int64_t q_stride = 0, q_bstride = 0;    // floats between tokens / batch rows of q
  int64_t kv_stride = 0, kv_bstride = 0;  // same for k and v
  int64_t o_stride = 0, o_bstride = 0;    // same for o (and dout, dq in backward)
  const int64_t* q_pos = nullptr;         // (Tq) global positions of the query tokens
  const int64_t* k_pos = nullptr;         // (Tk) global positions of the key tokens
  int B = 0, Tq = 0, Tk = 0, H = 0, Hkv = 0, d = 0;
  bool causal = false;
  // Visible key range of each query row (document masks, sliding windows): key j is
  // visible to query i of batch row b only if
  //   key_lo[b·key_bstride + i] <= k_pos[j] <= key_hi[b·key_bstride + i]
  // (and k_pos[j] <= q_pos[i] when causal). Null: no bound. Set both or neither.
  const int64_t* key_lo = nullptr;  // (B, Tq) with batch stride key_bstride
  const int64_t* key_hi = nullptr;
  int64_t key_bstride = 0;  // entries between batch rows of key_lo / key_hi (>= Tq if B > 1)
  float scale = 0.0f;       // 0: use 1/sqrt(d)
  // Attention-probability dropout (p = 0: off).
  float dropout_p = 0.0f;
  uint64_t seed = 0;
  uint32_t step = 0, layer = 0;
  // Global index of local head 0 (dropout RNG key): a head-sharded strategy (ulysses)
  // that runs heads [h0, h0 + H) of the model on this rank sets head_offset = h0, so
  // the mask does not depend on the head split.
  int head_offset = 0;
  // Per-thread tiles of the blocked kernel (Bq×Bk scores, Bq×d / Bk×d accumulators).
  // Required by attention_forward / attention_backward (not by the naive references):
  // allocate attention_scratch_floats(d, n_threads) floats from the arena (Mem::scratch)
  // and pass the count; the kernel runs on min(num_threads(), what the scratch holds)
  // threads. One scratch must not be used by two concurrent calls.
  float* scratch = nullptr;    // (scratch_floats)
  int64_t scratch_floats = 0;  // floats available at scratch
};

struct AttnBwdParams : AttnParams {
  const float* dout = nullptr;   // (B, Tq, H, d), strides o_stride / o_bstride
  const float* delta = nullptr;  // (B, H, Tq) Δ = rowsum(dO∘O), from attention_delta
  float* dq = nullptr;           // (B, Tq, H, d), strides dq_stride / dq_bstride
  float* dk = nullptr;           // (B, Tk, Hkv, d), strides dkv_stride / dkv_bstride
  float* dv = nullptr;           // (B, Tk, Hkv, d)
  int64_t dq_stride = 0, dq_bstride = 0;
  int64_t dkv_stride = 0, dkv_bstride = 0;
};

// accumulate = false: O, LSE are overwritten with attention of Q over this key set.
// accumulate = true: this key set's result is merged into the existing O, LSE.
void attention_forward(const AttnParams& p, bool accumulate = false);

// Δ (B, H, Tq) = rowsum(dO∘O) per head; uses p.o, p.o_stride/o_bstride for both O and dO.
void attention_delta(float* delta, const float* dout, const AttnParams& p);

// Accumulates (+=) into dq, dk, dv. p.lse must be the LSE over *all* keys of the row.
void attention_backward(const AttnBwdParams& p);

// Reference: materialises S per head in double precision, applies the same dropout mask
// (attention_dropout_factor). For tests only; scratch is not used. The naive backward
// recomputes softmax and Δ itself from q, k, v, dout (it ignores p.lse and p.delta), so
// it is a reference for calls whose key set is the row's full key set.
void attention_forward_naive(const AttnParams& p);
void attention_backward_naive(const AttnBwdParams& p);

// Floats of scratch the blocked kernel needs for n_threads threads (for arena
// accounting); independent of T: the kernel never holds more than one Bq×Bk score tile
// (plus one for dP in backward) per thread. n_threads <= 0 means num_threads().
int64_t attention_scratch_floats(int d, int n_threads);

// Whether query i of batch row b may attend to a key at global position pk under p's
// causal flag and key bounds (the per-element rule; the blocked kernel applies it by tile).
inline bool attention_visible(const AttnParams& p, int b, int i, int64_t pk) {
  if (p.causal && pk > p.q_pos[i]) return false;
  if (!p.key_lo) return true;
  const int64_t o = int64_t{b} * p.key_bstride + i;
  return p.key_lo[o] <= pk && pk <= p.key_hi[o];
}

// Whether any query of p may see a key whose position lies in [kmin, kmax] (a necessary
// condition for a key block to matter: false means the block can be skipped, exactly).
bool attention_any_visible(const AttnParams& p, int64_t kmin, int64_t kmax);

// Attention-probability dropout keep factor for (query head h, global positions): 0 for a
// dropped score, 1/(1−p) for a kept one. u = rng_uniform(seed, step, layer,
// attn_prob_dropout, token = pos_q, feature = pos_k, head = head_offset + h); keep iff
// u >= p. Shared by the blocked kernel, the naive reference and any strategy.
inline float attention_dropout_factor(const AttnParams& p, int h, int64_t pos_q, int64_t pos_k) {
  float u =
      rng_uniform(p.seed, p.step, p.layer, RngSite::attn_prob_dropout, static_cast<uint32_t>(pos_q),
                  static_cast<uint32_t>(pos_k), static_cast<uint32_t>(p.head_offset + h));
  return u >= p.dropout_p ? 1.0f / (1.0f - p.dropout_p) : 0.0f;
}

}  // namespace seqpar
