// bf16 storage (core/bf16.hpp): the rounding rule on hand-picked values, the build's bulk
// conversion path against the scalar reference, and every kernel that reads or writes a
// storage type S run with S = bf16 against the double references of naive_ops.hpp.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "bf16_convert_check.hpp"
#include "core/bf16.hpp"
#include "kernels/ops.hpp"
#include "naive_ops.hpp"

namespace seqpar {
namespace {

uint16_t bits(float f) { return to_bf16(f).bits; }
float f32(uint32_t u) { return std::bit_cast<float>(u); }

TEST(Bf16, RoundsToNearestTiesToEven) {
  EXPECT_EQ(bits(1.0f), 0x3F80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(bits(f32(0x3F808000)), 0x3F80);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
  EXPECT_EQ(bits(f32(0x3F818000)), 0x3F82);
  EXPECT_EQ(bits(f32(0x3F808001)), 0x3F81);  // just above the tie: up
  EXPECT_EQ(bits(f32(0x3F807FFF)), 0x3F80);  // just below: down
  EXPECT_EQ(bits(-1.0f), 0xBF80);
  EXPECT_EQ(bits(f32(0xBF818000)), 0xBF82);  // sign-magnitude: the same on negatives
  // The carry of a mantissa of ones runs into the exponent: 2 − 2^-9·… rounds to 2.
  EXPECT_EQ(bits(f32(0x3FFFFFFF)), 0x4000);
}

TEST(Bf16, InfNanOverflowAndSubnormals) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bits(inf), 0x7F80);
  EXPECT_EQ(bits(-inf), 0xFF80);
  EXPECT_EQ(bits(std::numeric_limits<float>::max()), 0x7F80);  // rounds past bf16's max: inf
  EXPECT_EQ(bits(f32(0x7F7F7FFF)), 0x7F7F);                    // bf16's max stays finite
  // NaN stays NaN (quiet, sign kept), including payloads whose rounding would carry into inf
  // or into the sign.
  for (uint32_t u : {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFF800001u, 0xFFFFFFFFu}) {
    const float back = to_float(to_bf16(f32(u)));
    EXPECT_TRUE(std::isnan(back)) << std::hex << u;
    EXPECT_EQ(std::signbit(back), bool(u >> 31)) << std::hex << u;
    EXPECT_EQ(bits(f32(u)) & 0x0040, 0x0040) << "quiet bit, " << std::hex << u;
  }
  // Subnormals flush to a zero of the same sign (what VCVTNEPS2BF16 does).
  EXPECT_EQ(bits(f32(0x00000001)), 0x0000);
  EXPECT_EQ(bits(f32(0x007FFFFF)), 0x0000);
  EXPECT_EQ(bits(f32(0x807FFFFF)), 0x8000);
  EXPECT_EQ(bits(f32(0x00800000)), 0x0080);  // the smallest normal stays
  EXPECT_EQ(bits(0.0f), 0x0000);
  EXPECT_EQ(bits(-0.0f), 0x8000);
}

TEST(Bf16, RelativeErrorIsAtMostHalfAnUlp) {
  // |bf16(x) − x| ≤ 2^-8·|x| for normal x (8 significant bits, round to nearest), and the
  // worst case is reached: 1 + 2^-8 − 2^-23 (just under the tie) loses almost 2^-8.
  for (float x : {3.14159265f, -2.71828f, 1e-20f, 6.02e23f, 0.1f, 65504.0f}) {
    EXPECT_LE(std::fabs(to_float(to_bf16(x)) - x), std::ldexp(std::fabs(x), -8)) << x;
  }
  const float x = f32(0x3F807FFF);
  EXPECT_GT(std::fabs(to_float(to_bf16(x)) - x), std::ldexp(std::fabs(x), -9));
}

TEST(Bf16, BulkConversionsMatchTheScalarReference) {
  std::printf("bf16 conversion path of this build: %s\n", bf16_isa());
  EXPECT_EQ(bf16_check::bulk_mismatches(), "");
}

// ---- kernels with S = bf16 against double references ----------------------------------
//
// Inputs are random fp32 values rounded to bf16; the reference computes in double from the
// same (widened) values, so the comparison isolates what the kernel adds:
//  * a bf16 output is the fp32 result rounded once to nearest: |out − ref| ≤ 2^-8·|ref| (half
//    an ulp of 8 significant bits, the unit roundoff of bf16) plus the fp32 arithmetic before the
//    rounding, which the fp32 tests of test_ops.cpp bound by ~1e-6 of the tensor's scale; we allow
//    1e-5·max|ref|. Truncating instead of rounding (errors up to 2^-7·|ref|) fails this bound;
//  * an fp32 output (gradients, statistics) carries only fp32 rounding: normalised error
//    max|out − ref|/max|ref| ≤ 1e-5 (sums of ≤ 300 terms: ~300·2^-24 ≈ 2e-5 worst case,
//    ~1e-6 typical; 1e-5 holds with margin for these sizes, measured ≤ 2e-6).

using VecF = std::vector<float>;
using VecD = std::vector<double>;
using VecH = std::vector<bf16>;

VecH round_bf16(const VecF& x) {
  VecH h(x.size());
  to_bf16(h.data(), x.data(), int64_t(x.size()));
  return h;
}
VecD widen(const VecH& h) {
  VecD d(h.size());
  for (size_t i = 0; i < h.size(); ++i) d[i] = to_float(h[i]);
  return d;
}
void expect_bf16_close(const VecH& out, const VecD& ref, const char* what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  double scale = 0.0;
  for (double r : ref) scale = std::max(scale, std::fabs(r));
  int bad = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double o = to_float(out[i]), bound = std::ldexp(std::fabs(ref[i]), -8) + 1e-5 * scale;
    if (!(std::fabs(o - ref[i]) <= bound) && bad++ < 5)
      ADD_FAILURE() << what << "[" << i << "] = " << o << ", reference " << ref[i] << ", bound "
                    << bound;
  }
  EXPECT_EQ(bad, 0) << what;
}

void expect_f32_close(const VecF& out, const VecD& ref, const char* what, double tol = 1e-5) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  double num = 0.0, den = 1e-30;
  for (size_t i = 0; i < out.size(); ++i) {
    num = std::max(num, std::isfinite(out[i]) ? std::fabs(out[i] - ref[i]) : INFINITY);
    den = std::max(den, std::fabs(ref[i]));
  }
  EXPECT_LE(num / den, tol) << what;
}

TEST(Bf16Kernels, Linear) {
  // M = 300 > kLinearRows: two row tiles, the second partial.
  const int64_t M = 300, K = 37, N = 53;
  const VecH x = round_bf16(naive::randn(M * K, 1));
  const VecF w = naive::randn(N * K, 2, 0.2f), bias = naive::randn(N, 3),
             dy = naive::randn(M * N, 4);
  std::vector<float> scratch(linear_scratch_floats(K, N));
  VecH out(M * N);
  linear_forward(out.data(), x.data(), w.data(), bias.data(), M, K, N, scratch.data());
  const VecD xd = widen(x), wd = naive::to_d(w), bd = naive::to_d(bias), dyd = naive::to_d(dy);
  VecD ref(M * N);
  naive::linear_forward(ref.data(), xd.data(), wd.data(), bd.data(), M, K, N);
  expect_bf16_close(out, ref, "linear out");
  // Backward: dinp += dy·w, dw += dyᵀ·x (x read as bf16), dbias += Σ dy; onto pre-filled 1s.
  VecF dx(M * K, 1.0f), dw(N * K, 1.0f), db(N, 1.0f);
  linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), M, K, N,
                  scratch.data());
  VecD rdx(M * K, 1.0), rdw(N * K, 1.0), rdb(N, 1.0);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      rdb[n] += dyd[m * N + n];
      for (int64_t k = 0; k < K; ++k) {
        rdx[m * K + k] += dyd[m * N + n] * wd[n * K + k];
        rdw[n * K + k] += dyd[m * N + n] * xd[m * K + k];
      }
    }
  expect_f32_close(dx, rdx, "linear dinp");
  expect_f32_close(dw, rdw, "linear dw");
  expect_f32_close(db, rdb, "linear dbias");
}

TEST(Bf16Kernels, LayerNormAndRmsNorm) {
  const int64_t N = 29, C = 71;
  // A mean far from 0 next to the spread: the stored x is rounded at |x| ~ 3, so the
  // reference must be computed from the rounded values (as it is) to isolate the kernel.
  const VecH x = round_bf16(naive::randn(N * C, 5, 1.0f, 3.0f));
  const VecF w = naive::randn(C, 6, 0.5f, 1.0f), b = naive::randn(C, 7),
             dy = naive::randn(N * C, 8);
  const VecD xd = widen(x), wd = naive::to_d(w), bd = naive::to_d(b), dyd = naive::to_d(dy);
  VecH out(N * C);
  VecF mean(N), rstd(N), out32(N * C);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  VecD ref(N * C), rmean(N), rrstd(N);
  for (int64_t r = 0; r < N; ++r)
    naive::layernorm_row(&ref[r * C], &rmean[r], &rrstd[r], &xd[r * C], wd.data(), bd.data(), C);
  expect_bf16_close(out, ref, "layernorm out");
  expect_f32_close(mean, rmean, "layernorm mean", 1e-6);
  expect_f32_close(rstd, rrstd, "layernorm rstd", 1e-6);
  // The final norm: bf16 residual in, fp32 out for the head.
  VecF mean2(N), rstd2(N);
  layernorm_forward(out32.data(), mean2.data(), rstd2.data(), x.data(), w.data(), b.data(), N, C);
  expect_f32_close(out32, ref, "layernorm fp32 out from bf16 in");
  // Backward with g = w∘dy: dx = rstd·(g − mean(g) − x̂·mean(g∘x̂)), dw = Σ dy∘x̂, db = Σ dy.
  VecF dx(N * C, 0.5f), dw(C, 0.5f), db(C, 0.5f);
  layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), N, C);
  VecD rdx(N * C, 0.5), rdw(C, 0.5), rdb(C, 0.5);
  for (int64_t r = 0; r < N; ++r) {
    double gm = 0.0, gxm = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double xh = (xd[r * C + c] - rmean[r]) * rrstd[r], g = wd[c] * dyd[r * C + c];
      gm += g / C, gxm += g * xh / C;
      rdw[c] += dyd[r * C + c] * xh, rdb[c] += dyd[r * C + c];
    }
    for (int64_t c = 0; c < C; ++c) {
      const double xh = (xd[r * C + c] - rmean[r]) * rrstd[r];
      rdx[r * C + c] += rrstd[r] * (wd[c] * dyd[r * C + c] - gm - xh * gxm);
    }
  }
  // Statistics enter as fp32 (rstd, mean rounded): 1e-5 still holds (measured ~1e-6).
  expect_f32_close(dx, rdx, "layernorm dx");
  expect_f32_close(dw, rdw, "layernorm dw");
  expect_f32_close(db, rdb, "layernorm db");

  // RMSNorm: y = x·rstd·w; dx = rstd·(g − x̂·mean(g∘x̂)), dw = Σ dy∘x̂.
  const float eps = 1e-6f;
  rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), N, C, eps);
  for (int64_t r = 0; r < N; ++r)
    naive::rmsnorm_row(&ref[r * C], &rrstd[r], &xd[r * C], wd.data(), C, eps);
  expect_bf16_close(out, ref, "rmsnorm out");
  VecF rdx2(N * C, 0.0f), rdw2(C, 0.0f);
  std::fill(dx.begin(), dx.end(), 0.0f), std::fill(dw.begin(), dw.end(), 0.0f);
  rmsnorm_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), N, C);
  std::fill(rdx.begin(), rdx.end(), 0.0), std::fill(rdw.begin(), rdw.end(), 0.0);
  for (int64_t r = 0; r < N; ++r) {
    double gxm = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double xh = xd[r * C + c] * rrstd[r];
      gxm += wd[c] * dyd[r * C + c] * xh / C;
      rdw[c] += dyd[r * C + c] * xh;
    }
    for (int64_t c = 0; c < C; ++c)
      rdx[r * C + c] = rrstd[r] * (wd[c] * dyd[r * C + c] - xd[r * C + c] * rrstd[r] * gxm);
  }
  expect_f32_close(dx, rdx, "rmsnorm dx");
  expect_f32_close(dw, rdw, "rmsnorm dw");
}

TEST(Bf16Kernels, GeluSwigluResidualDropout) {
  const int64_t N = 13, F = 67, n = N * F;
  const VecH x = round_bf16(naive::randn(n, 9, 2.0f)), y = round_bf16(naive::randn(n, 10));
  const VecF dy = naive::randn(n, 11);
  const VecD xd = widen(x), yd = widen(y), dyd = naive::to_d(dy);
  VecH out(n);
  VecD ref(n);
  gelu_forward(out.data(), x.data(), n);
  for (int64_t i = 0; i < n; ++i) ref[i] = naive::gelu(xd[i]);
  expect_bf16_close(out, ref, "gelu out");
  VecF dx(n, 0.0f);
  gelu_backward(dx.data(), x.data(), dy.data(), n);
  for (int64_t i = 0; i < n; ++i) {  // central difference of the double gelu, h = 1e-5
    const double h = 1e-5;
    ref[i] = dyd[i] * (naive::gelu(xd[i] + h) - naive::gelu(xd[i] - h)) / (2 * h);
  }
  expect_f32_close(dx, ref, "gelu dx");

  residual_forward(out.data(), x.data(), y.data(), n);
  for (int64_t i = 0; i < n; ++i) ref[i] = xd[i] + yd[i];
  expect_bf16_close(out, ref, "residual");

  // SwiGLU on (N, [gate | up]) = x, y viewed as (N/… ) rows of 2F: use x as the gate|up block.
  const int64_t Fh = F / 2, rows = N;  // gu (rows, 2·Fh) taken from x's first rows·2·Fh values
  VecH sw(rows * Fh);
  swiglu_forward(sw.data(), x.data(), rows, Fh);
  VecD rsw(rows * Fh);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < Fh; ++c)
      rsw[r * Fh + c] = naive::swiglu(xd[r * 2 * Fh + c], xd[r * 2 * Fh + Fh + c]);
  expect_bf16_close(sw, rsw, "swiglu out");
  VecF dgu(rows * 2 * Fh);
  swiglu_backward(dgu.data(), dy.data(), x.data(), rows, Fh);
  VecD rdgu(rows * 2 * Fh);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < Fh; ++c) {
      const double g = xd[r * 2 * Fh + c], u = xd[r * 2 * Fh + Fh + c], s = 1 / (1 + std::exp(-g));
      rdgu[r * 2 * Fh + c] = dyd[r * Fh + c] * u * s * (1 + g * (1 - s));
      rdgu[r * 2 * Fh + Fh + c] = dyd[r * Fh + c] * g * s;
    }
  expect_f32_close(dgu, rdgu, "swiglu dgu");

  // Dropout in place on a stored tensor: kept values scaled by 1/(1−p), exactly as the
  // reference's keep decisions say.
  std::vector<int64_t> keys(N);
  for (int64_t r = 0; r < N; ++r) keys[r] = 1000 + 7 * r;
  const DropoutKey key{0.25f, 42, 3, 1, RngSite::mlp_out_dropout};
  VecH z = x;
  dropout_forward(z.data(), z.data(), keys.data(), N, F, key);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < F; ++c)
      ref[r * F + c] = naive::dropout_keep(key, keys[r], c) ? xd[r * F + c] / 0.75 : 0.0;
  expect_bf16_close(z, ref, "dropout");
}

TEST(Bf16Kernels, EmbeddingAndRope) {
  const int64_t V = 11, C = 24, N = 9;
  const VecF wte = naive::randn(V * C, 12);
  std::vector<int32_t> tok(N);
  for (int64_t i = 0; i < N; ++i) tok[i] = int32_t((5 * i + 3) % V);
  VecH e(N * C);
  embedding_forward(e.data(), tok.data(), wte.data(), N, C, V);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c)  // exactly the rounded weight
      ASSERT_EQ(e[i * C + c].bits, to_bf16(wte[tok[i] * C + c]).bits) << i << "," << c;

  // RoPE in place on the stored QKV, at large global positions (angles formed in double).
  const int64_t B = 2, T = 5, nh = 3, d = 8, stride = nh * d + 4;
  VecH q = round_bf16(naive::randn(B * T * stride, 13));
  VecD ref = widen(q);
  const std::vector<int64_t> pos = {100000, 100001, 100002, 7, 123456};
  rope_forward(q.data(), pos.data(), B, T, nh, d, stride, 10000.0f);
  naive::rope_forward(ref.data(), pos.data(), B, T, nh, d, stride, 10000.0);
  expect_bf16_close(q, ref, "rope");
}

}  // namespace
}  // namespace seqpar
