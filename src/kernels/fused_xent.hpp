// Fused linear + softmax cross-entropy that never materialises the (N, V) logits.
//
// Logits z = x·wᵀ for a vocabulary shard w (Vs, C) holding global token ids [v0, v0 + Vs)
// (the whole vocabulary when not vocabulary-parallel: v0 = 0, Vs = V). For row i with
// target t_i:
//   lse_i = m_i + log Σ_j exp(z_ij − m_i),  m_i = max_j z_ij,   loss_i = lse_i − z_i,t_i
//   dlogits_ij = (exp(z_ij − lse_i) − [j == t_i])·dloss_i
//   dx += dlogits·w,  dw += dlogitsᵀ·x
// Work is done in tiles of `tokens` rows × `vocab` vocabulary rows: one sgemm puts a tile's
// logits in `scratch`, a row pass folds them into the running (max, Σexp) per row
// (online softmax, merged across tiles and across shards by the same rule
// s = s_a·exp(m_a − m) + s_b·exp(m_b − m), m = max(m_a, m_b)). The backward recomputes
// each tile's logits (one sgemm), turns them into dlogits in place and runs the two
// gradient sgemms on the tile. Cost: forward one N×C×V GEMM + one exp pass; backward
// three GEMMs + one exp pass; memory: the scratch instead of 2·N·V floats.
//
// Rows with targets[i] < 0 are ignored: loss 0 and no gradient. They still get m and s
// (they are rows of the tile GEMM anyway, so skipping them would save nothing), hence a
// finite lse, and zt = 0.
#pragma once
#include <cstdint>

namespace seqpar {

// Tile sizes; 0 picks the default, 1024 tokens × 4096 vocabulary rows (16 MiB of scratch),
// clamped to N and Vs. `bench_loss --sweep` (N = 4096, C = 512, V = 32000, 2 cores,
// AVX-512) found forward+backward time flat within ±5% from 256×1024 to 4096×8192 tiles, so
// the default sits mid-grid: each tile GEMM is ~4 GFLOP, enough to amortise BLAS packing
// and thread start on more cores, and the scratch is 125× smaller than logits + dlogits
// at N = 8192.
struct XentChunks {
  int64_t tokens = 0, vocab = 0;
};
constexpr int64_t kXentDefaultTokens = 1024;
constexpr int64_t kXentDefaultVocab = 4096;

// Floats `scratch` must hold for these chunks, N rows and a shard of Vs vocabulary rows
// (default chunks resolved): the tile plus per-row running statistics of one token chunk.
// The same count serves stats, forward and backward called with the same chunks, N, Vs.
int64_t fused_xent_scratch_floats(const XentChunks& c, int64_t N, int64_t Vs);

// Per row i, over this shard only: m[i] = max_j z_ij, s[i] = Σ_j exp(z_ij − m[i]) (online
// over the vocabulary chunks, in double, stored as float), zt[i] = z_i,targets[i] if
// targets[i] ∈ [v0, v0 + Vs) else 0. m, s, zt (N); x (N, C); w (Vs, C); targets (N) global
// ids, negative = ignored (m and s still computed, zt = 0).
void fused_xent_stats(float* m, float* s, float* zt, const float* x, const float* w,
                      const int32_t* targets, int64_t N, int64_t C, int64_t Vs, int64_t v0,
                      const XentChunks& chunks, float* scratch);

// The caller combines shards (vocabulary parallel: all-reduce max of m, rescale s by
// exp(m_shard − m), all-reduce sum of s and zt), then lse = m + log(s), loss_i = lse_i − zt_i.
// The single-shard case (v0 = 0, Vs = V) in one call: losses (N) = lse − zt (0 for ignored
// rows), lse (N) = m + log(s) for every row. targets must be < V.
void fused_xent_forward(float* losses, float* lse, const float* x, const float* w,
                        const int32_t* targets, int64_t N, int64_t C, int64_t V,
                        const XentChunks& chunks, float* scratch);

// Backward, recomputing each tile's logits:
//   dlogits_ij = (exp(z_ij − lse_i) − [j == targets_i − v0])·dlosses_i,
// 0 for rows with dlosses 0 or targets < 0 (their lse is not read, so it may be anything);
// dx (N, C) += dlogits·w;  dw (Vs, C) += dlogitsᵀ·x. Both ACCUMULATE; either may be null
// (not needed). lse (N) is the combined (all-shard) log-sum-exp; dlosses (N).
// A token chunk whose rows all have zero weight is skipped (no GEMM).
void fused_xent_backward(float* dx, float* dw, const float* x, const float* w,
                         const int32_t* targets, const float* lse, const float* dlosses, int64_t N,
                         int64_t C, int64_t Vs, int64_t v0, const XentChunks& chunks,
                         float* scratch);

}  // namespace seqpar
