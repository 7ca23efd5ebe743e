// Fused linear + softmax cross-entropy: see fused_xent.hpp for the math.
//
// Work decomposition: token chunks (outer) × vocabulary chunks (inner). Every tile product
// is one cblas_sgemm with all BLAS threads, called outside any OpenMP region; the row
// passes between the GEMMs are OpenMP loops over the tile's rows. Tiles are large
// (~4 GFLOP at the defaults), so the fork/join per tile is noise, and the result does not
// depend on how rows are split across threads.
//
// Precision matches crossentropy.cpp: fp32 logits and fp32 exp(z − max), the sum of one
// row's exponentials in double. Across vocabulary chunks the running sum stays in double
// (scratch) and is rescaled by exp(m_old − m_new) in double, so the extra rounding against
// the materialised path is the final float of s and exp_simd (≤ 2 ulp, where glibc's
// expf is ≤ 1): the row passes vectorise, ~10× faster than scalar expf, which keeps the
// fused forward at one GEMM plus a pass that is small next to it.
#include "kernels/fused_xent.hpp"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>

#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/fast_exp.hpp"

namespace seqpar {
namespace {

struct Tiles {
  int64_t tc, vc;  // token rows, vocabulary rows per tile
};

Tiles resolve(const XentChunks& c, int64_t N, int64_t Vs, const char* who) {
  SP_CHECK(c.tokens >= 0 && c.vocab >= 0, who, ": chunk sizes must be ≥ 0 (0 = default), got ",
           "tokens=", c.tokens, " vocab=", c.vocab);
  const int64_t tc = std::min(c.tokens > 0 ? c.tokens : kXentDefaultTokens, N);
  const int64_t vc = std::min(c.vocab > 0 ? c.vocab : kXentDefaultVocab, Vs);
  return {tc, vc};
}

void check_common(const char* who, int64_t N, int64_t C, int64_t Vs, int64_t v0) {
  SP_CHECK(N > 0 && C > 0 && Vs > 0, who, ": dims must be positive, got N=", N, " C=", C,
           " Vs=", Vs);
  SP_CHECK(v0 >= 0 && v0 + Vs <= INT32_MAX, who, ": shard [v0, v0 + Vs) = [", v0, ", ", v0 + Vs,
           ") must lie in the int32 token-id range");
  // cblas takes int dimensions and leading dimensions.
  SP_CHECK(N <= INT_MAX && C <= INT_MAX && Vs <= INT_MAX, who,
           ": dims exceed the BLAS int range, got N=", N, " C=", C, " Vs=", Vs);
}

// Layout of the scratch: per-row running sums of the current token chunk (tc doubles),
// running max (tc floats), target logit (tc floats), then the tc×vc logits tile. The
// doubles come first so they are 8-byte aligned whenever scratch is (arena: 64 bytes).
struct Scratch {
  double* s;
  float* m;
  float* zt;
  float* tile;
};
Scratch carve(float* scratch, const Tiles& t) {
  return {reinterpret_cast<double*>(scratch), scratch + 2 * t.tc, scratch + 3 * t.tc,
          scratch + 4 * t.tc};
}

// tile (rows, len) = x[t0 : t0 + rows] (rows, C) · w[j0 : j0 + len]ᵀ, leading dimension len.
void tile_logits(float* tile, const float* x, const float* w, int64_t t0, int64_t rows, int64_t j0,
                 int64_t len, int64_t C) {
  const BlasThreadsFor team(2 * rows * len * C);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
              static_cast<int>(len), static_cast<int>(C), 1.0f, x + t0 * C, static_cast<int>(C),
              w + j0 * C, static_cast<int>(C), 0.0f, tile, static_cast<int>(len));
}

// Running (m, s, zt) of the rows [t0, t0 + rows) over the whole shard, left in sc.
// The per-row work is one max pass and one exp pass over each tile row.
void chunk_stats(const Scratch& sc, const float* x, const float* w, const int32_t* targets,
                 int64_t t0, int64_t rows, int64_t C, int64_t Vs, int64_t v0, const Tiles& t) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int64_t r = 0; r < rows; ++r) sc.s[r] = 0.0, sc.m[r] = kNegInf, sc.zt[r] = 0.0f;
  for (int64_t j0 = 0; j0 < Vs; j0 += t.vc) {
    const int64_t len = std::min(t.vc, Vs - j0);
    tile_logits(sc.tile, x, w, t0, rows, j0, len, C);
#pragma omp parallel for schedule(static) if (rows * len > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const float* z = sc.tile + r * len;
      float mc = kNegInf;
#pragma omp simd reduction(max : mc)
      for (int64_t j = 0; j < len; ++j) mc = mc > z[j] ? mc : z[j];  // (std::max stays scalar)
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < len; ++j) sum += exp_simd(z[j] - mc);
      // Online merge: s = s·e^(m − M) + Σ·e^(mc − M), M = max(m, mc). At the first chunk
      // m = −inf and s = 0, so the old term is 0·0.
      const float mn = std::max(sc.m[r], mc);
      sc.s[r] = sc.s[r] * std::exp(static_cast<double>(sc.m[r]) - mn) +
                sum * std::exp(static_cast<double>(mc) - mn);
      sc.m[r] = mn;
      const int64_t jt = static_cast<int64_t>(targets[t0 + r]) - v0 - j0;
      if (jt >= 0 && jt < len) sc.zt[r] = z[jt];
    }
  }
}

}  // namespace

int64_t fused_xent_scratch_floats(const XentChunks& c, int64_t N, int64_t Vs) {
  SP_CHECK(N > 0 && Vs > 0, "fused_xent_scratch_floats: dims must be positive, got N=", N,
           " Vs=", Vs);
  const Tiles t = resolve(c, N, Vs, "fused_xent_scratch_floats");
  return 4 * t.tc + t.tc * t.vc;
}

void fused_xent_stats(float* m, float* s, float* zt, const float* x, const float* w,
                      const int32_t* targets, int64_t N, int64_t C, int64_t Vs, int64_t v0,
                      const XentChunks& chunks, float* scratch) {
  check_common("fused_xent_stats", N, C, Vs, v0);
  SP_CHECK(m && s && zt && x && w && targets && scratch, "fused_xent_stats: null pointer argument");
  const Tiles t = resolve(chunks, N, Vs, "fused_xent_stats");
  const Scratch sc = carve(scratch, t);
  for (int64_t t0 = 0; t0 < N; t0 += t.tc) {
    const int64_t rows = std::min(t.tc, N - t0);
    chunk_stats(sc, x, w, targets, t0, rows, C, Vs, v0, t);
    for (int64_t r = 0; r < rows; ++r) {
      m[t0 + r] = sc.m[r];
      s[t0 + r] = static_cast<float>(sc.s[r]);
      zt[t0 + r] = sc.zt[r];
    }
  }
}

void fused_xent_forward(float* losses, float* lse, const float* x, const float* w,
                        const int32_t* targets, int64_t N, int64_t C, int64_t V,
                        const XentChunks& chunks, float* scratch) {
  check_common("fused_xent_forward", N, C, V, 0);
  SP_CHECK(losses && lse && x && w && targets && scratch,
           "fused_xent_forward: null pointer argument");
  for (int64_t i = 0; i < N; ++i) {
    SP_CHECK(targets[i] < V, "fused_xent_forward: target at index ", i, " is ", targets[i],
             ", expected in [0, ", V, ") or negative (ignored)");
  }
  const Tiles t = resolve(chunks, N, V, "fused_xent_forward");
  const Scratch sc = carve(scratch, t);
  for (int64_t t0 = 0; t0 < N; t0 += t.tc) {
    const int64_t rows = std::min(t.tc, N - t0);
    chunk_stats(sc, x, w, targets, t0, rows, C, V, 0, t);
    for (int64_t r = 0; r < rows; ++r) {
      // As crossentropy.cpp: lse = float(m + log s) in double, loss = lse − z_target in float.
      const float l = static_cast<float>(static_cast<double>(sc.m[r]) + std::log(sc.s[r]));
      lse[t0 + r] = l;
      losses[t0 + r] = targets[t0 + r] < 0 ? 0.0f : l - sc.zt[r];
    }
  }
}

void fused_xent_backward(float* dx, float* dw, const float* x, const float* w,
                         const int32_t* targets, const float* lse, const float* dlosses, int64_t N,
                         int64_t C, int64_t Vs, int64_t v0, const XentChunks& chunks,
                         float* scratch) {
  check_common("fused_xent_backward", N, C, Vs, v0);
  SP_CHECK(x && w && targets && lse && dlosses && scratch,
           "fused_xent_backward: null x/w/targets/lse/dlosses/scratch");
  if (!dx && !dw) return;
  const Tiles t = resolve(chunks, N, Vs, "fused_xent_backward");
  float* tile = carve(scratch, t).tile;
  for (int64_t t0 = 0; t0 < N; t0 += t.tc) {
    const int64_t rows = std::min(t.tc, N - t0);
    bool any = false;
    for (int64_t r = 0; r < rows && !any; ++r)
      any = targets[t0 + r] >= 0 && dlosses[t0 + r] != 0.0f;
    if (!any) continue;  // every row of the chunk has zero gradient
    for (int64_t j0 = 0; j0 < Vs; j0 += t.vc) {
      const int64_t len = std::min(t.vc, Vs - j0);
      tile_logits(tile, x, w, t0, rows, j0, len, C);
      // z → dlogits in place. The float operations of crossentropy_backward on a zeroed
      // dlogits, so the two paths agree to the rounding of the logits GEMM and of exp.
#pragma omp parallel for schedule(static) if (rows * len > 32768)
      for (int64_t r = 0; r < rows; ++r) {
        float* dz = tile + r * len;
        const int32_t tgt = targets[t0 + r];
        const float dl = tgt < 0 ? 0.0f : dlosses[t0 + r];
        if (dl == 0.0f) {
          std::fill(dz, dz + len, 0.0f);  // lse of an ignored row is never read
          continue;
        }
        const float l = lse[t0 + r];
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) dz[j] = exp_simd(dz[j] - l) * dl;
        const int64_t jt = static_cast<int64_t>(tgt) - v0 - j0;
        if (jt >= 0 && jt < len) dz[jt] -= dl;
      }
      const BlasThreadsFor team(2 * rows * len * C);
      if (dx) {  // dx[t0 : t0 + rows] (rows, C) += dlogits (rows, len) · w[j0 : j0 + len] (len, C)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                    static_cast<int>(C), static_cast<int>(len), 1.0f, tile, static_cast<int>(len),
                    w + j0 * C, static_cast<int>(C), 1.0f, dx + t0 * C, static_cast<int>(C));
      }
      if (dw) {  // dw[j0 : j0 + len] (len, C) += dlogitsᵀ (len, rows) · x[t0 : t0 + rows]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(len),
                    static_cast<int>(C), static_cast<int>(rows), 1.0f, tile, static_cast<int>(len),
                    x + t0 * C, static_cast<int>(C), 1.0f, dw + j0 * C, static_cast<int>(C));
      }
    }
  }
}

}  // namespace seqpar
