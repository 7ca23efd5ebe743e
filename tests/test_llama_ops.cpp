// Tests of the LLaMA-class kernels: RMSNorm and SwiGLU against the double references in
// naive_ops.hpp and central finite differences (as tests/test_ops.cpp does), and the fused
// linear cross-entropy (kernels/fused_xent.hpp) against the materialised path it replaces
// (linear_forward to full logits + crossentropy_forward/backward + linear_backward), on
// awkward shapes, ignored rows, vocabulary shards combined by hand, and finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "kernels/fast_exp.hpp"
#include "kernels/fused_xent.hpp"
#include "kernels/ops.hpp"
#include "naive_ops.hpp"
#include "test_util.hpp"

namespace seqpar {
namespace {

using VecF = std::vector<float>;
using VecD = std::vector<double>;

using naive::randn;
using naive::to_d;

using naive::fd_grad;
using naive::plus;
using test::rel_err;  // max|a − b| / max|b|: error relative to the scale of the reference

bool all_finite(const VecF& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

// ================================ RMSNorm ==========================================
TEST(RmsNorm, ForwardMatchesNaive) {
  const int64_t N = 71, C = 229;
  const float eps = 1e-5f;
  VecF x = randn(N * C, 1, 2.0f, 0.5f), w = randn(C, 2);
  // Every 7th row has mean(x²) ~ 1e-5, comparable to eps, so a wrong or missing eps shows.
  for (int64_t r = 0; r < N; r += 7)
    for (int64_t c = 0; c < C; ++c) x[r * C + c] *= 1.5e-3f;
  VecF out(N * C, 123.0f), rstd(N, 123.0f);  // garbage: forward must overwrite
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  VecD xd = to_d(x), wd = to_d(w), ref(N * C), rr(N);
  for (int64_t r = 0; r < N; ++r)
    naive::rmsnorm_row(&ref[r * C], &rr[r], &xd[r * C], wd.data(), C, eps);
  // Σx² in double, rounded once: rstd to ~1 ulp. out is two fp32 products: a few ulp of
  // max|out|. Subtracting the mean (layernorm) or dropping eps errs by ≥ 1e-2 here.
  EXPECT_LT(rel_err(rstd, rr), 1e-6);
  EXPECT_LT(rel_err(out, ref), 1e-6);
}

TEST(RmsNorm, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t N = 71, C = 229;
  const float eps = 1e-6f;
  VecF x = randn(N * C, 3, 1.0f, 0.3f), w = randn(C, 4), R = randn(N * C, 5);
  VecF out(N * C), rstd(N);
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  VecD xd = to_d(x), wd = to_d(w), Rd = to_d(R), y(C);
  // L = Σ R∘out; row r of out depends on x row r and all of w.
  auto loss_row = [&](int64_t r) {
    naive::rmsnorm_row(y.data(), nullptr, &xd[r * C], wd.data(), C, eps);
    double l = 0.0;
    for (int64_t c = 0; c < C; ++c) l += Rd[r * C + c] * y[c];
    return l;
  };
  auto loss_all = [&](size_t) {
    double l = 0.0;
    for (int64_t r = 0; r < N; ++r) l += loss_row(r);
    return l;
  };
  // h = 1e-4 on O(1) inputs: truncation h²·L'''/6 ~ 1e-9, rounding 1e-16·|L|/h ~ 1e-10.
  const double h = 1e-4;
  VecD g_x = fd_grad(
      xd, [&](size_t i) { return loss_row(i / C); }, h);
  VecD g_w = fd_grad(wd, loss_all, h);

  VecF dx = randn(N * C, 6), dw = randn(C, 7);  // pre-filled: the kernel must add
  const VecF dx0 = dx, dw0 = dw;
  rmsnorm_backward(dx.data(), dw.data(), R.data(), x.data(), w.data(), rstd.data(), N, C);
  // fp32 elementwise terms with double row sums; g − x̂·mean(g∘x̂) cancels a few ulp of |g|
  // (observed ≤ 2e-7), tolerance 2e-6. Dropping the mean(g∘x̂) term or the rstd factor is O(1).
  EXPECT_LT(rel_err(dx, plus(dx0, g_x)), 2e-6);
  EXPECT_LT(rel_err(dw, plus(dw0, g_w)), 2e-6);
}

// ================================ SwiGLU ===========================================
TEST(SwiGlu, ForwardMatchesNaiveAndSaturates) {
  const int64_t N = 71, F = 229;
  VecF gu = randn(N * 2 * F, 10, 3.0f);
  gu[0] = 0.0f, gu[1] = 100.0f, gu[2] = -100.0f, gu[3] = -1000.0f, gu[4] = 88.0f, gu[5] = -89.0f;
  VecF out(N * F, 123.0f);
  swiglu_forward(out.data(), gu.data(), N, F);
  VecD ref(N * F);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < F; ++c)
      ref[r * F + c] = naive::swiglu(gu[r * 2 * F + c], gu[r * 2 * F + F + c]);
  // Three fp32 ops around one expf (≤ 1 ulp): a few ulp of max|out|. Swapping gate and up,
  // or σ for silu, is O(1). Saturated gates give exactly 0 or g·u, never NaN.
  EXPECT_LT(rel_err(out, ref), 1e-6);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(out[3], 0.0f);
  EXPECT_TRUE(all_finite(out));
}

TEST(SwiGlu, BackwardMatchesFiniteDifferencesAndOverwrites) {
  const int64_t N = 71, F = 229;
  VecF gu = randn(N * 2 * F, 11, 2.0f), dout = randn(N * F, 12);
  gu[0] = 100.0f, gu[1] = -100.0f, gu[2] = -1000.0f;  // saturated gates: gradient finite
  VecD gd = to_d(gu), Rd = to_d(dout);
  // L = Σ dout∘out; gate c and up c of a row only enter out c of that row.
  auto loss_at = [&](size_t i) {
    const int64_t r = i / (2 * F), c = (i % (2 * F)) % F;
    return Rd[r * F + c] * naive::swiglu(gd[r * 2 * F + c], gd[r * 2 * F + F + c]);
  };
  // h = 1e-4 on |g| ≲ 8: truncation h²·|silu'''|/6 ~ 1e-9 (relative to the O(1) gradients).
  VecD g = fd_grad(gd, loss_at, 1e-4);
  VecF dgu(N * 2 * F, 123.0f);  // garbage: the kernel must overwrite
  swiglu_backward(dgu.data(), dout.data(), gu.data(), N, F);
  // A few fp32 ops per element: observed ≤ 3e-7 of max|dgu|; tolerance 2e-6. Missing the
  // g·(1 − σ) term of silu' is O(1); accumulating onto the 123s is O(100).
  EXPECT_LT(rel_err(dgu, g), 2e-6);
  EXPECT_TRUE(all_finite(dgu));
}

// ================================ exp_simd ==========================================
TEST(ExpSimd, WithinTwoUlpOfExactAndClean) {
  // Every 2⁻¹⁰ step over the normal range (≈ 180k points, both ends included), against
  // e^x in double rounded to float: the polynomial is ~1 ulp, the 2^n scaling exact.
  // Any wrong polynomial coefficient or ln2 split shows as ≫ 2 ulp somewhere. Observed 0.98.
  double worst = 0.0;
  for (double xd = -87.33; xd <= 88.0; xd += 1.0 / 1024) {
    const float x = static_cast<float>(xd);
    const float ref = static_cast<float>(std::exp(static_cast<double>(x)));
    const double ulp = std::nextafter(ref, INFINITY) - ref;
    worst =
        std::max(worst, std::fabs(static_cast<double>(exp_simd(x)) - std::exp(double(x))) / ulp);
  }
  EXPECT_LE(worst, 2.0);
  EXPECT_EQ(exp_simd(0.0f), 1.0f);
  EXPECT_EQ(exp_simd(-88.0f), 0.0f);  // below ~2⁻¹²⁶: 0, where expf gives a subnormal
  EXPECT_EQ(exp_simd(-1e30f), 0.0f);
  EXPECT_EQ(exp_simd(-INFINITY), 0.0f);
  EXPECT_TRUE(std::isnan(exp_simd(NAN)));
}

// ================================ fused linear cross-entropy ========================
// The materialised path the fused kernel replaces: logits = x·wᵀ, crossentropy on them,
// dlogits back through the linear. Also the double lse of the float logits.
struct Materialised {
  VecF losses, dx, dw;
  VecD lse;
};
Materialised materialise(const VecF& x, const VecF& w, const std::vector<int32_t>& tgt,
                         const VecF& dl, int64_t N, int64_t C, int64_t V) {
  VecF logits(N * V), dlogits(N * V, 0.0f);
  Materialised m{VecF(N), VecF(N * C, 0.0f), VecF(V * C, 0.0f), VecD(N)};
  linear_forward(logits.data(), x.data(), w.data(), nullptr, N, C, V);
  crossentropy_forward(m.losses.data(), logits.data(), tgt.data(), N, V);
  crossentropy_backward(dlogits.data(), logits.data(), tgt.data(), dl.data(), N, V);
  linear_backward(m.dx.data(), m.dw.data(), nullptr, dlogits.data(), x.data(), w.data(), N, C, V);
  for (int64_t i = 0; i < N; ++i) {
    const float* z = &logits[i * V];
    const double mx = *std::max_element(z, z + V);
    double s = 0.0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(z[j] - mx);
    m.lse[i] = mx + std::log(s);
  }
  return m;
}

// Scratch with a guard band of NaNs after it: the kernel must not write past
// fused_xent_scratch_floats (checked) nor read the band into a result (NaN would show).
struct GuardedScratch {
  static constexpr int64_t kGuard = 1024;
  int64_t n;
  VecF buf;
  GuardedScratch(const XentChunks& ch, int64_t N, int64_t Vs)
      : n(fused_xent_scratch_floats(ch, N, Vs)),
        buf(n + kGuard, std::numeric_limits<float>::quiet_NaN()) {}
  float* data() { return buf.data(); }
  bool guard_intact() const {
    for (int64_t i = n; i < n + kGuard; ++i)
      if (!std::isnan(buf[i])) return false;
    return true;
  }
};

struct XentShape {
  int64_t N, C, V;
  XentChunks chunks;
  float scale;  // of x: logits ~ N(0, scale²·C·0.3²)
  const char* name;
};

void PrintTo(const XentShape& s, std::ostream* os) {
  *os << s.name << " N=" << s.N << " C=" << s.C << " V=" << s.V << " chunks=" << s.chunks.tokens
      << "x" << s.chunks.vocab;
}

class FusedXent : public ::testing::TestWithParam<XentShape> {};

TEST_P(FusedXent, MatchesMaterialisedPath) {
  const auto& p = GetParam();
  const int64_t N = p.N, C = p.C, V = p.V;
  VecF x = randn(N * C, 20, p.scale), w = randn(V * C, 21, 0.3f), dl = randn(N, 22);
  std::vector<int32_t> tgt(N);
  for (int64_t i = 0; i < N; ++i) tgt[i] = static_cast<int32_t>((i * 7919 + 3) % V);
  for (int64_t i = 5; i < N; i += 7) tgt[i] = -1;  // some ignored rows
  if (N > 3) tgt[3] = -100, dl[2] = 0.0f;          // and one with zero weight
  tgt[N - 1] = static_cast<int32_t>(V - 1);        // the last vocabulary row, last chunk
  const Materialised ref = materialise(x, w, tgt, dl, N, C, V);

  GuardedScratch scratch(p.chunks, N, V);
  VecF losses(N, 123.0f), lse(N, 123.0f);
  fused_xent_forward(losses.data(), lse.data(), x.data(), w.data(), tgt.data(), N, C, V, p.chunks,
                     scratch.data());
  VecF dx = randn(N * C, 23), dw = randn(V * C, 24);  // pre-filled: the kernel must add
  const VecF dx0 = dx, dw0 = dw;
  fused_xent_backward(dx.data(), dw.data(), x.data(), w.data(), tgt.data(), lse.data(), dl.data(),
                      N, C, V, 0, p.chunks, scratch.data());
  EXPECT_TRUE(scratch.guard_intact());

  // The two paths differ only in the rounding of the logits GEMM (different blocking) and
  // in the online merge of per-chunk sums (double, one extra float rounding of s). Losses of
  // size log V ≈ 5–9 differ by a few ulp: observed ≤ 3e-7 normalised; tolerance 2e-6.
  // A missing rescale in the online merge, or a target picked from the wrong chunk, is O(1).
  EXPECT_LT(rel_err(losses, ref.losses), 2e-6);
  EXPECT_LT(rel_err(lse, ref.lse), 2e-6);
  for (int64_t i = 0; i < N; ++i)
    if (tgt[i] < 0) {
      ASSERT_EQ(losses[i], 0.0f) << "ignored row " << i;
    }
  // Gradients are sums of ≤ max(V, N) products of probabilities with w or x: the ulp-level
  // differences in exp(z − lse) add up to ~√V ulp. Observed ≤ 1e-6; tolerance 1e-5. An
  // unscaled (dlosses) or non-onehot-corrected dlogits is O(1).
  EXPECT_LT(rel_err(dx, plus(dx0, to_d(ref.dx))), 1e-5);
  EXPECT_LT(rel_err(dw, plus(dw0, to_d(ref.dw))), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, FusedXent,
    ::testing::Values(
        // V = 229 not divisible by 50, N = 71 not divisible by 16.
        XentShape{71, 37, 229, {16, 50}, 1.0f, "ragged_chunks"},
        // One token (T = 1), default chunks clamped to N and V.
        XentShape{1, 64, 1000, {}, 1.0f, "one_token"},
        // Default chunks covering everything in one tile.
        XentShape{300, 64, 5000, {}, 1.0f, "defaults"},
        // Chunks of one token and one vocabulary row: the online merge at every step.
        XentShape{9, 16, 31, {1, 1}, 1.0f, "unit_chunks"},
        // Large logits (|z| up to ~100): the max subtraction and its rescaling across
        // chunks must not overflow; chunk maxima differ by tens.
        XentShape{67, 40, 517, {32, 100}, 6.0f, "large_logits"}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(FusedXentEdge, AllTargetsIgnoredGiveZerosAndNoNaN) {
  const int64_t N = 37, C = 24, V = 101;
  const XentChunks ch{8, 30};
  VecF x = randn(N * C, 30), w = randn(V * C, 31, 0.3f), dl = randn(N, 32);
  std::vector<int32_t> tgt(N, -1);
  tgt[0] = -100;
  GuardedScratch scratch(ch, N, V);
  VecF losses(N, 123.0f), lse(N, 123.0f);
  fused_xent_forward(losses.data(), lse.data(), x.data(), w.data(), tgt.data(), N, C, V, ch,
                     scratch.data());
  for (int64_t i = 0; i < N; ++i) ASSERT_EQ(losses[i], 0.0f) << i;
  EXPECT_TRUE(all_finite(lse));  // ignored rows still get m and s
  VecF dx = randn(N * C, 33), dw = randn(V * C, 34);
  const VecF dx0 = dx, dw0 = dw;
  // lse of ignored rows is never read: poison it.
  VecF bad_lse(N, std::numeric_limits<float>::quiet_NaN());
  fused_xent_backward(dx.data(), dw.data(), x.data(), w.data(), tgt.data(), bad_lse.data(),
                      dl.data(), N, C, V, 0, ch, scratch.data());
  EXPECT_EQ(dx, dx0);  // exactly untouched, no NaN
  EXPECT_EQ(dw, dw0);
  // Valid targets with zero dlosses: the same.
  std::vector<int32_t> valid(N, 7);
  const VecF zero(N, 0.0f);
  fused_xent_backward(dx.data(), dw.data(), x.data(), w.data(), valid.data(), bad_lse.data(),
                      zero.data(), N, C, V, 0, ch, scratch.data());
  EXPECT_EQ(dx, dx0);
  EXPECT_EQ(dw, dw0);
  EXPECT_TRUE(scratch.guard_intact());
}

// Shards [v0, v0 + Vs) of the vocabulary, each with its own stats; combined by hand as a
// vocabulary-parallel caller would (all-reduce max, rescale, all-reduce sum), they must
// equal the single-shard result; the shard backwards (with the combined lse) concatenate to
// the single-shard dw and sum to its dx.
class FusedXentShards : public ::testing::TestWithParam<std::vector<int64_t>> {};

TEST_P(FusedXentShards, CombinedShardsEqualSingleShard) {
  const std::vector<int64_t>& bounds = GetParam();  // 0 = b0 < b1 < … < bk = V
  const int64_t N = 53, C = 29, V = bounds.back();
  const XentChunks ch{16, 24};
  VecF x = randn(N * C, 40), w = randn(V * C, 41, 0.3f), dl = randn(N, 42);
  std::vector<int32_t> tgt(N);
  for (int64_t i = 0; i < N; ++i) tgt[i] = static_cast<int32_t>((i * 37 + 11) % V);
  tgt[4] = -1, tgt[17] = -1;

  GuardedScratch full(ch, N, V);
  VecF loss1(N), lse1(N), dx1(N * C, 0.0f), dw1(V * C, 0.0f);
  fused_xent_forward(loss1.data(), lse1.data(), x.data(), w.data(), tgt.data(), N, C, V, ch,
                     full.data());
  fused_xent_backward(dx1.data(), dw1.data(), x.data(), w.data(), tgt.data(), lse1.data(),
                      dl.data(), N, C, V, 0, ch, full.data());

  const size_t k = bounds.size() - 1;
  std::vector<VecF> m(k, VecF(N)), s(k, VecF(N)), zt(k, VecF(N));
  for (size_t r = 0; r < k; ++r) {
    const int64_t v0 = bounds[r], Vs = bounds[r + 1] - v0;
    GuardedScratch sc(ch, N, Vs);
    fused_xent_stats(m[r].data(), s[r].data(), zt[r].data(), x.data(), w.data() + v0 * C,
                     tgt.data(), N, C, Vs, v0, ch, sc.data());
    EXPECT_TRUE(sc.guard_intact());
  }
  VecF lse(N), loss(N);
  for (int64_t i = 0; i < N; ++i) {
    float mx = m[0][i];
    for (size_t r = 1; r < k; ++r) mx = std::max(mx, m[r][i]);
    float sum = 0.0f, z = 0.0f;
    for (size_t r = 0; r < k; ++r) sum += s[r][i] * std::exp(m[r][i] - mx), z += zt[r][i];
    lse[i] = mx + std::log(sum);
    loss[i] = tgt[i] < 0 ? 0.0f : lse[i] - z;
  }
  // The hand combination merges in float (the single shard in double): a few ulp of lse ≈ 5.
  // Observed ≤ 2e-7; tolerance 2e-6. A shard whose target logit is missed (or counted twice)
  // is off by |z| ~ 1.
  EXPECT_LT(rel_err(lse, to_d(lse1)), 2e-6);
  EXPECT_LT(rel_err(loss, to_d(loss1)), 2e-6);

  VecF dx(N * C, 0.0f), dw(V * C, 0.0f);
  for (size_t r = 0; r < k; ++r) {
    const int64_t v0 = bounds[r], Vs = bounds[r + 1] - v0;
    GuardedScratch sc(ch, N, Vs);
    fused_xent_backward(dx.data(), dw.data() + v0 * C, x.data(), w.data() + v0 * C, tgt.data(),
                        lse.data(), dl.data(), N, C, Vs, v0, ch, sc.data());
  }
  // dw rows are computed alike (same chunks inside the shard differ only in tiling, lse to a
  // few ulp); dx sums k partial products instead of one: observed ≤ 5e-7; tolerance 5e-6.
  EXPECT_LT(rel_err(dx, to_d(dx1)), 5e-6);
  EXPECT_LT(rel_err(dw, to_d(dw1)), 5e-6);
}

INSTANTIATE_TEST_SUITE_P(Splits, FusedXentShards,
                         ::testing::Values(std::vector<int64_t>{0, 100, 229},
                                           std::vector<int64_t>{0, 50, 170, 229},
                                           std::vector<int64_t>{0, 3, 226, 229}),
                         [](const auto& info) {
                           std::string name = "at";
                           for (size_t i = 1; i + 1 < info.param.size(); ++i) {
                             name += "_";
                             name += std::to_string(info.param[i]);
                           }
                           return name;
                         });

TEST(FusedXentEdge, BackwardMatchesFiniteDifferences) {
  // L = Σ_i dl_i·loss_i in double from double logits; derivatives w.r.t. x and w.
  const int64_t N = 5, C = 6, V = 11;
  const XentChunks ch{2, 4};
  VecF x = randn(N * C, 50), w = randn(V * C, 51, 0.5f), dl = randn(N, 52);
  std::vector<int32_t> tgt{3, -1, 10, 0, 7};
  VecD xd = to_d(x), wd = to_d(w);
  auto loss = [&](size_t) {
    VecD z(V);
    double l = 0.0;
    for (int64_t i = 0; i < N; ++i) {
      naive::linear_forward(z.data(), &xd[i * C], wd.data(), nullptr, 1, C, V);
      l += dl[i] * naive::crossentropy_row(z.data(), tgt[i], V);
    }
    return l;
  };
  const double h = 1e-4;  // truncation ~h² ≈ 1e-8 of O(1) curvature
  VecD g_x = fd_grad(xd, loss, h), g_w = fd_grad(wd, loss, h);
  GuardedScratch scratch(ch, N, V);
  VecF losses(N), lse(N), dx(N * C, 0.0f), dw(V * C, 0.0f);
  fused_xent_forward(losses.data(), lse.data(), x.data(), w.data(), tgt.data(), N, C, V, ch,
                     scratch.data());
  fused_xent_backward(dx.data(), dw.data(), x.data(), w.data(), tgt.data(), lse.data(), dl.data(),
                      N, C, V, 0, ch, scratch.data());
  // fp32 logits and softmax against the double loss: a few ulp of the gradient scale
  // (observed ≤ 2e-7); tolerance 3e-6. Row 1 (ignored) must contribute nothing to dx.
  EXPECT_LT(rel_err(dx, g_x), 3e-6);
  EXPECT_LT(rel_err(dw, g_w), 3e-6);
  for (int64_t c = 0; c < C; ++c) EXPECT_EQ(dx[1 * C + c], 0.0f);
}

TEST(FusedXentEdge, ScratchSizeAndChecks) {
  // Defaults resolve to 1024 tokens × 4096 vocabulary rows, clamped to N and Vs; the
  // scratch is the tile plus 4 floats per token row (double sum, max, target logit).
  EXPECT_EQ(fused_xent_scratch_floats({}, 8192, 32000), 4 * 1024 + 1024 * 4096);
  EXPECT_EQ(fused_xent_scratch_floats({}, 10, 100), 4 * 10 + 10 * 100);
  EXPECT_EQ(fused_xent_scratch_floats({3, 7}, 10, 100), 4 * 3 + 3 * 7);
  EXPECT_THROW(fused_xent_scratch_floats({-1, 0}, 10, 100), Error);
  EXPECT_THROW(fused_xent_scratch_floats({}, 0, 100), Error);

  const int64_t N = 4, C = 3, V = 5;
  VecF x(N * C, 0.1f), w(V * C, 0.2f), dl(N, 1.0f), a(N), b(N), c(N), sc(1000), g(V * C);
  std::vector<int32_t> tgt{0, 1, 5, 2};  // 5 is out of range for V = 5
  EXPECT_THROW(fused_xent_forward(a.data(), b.data(), x.data(), w.data(), tgt.data(), N, C, V, {},
                                  sc.data()),
               Error);
  tgt[2] = 4;
  EXPECT_THROW(
      fused_xent_forward(a.data(), nullptr, x.data(), w.data(), tgt.data(), N, C, V, {}, sc.data()),
      Error);
  EXPECT_THROW(fused_xent_stats(a.data(), b.data(), c.data(), x.data(), w.data(), tgt.data(), N, C,
                                V, -1, {}, sc.data()),
               Error);
  EXPECT_THROW(fused_xent_backward(nullptr, g.data(), x.data(), w.data(), tgt.data(), b.data(),
                                   dl.data(), N, 0, V, 0, {}, sc.data()),
               Error);
  EXPECT_THROW(fused_xent_backward(nullptr, g.data(), x.data(), w.data(), tgt.data(), nullptr,
                                   dl.data(), N, C, V, 0, {}, sc.data()),
               Error);
  EXPECT_THROW(rmsnorm_forward(a.data(), b.data(), x.data(), nullptr, N, C, 1e-5f), Error);
  EXPECT_THROW(rmsnorm_backward(a.data(), b.data(), x.data(), x.data(), w.data(), b.data(), 0, C),
               Error);
  EXPECT_THROW(swiglu_forward(a.data(), x.data(), N, 0), Error);
  EXPECT_THROW(swiglu_backward(x.data(), a.data(), x.data(), 2, 3), Error);  // dgu aliases gu
}

}  // namespace
}  // namespace seqpar
