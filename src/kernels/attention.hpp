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

namespace seqpar {

struct AttnParams {
  // Tensors are (B, T, heads, d) with a token stride and a batch stride in floats, so
  // the kernel can read Q/K/V straight out of a packed (B, T, H + 2·Hkv, d) QKV buffer.
  const float* q = nullptr;  // (B, Tq, H, d)
  const float* k = nullptr;  // (B, Tk, Hkv, d)
  const float* v = nullptr;  // (B, Tk, Hkv, d)
  float* o = nullptr;        // (B, Tq, H, d)
  float* lse = nullptr;      // (B, H, Tq), contiguous
  int64_t q_stride = 0, q_bstride = 0;    // floats between tokens / batch rows of q
  int64_t kv_stride = 0, kv_bstride = 0;  // same for k and v
  int64_t o_stride = 0, o_bstride = 0;    // same for o (and dout, dq in backward)
  const int64_t* q_pos = nullptr;  // (Tq) global positions of the query tokens
  const int64_t* k_pos = nullptr;  // (Tk) global positions of the key tokens
  int B = 0, Tq = 0, Tk = 0, H = 0, Hkv = 0, d = 0;
  bool causal = false;
  float scale = 0.0f;  // 0: use 1/sqrt(d)
  // Attention-probability dropout (p = 0: off).
  float dropout_p = 0.0f;
  uint64_t seed = 0;
  uint32_t step = 0, layer = 0;
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

// Reference: materialises S per head in double precision. For tests only.
void attention_forward_naive(const AttnParams& p);
void attention_backward_naive(const AttnBwdParams& p);

// Bytes of per-thread scratch the blocked kernel uses (for arena accounting).
int64_t attention_scratch_floats(int d, int n_threads);

}  // namespace seqpar
