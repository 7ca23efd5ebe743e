// Kernel tests: every op of src/kernels/ops.hpp against the double references in
// naive_ops.hpp (normalised error max|a − b| / max|b|), every backward against central
// finite differences of the double forward of the scalar loss L = Σ R∘out, accumulate
// semantics (+=) by pre-filled gradient buffers, and op-specific properties.
#include <cblas.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "core/memory.hpp"
#include "core/threads.hpp"
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

bool throws_with(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) {
      if (msg.find(p) == std::string::npos) {
        ADD_FAILURE() << "message '" << msg << "' lacks '" << p << "'";
        return false;
      }
    }
    return true;
  }
  return false;
}

// ================================ linear ===========================================
struct LinearShape {
  int64_t M, K, N;
};

class Linear : public ::testing::TestWithParam<LinearShape> {};

TEST_P(Linear, ForwardMatchesNaive) {
  const auto [M, K, N] = GetParam();
  VecF inp = randn(M * K, 1), w = randn(N * K, 2), bias = randn(N, 3);
  VecD ref(M * N), ref_nb(M * N);
  naive::linear_forward(ref.data(), to_d(inp).data(), to_d(w).data(), to_d(bias).data(), M, K, N);
  naive::linear_forward(ref_nb.data(), to_d(inp).data(), to_d(w).data(), nullptr, M, K, N);
  VecF out(M * N, 123.0f);  // garbage: forward must overwrite
  linear_forward(out.data(), inp.data(), w.data(), bias.data(), M, K, N);
  // fp32 dot products of K ≤ 229 unit normals: rounding ~√K·u·|terms| ≈ 1e-6 of max|out|
  // (observed ≤ 5e-7). A missing bias or transpose is an O(1) error.
  EXPECT_LT(rel_err(out, ref), 5e-6);
  linear_forward(out.data(), inp.data(), w.data(), nullptr, M, K, N);
  EXPECT_LT(rel_err(out, ref_nb), 5e-6);
}

TEST_P(Linear, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const auto [M, K, N] = GetParam();
  VecF inp = randn(M * K, 4), w = randn(N * K, 5), bias = randn(N, 6), R = randn(M * N, 7);
  VecD xi = to_d(inp), xw = to_d(w), xb = to_d(bias), Rd = to_d(R);
  // L = Σ R∘out. Row m of out depends on inp row m; column n on w row n and bias n.
  auto loss_row = [&](int64_t m) {
    double l = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      double s = xb[n];
      for (int64_t k = 0; k < K; ++k) s += xi[m * K + k] * xw[n * K + k];
      l += Rd[m * N + n] * s;
    }
    return l;
  };
  auto loss_col = [&](int64_t n) {
    double l = 0.0;
    for (int64_t m = 0; m < M; ++m) {
      double s = xb[n];
      for (int64_t k = 0; k < K; ++k) s += xi[m * K + k] * xw[n * K + k];
      l += Rd[m * N + n] * s;
    }
    return l;
  };
  const double h = 1e-3;  // L is linear in each variable: central differences are exact
  VecD g_inp = fd_grad(
      xi, [&](size_t i) { return loss_row(i / K); }, h);
  VecD g_w = fd_grad(
      xw, [&](size_t i) { return loss_col(i / K); }, h);
  VecD g_b = fd_grad(
      xb, [&](size_t i) { return loss_col(i); }, h);

  // Pre-filled buffers: the kernel must add, not overwrite.
  VecF d_inp = randn(M * K, 8), d_w = randn(N * K, 9), d_b = randn(N, 10);
  const VecF d_inp0 = d_inp, d_w0 = d_w, d_b0 = d_b;
  linear_backward(d_inp.data(), d_w.data(), d_b.data(), R.data(), inp.data(), w.data(), M, K, N);
  // Sums of ≤ 71 fp32 products plus the pre-fill: rounding ≤ M·u ≈ 4e-6 relative in the
  // worst case, observed ≤ 4e-7; the FD reference of a linear loss is exact to ~1e-12.
  EXPECT_LT(rel_err(d_inp, plus(d_inp0, VecF(g_inp.begin(), g_inp.end()))), 5e-6);
  EXPECT_LT(rel_err(d_w, plus(d_w0, VecF(g_w.begin(), g_w.end()))), 5e-6);
  EXPECT_LT(rel_err(d_b, plus(d_b0, VecF(g_b.begin(), g_b.end()))), 5e-6);

  // Twice from zero doubles the gradient; null dinp/dbias leave dw unchanged.
  VecF z_inp(M * K), z_w(N * K), z_b(N), z_w2(N * K);
  linear_backward(z_inp.data(), z_w.data(), z_b.data(), R.data(), inp.data(), w.data(), M, K, N);
  linear_backward(z_inp.data(), z_w.data(), z_b.data(), R.data(), inp.data(), w.data(), M, K, N);
  VecD twice_inp(M * K), twice_w(N * K), twice_b(N);
  for (int64_t i = 0; i < M * K; ++i) twice_inp[i] = 2.0 * g_inp[i];
  for (int64_t i = 0; i < N * K; ++i) twice_w[i] = 2.0 * g_w[i];
  for (int64_t i = 0; i < N; ++i) twice_b[i] = 2.0 * g_b[i];
  EXPECT_LT(rel_err(z_inp, twice_inp), 5e-6);
  EXPECT_LT(rel_err(z_w, twice_w), 5e-6);
  EXPECT_LT(rel_err(z_b, twice_b), 5e-6);
  linear_backward(nullptr, z_w2.data(), nullptr, R.data(), inp.data(), w.data(), M, K, N);
  EXPECT_LT(rel_err(z_w2, g_w), 5e-6);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Linear,
                         ::testing::Values(LinearShape{71, 229, 37}, LinearShape{1, 1, 1},
                                           LinearShape{3, 64, 130}),
                         [](const auto& info) {
                           const auto& s = info.param;
                           std::string name = "M";  // appended: GCC 12 warns on "lit" + string&&
                           name += std::to_string(s.M);
                           name += "_K";
                           name += std::to_string(s.K);
                           name += "_N";
                           name += std::to_string(s.N);
                           return name;
                         });

// The linear layers issue at most kGemmMaxRows rows per sgemm (OpenBLAS's pack buffer,
// core/memory.hpp), with a remainder piece here (2·kGemmMaxRows + 37 rows), on 1 and 2
// threads. Rows are independent in out = inp·wᵀ and dinp += dout·w, but OpenBLAS blocks
// the rows of one call differently from those of three (its M blocks and thread split
// move), which changes the order of the K-sum inside its kernels for some rows: the
// pieces agree with one call to rounding, not to the bit. Tolerance: normalised error
// 1e-6, a few float ulps of a K = 96 sum of O(1) products (5.9e-8 each ulp).
TEST(Linear, RowPiecesGiveTheBitsOfOneCall) {
  const int64_t M = 2 * kGemmMaxRows + 37, K = 96, N = 136;
  VecF inp = randn(M * K, 11), w = randn(N * K, 12), bias = randn(N, 13), dout = randn(M * N, 14);
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    VecF out(M * N), ref(M * N);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t j = 0; j < N; ++j) ref[r * N + j] = bias[j];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(N), int(K), 1.0f, inp.data(),
                int(K), w.data(), int(K), 1.0f, ref.data(), int(N));
    linear_forward(out.data(), inp.data(), w.data(), bias.data(), M, K, N);
    EXPECT_LT(rel_err(out, to_d(ref)), 1e-6) << threads;

    VecF dinp = randn(M * K, 15), dref = dinp, dw(N * K, 0.0f);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(M), int(K), int(N), 1.0f,
                dout.data(), int(N), w.data(), int(K), 1.0f, dref.data(), int(K));
    linear_backward(dinp.data(), dw.data(), nullptr, dout.data(), inp.data(), w.data(), M, K, N);
    EXPECT_LT(rel_err(dinp, to_d(dref)), 1e-6) << threads;
  }
  set_num_threads(saved);
}

// ================================ layernorm ========================================
TEST(LayerNorm, ForwardMatchesNaive) {
  const int64_t N = 71, C = 229;
  VecF x = randn(N * C, 11, 2.0f, 3.0f), w = randn(C, 12), b = randn(C, 13);
  // Every 7th row has variance ~1e-5, comparable to eps, so a wrong eps shows.
  for (int64_t r = 0; r < N; r += 7)
    for (int64_t c = 0; c < C; ++c) x[r * C + c] = 3.0f + 0.003f * (x[r * C + c] - 3.0f);
  VecF out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  VecD xd = to_d(x), wd = to_d(w), bd = to_d(b), ref(N * C), rm(N), rr(N);
  for (int64_t r = 0; r < N; ++r)
    naive::layernorm_row(&ref[r * C], &rm[r], &rr[r], &xd[r * C], wd.data(), bd.data(), C);
  // Statistics are summed in double and rounded once: ~1 ulp. The output is 4 fp32 ops on
  // values of size ~3: a few ulp of max|out|. An eps or variance-bias mistake is ≥ 1e-3.
  EXPECT_LT(rel_err(mean, rm), 1e-6);
  EXPECT_LT(rel_err(rstd, rr), 1e-6);
  EXPECT_LT(rel_err(out, ref), 2e-6);
}

TEST(LayerNorm, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t N = 71, C = 229;
  VecF x = randn(N * C, 14, 2.0f, 3.0f), w = randn(C, 15), b = randn(C, 16), R = randn(N * C, 17);
  VecF out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  VecD xd = to_d(x), wd = to_d(w), bd = to_d(b), Rd = to_d(R), y(C);
  auto loss_row = [&](int64_t r) {
    naive::layernorm_row(y.data(), nullptr, nullptr, &xd[r * C], wd.data(), bd.data(), C);
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
  VecD g_b = fd_grad(bd, loss_all, h);

  VecF dx = randn(N * C, 18), dw = randn(C, 19), db = randn(C, 20);
  const VecF dx0 = dx, dw0 = dw, db0 = db;
  layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), N, C);
  // fp32 elementwise terms with double row sums; dx involves g − mean(g) − x̂·mean(gx̂), whose
  // cancellation costs a few ulp of |g|: observed ≤ 1e-7, tolerance 2e-6. Dropping any of
  // the three terms or the rstd factor is an O(1) error.
  EXPECT_LT(rel_err(dx, plus(dx0, VecF(g_x.begin(), g_x.end()))), 2e-6);
  EXPECT_LT(rel_err(dw, plus(dw0, VecF(g_w.begin(), g_w.end()))), 2e-6);
  EXPECT_LT(rel_err(db, plus(db0, VecF(g_b.begin(), g_b.end()))), 2e-6);
}

// ================================ GELU ==============================================
TEST(Gelu, ForwardMatchesNaive) {
  const int64_t n = 71 * 229;
  VecF x = randn(n, 21, 3.0f);
  x[0] = 0.0f, x[1] = 10.0f, x[2] = -10.0f, x[3] = 1.0f;
  VecF y(n);
  gelu_forward(y.data(), x.data(), n);
  VecD ref(n);
  for (int64_t i = 0; i < n; ++i) ref[i] = naive::gelu(x[i]);
  // fp32 tanh is within ~2 ulp and the formula has ~6 roundings: ≲ 1e-6 of max|y| (~10).
  // The exact erf GELU differs from the tanh form by up to ~5e-4 and fails this bound.
  EXPECT_LT(rel_err(y, ref), 1e-6);
  EXPECT_EQ(y[0], 0.0f);
}

TEST(Gelu, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t n = 71 * 229;
  VecF x = randn(n, 22, 3.0f), R = randn(n, 23);
  VecD xd = to_d(x);
  // Elementwise: ∂L/∂x_i = R_i·gelu'(x_i), so each difference touches one term of L.
  VecD g = fd_grad(
      xd, [&](size_t i) { return R[i] * naive::gelu(xd[i]); }, 1e-5);
  VecF dx = randn(n, 24);
  const VecF dx0 = dx;
  gelu_backward(dx.data(), x.data(), R.data(), n);
  // fp32 derivative (1 − tanh² cancels near saturation: ~1e-7 absolute) vs FD with
  // truncation ~1e-11: observed 3e-7, tolerance 3e-6 of the gradient scale.
  EXPECT_LT(rel_err(dx, plus(dx0, VecF(g.begin(), g.end()))), 3e-6);
}

// ================================ residual ==========================================
TEST(Residual, ForwardAndAccumulatingBackward) {
  const int64_t n = 1001;
  VecF a = randn(n, 25), b = randn(n, 26), dout = randn(n, 27), out(n);
  residual_forward(out.data(), a.data(), b.data(), n);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a[i] + b[i]) << i;
  VecF da = randn(n, 28), db = randn(n, 29);
  const VecF da0 = da, db0 = db;
  residual_backward(da.data(), db.data(), dout.data(), n);
  residual_backward(da.data(), db.data(), dout.data(), n);
  // Identity gradient, exact: (g0 + d) + d in the same order.
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(da[i], (da0[i] + dout[i]) + dout[i]) << i;
    ASSERT_EQ(db[i], (db0[i] + dout[i]) + dout[i]) << i;
  }
}

// ================================ embedding =========================================
TEST(Embedding, ForwardGathersRowsAndChecksRange) {
  const int64_t N = 71, C = 229, V = 37;
  VecF wte = randn(V * C, 30), out(N * C);
  std::vector<int32_t> tok(N);
  for (int64_t i = 0; i < N; ++i) tok[i] = static_cast<int32_t>((i * 17 + 3) % V);
  embedding_forward(out.data(), tok.data(), wte.data(), N, C, V);
  for (int64_t i = 0; i < N; ++i)
    for (int64_t c = 0; c < C; ++c) ASSERT_EQ(out[i * C + c], wte[tok[i] * C + c]) << i << "," << c;
  tok[5] = 37;
  EXPECT_TRUE(throws_with([&] { embedding_forward(out.data(), tok.data(), wte.data(), N, C, V); },
                          {"position 5", "37"}));
  tok[5] = -2;
  EXPECT_TRUE(throws_with([&] { embedding_forward(out.data(), tok.data(), wte.data(), N, C, V); },
                          {"position 5", "-2"}));
}

TEST(Embedding, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t N = 71, C = 229, V = 37;  // N > V: tokens repeat and must add up
  VecF wte = randn(V * C, 31), R = randn(N * C, 32);
  std::vector<int32_t> tok(N);
  for (int64_t i = 0; i < N; ++i) tok[i] = static_cast<int32_t>((i * i + 7) % V);
  VecD wd = to_d(wte);
  // L = Σ_i Σ_c R[i,c]·wte[tok_i, c]; wte[v, c] only enters column c.
  auto loss_col = [&](size_t idx) {
    const int64_t c = idx % C;
    double l = 0.0;
    for (int64_t i = 0; i < N; ++i) l += R[i * C + c] * wd[tok[i] * C + c];
    return l;
  };
  VecD g = fd_grad(wd, loss_col, 1e-3);  // linear: exact differences
  VecF dw = randn(V * C, 33);
  const VecF dw0 = dw;
  embedding_backward(dw.data(), R.data(), tok.data(), N, C);
  // Each row sums ≤ a handful of fp32 terms plus the pre-fill: a few ulp.
  EXPECT_LT(rel_err(dw, plus(dw0, VecF(g.begin(), g.end()))), 1e-6);
}

// ================================ RoPE ==============================================
struct RopeCase {
  int64_t B, T, nh, d, pad;
  int64_t pos0, pos_step;
};

VecD rope_ref(const VecF& x, const std::vector<int64_t>& pos, const RopeCase& c, double theta) {
  VecD r = to_d(x);
  naive::rope_forward(r.data(), pos.data(), c.B, c.T, c.nh, c.d, c.nh * c.d + c.pad, theta);
  return r;
}

TEST(Rope, ForwardMatchesNaiveWithStrideAndLargePositions) {
  for (const RopeCase c :
       {RopeCase{2, 71, 3, 12, 5, 0, 1}, RopeCase{3, 29, 2, 64, 0, 500000, 37}}) {
    const int64_t stride = c.nh * c.d + c.pad;
    std::vector<int64_t> pos(c.T);
    for (int64_t t = 0; t < c.T; ++t) pos[t] = c.pos0 + c.pos_step * t;
    VecF x = randn(c.B * c.T * stride, 40);
    VecD ref = rope_ref(x, pos, c, 10000.0);
    rope_forward(x.data(), pos.data(), c.B, c.T, c.nh, c.d, stride, 10000.0f);
    // cos/sin from a double angle rounded to float, two fp32 products: ~2 ulp. A float
    // angle at pos ~ 5e5 is off by ~5e-2 rad and fails; padding columns must be untouched
    // (the reference leaves them as they were).
    EXPECT_LT(rel_err(x, ref), 2e-6) << "pos0=" << c.pos0;
  }
}

TEST(Rope, ShardWithOffsetPositionsEqualsSliceOfFullSequence) {
  const int64_t B = 2, T = 37, nh = 3, d = 16, stride = nh * d;
  VecF full = randn(B * 2 * T * stride, 41);
  VecF shard(B * T * stride);
  for (int64_t b = 0; b < B; ++b)
    std::copy_n(&full[(b * 2 * T + T) * stride], T * stride, &shard[b * T * stride]);
  std::vector<int64_t> pos_full(2 * T), pos_shard(T);
  for (int64_t t = 0; t < 2 * T; ++t) pos_full[t] = t;
  for (int64_t t = 0; t < T; ++t) pos_shard[t] = T + t;
  rope_forward(full.data(), pos_full.data(), B, 2 * T, nh, d, stride, 10000.0f);
  rope_forward(shard.data(), pos_shard.data(), B, T, nh, d, stride, 10000.0f);
  // Same positions, same arithmetic: bitwise identical.
  for (int64_t b = 0; b < B; ++b)
    for (int64_t i = 0; i < T * stride; ++i)
      ASSERT_EQ(shard[b * T * stride + i], full[(b * 2 * T + T) * stride + i]) << b << "," << i;
}

// Per-row positions (B, T) with a batch stride (--doc-positions reset): each row rotates
// exactly as a call on that row alone with its own positions (bitwise: the same angle and
// the same products), forward and backward; pos_bstride may exceed T.
TEST(Rope, PerRowPositionsEqualOneCallPerRow) {
  const int64_t B = 3, T = 29, nh = 2, d = 12, stride = nh * d + 3, pbs = T + 4;
  std::vector<int64_t> pos(B * pbs, -1);  // the gap between rows is never read
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) pos[b * pbs + t] = b == 1 ? t % 7 : 1000 * b + 3 * t;
  using RopeFn =
      void (*)(float*, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t, float, int64_t);
  for (const bool fwd : {true, false}) {
    VecF x = randn(B * T * stride, 44);
    VecF rows = x;
    const RopeFn rope = fwd ? RopeFn(rope_forward<float>) : RopeFn(rope_backward);
    rope(x.data(), pos.data(), B, T, nh, d, stride, 10000.0f, pbs);
    for (int64_t b = 0; b < B; ++b)
      rope(rows.data() + b * T * stride, pos.data() + b * pbs, 1, T, nh, d, stride, 10000.0f, 0);
    for (int64_t i = 0; i < B * T * stride; ++i)
      ASSERT_EQ(x[i], rows[i]) << (fwd ? "forward" : "backward") << " element " << i;
  }
  VecF c(B * T * stride);
  EXPECT_THROW(rope_forward(c.data(), pos.data(), B, T, nh, d, stride, 10000.0f, T - 1), Error);
}

TEST(Rope, BackwardIsTransposeOfForward) {
  const RopeCase c{2, 23, 3, 10, 3, 100, 3};
  const int64_t stride = c.nh * c.d + c.pad, n = c.B * c.T * stride;
  std::vector<int64_t> pos(c.T);
  for (int64_t t = 0; t < c.T; ++t) pos[t] = c.pos0 + c.pos_step * t;
  VecF x = randn(n, 42), R = randn(n, 43);
  // Dot-product test: <R, f(x)> = <fᵀR, x> with fᵀR = rope_backward(R).
  VecF fx = x, bR = R;
  rope_forward(fx.data(), pos.data(), c.B, c.T, c.nh, c.d, stride, 10000.0f);
  rope_backward(bR.data(), pos.data(), c.B, c.T, c.nh, c.d, stride, 10000.0f);
  double lhs = 0.0, rhs = 0.0, scale = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    lhs += static_cast<double>(R[i]) * fx[i];
    rhs += static_cast<double>(bR[i]) * x[i];
    scale += std::fabs(static_cast<double>(R[i]) * x[i]);
  }
  // Each side carries ~2 ulp per element: ≲ 1e-6 of Σ|R·x|. A forward rotation in the
  // backward (sign slip) makes the sides differ by O(Σ|R·x|).
  EXPECT_LT(std::fabs(lhs - rhs) / scale, 1e-6);

  // Finite differences of the double forward; one token's loss is all that x[i] touches.
  VecD xd = to_d(x), y;
  auto loss_token = [&](size_t i) {
    const int64_t tok = i / stride, t = tok % c.T;
    VecD one(stride);
    std::copy_n(&xd[tok * stride], stride, one.data());
    naive::rope_forward(one.data(), &pos[t], 1, 1, c.nh, c.d, stride, 10000.0);
    double l = 0.0;
    for (int64_t j = 0; j < stride; ++j) l += R[tok * stride + j] * one[j];
    return l;
  };
  VecD g = fd_grad(xd, loss_token, 1e-3);  // linear in x: exact differences
  EXPECT_LT(rel_err(bR, g), 2e-6);

  // backward(forward(x)) = x: rotations are orthogonal.
  rope_backward(fx.data(), pos.data(), c.B, c.T, c.nh, c.d, stride, 10000.0f);
  EXPECT_LT(rel_err(fx, to_d(x)), 2e-6);
}

// ================================ dropout ===========================================
std::vector<int64_t> row_keys(int64_t N, int64_t first, int64_t step) {
  std::vector<int64_t> k(N);
  for (int64_t r = 0; r < N; ++r) k[r] = first + step * r;
  return k;
}

TEST(Dropout, ForwardMatchesKeyedDefinition) {
  const int64_t N = 71, C = 229;  // C % 4 != 0: the last Philox call uses 1 of 4 lanes
  DropoutKey key{0.25f, 1234567ull, 9, 2, RngSite::attn_out_dropout};
  VecF x = randn(N * C, 50), out(N * C);
  auto keys = row_keys(N, 4096 * 3 + 11, 5);
  dropout_forward(out.data(), x.data(), keys.data(), N, C, key);
  VecD ref(N * C);
  for (int64_t r = 0; r < N; ++r)
    for (int64_t c = 0; c < C; ++c)
      ref[r * C + c] = naive::dropout_keep(key, keys[r], c) ? x[r * C + c] / (1.0 - key.p) : 0.0;
  // Kept values are x·fl(1/(1−p)): one rounding of the scale and one of the product.
  EXPECT_LT(rel_err(out, ref), 3e-7);
  for (int64_t i = 0; i < N * C; ++i) ASSERT_EQ(out[i] == 0.0f, ref[i] == 0.0) << i;

  // In place gives the same result.
  VecF inplace = x;
  dropout_forward(inplace.data(), inplace.data(), keys.data(), N, C, key);
  EXPECT_EQ(inplace, out);
  // Another site draws another mask.
  DropoutKey other = key;
  other.site = RngSite::mlp_out_dropout;
  VecF out2(N * C);
  dropout_forward(out2.data(), x.data(), keys.data(), N, C, other);
  EXPECT_NE(out2, out);
}

TEST(Dropout, KeptFractionIsOneMinusP) {
  const int64_t N = 256, C = 1021;
  VecF ones(N * C, 1.0f), out(N * C);
  auto keys = row_keys(N, 0, 1);
  for (float p : {0.1f, 0.5f, 0.9f}) {
    DropoutKey key{p, 42, 1, 0, RngSite::embed_dropout};
    dropout_forward(out.data(), ones.data(), keys.data(), N, C, key);
    int64_t dropped = 0;
    for (float v : out) dropped += v == 0.0f;
    const double n = static_cast<double>(N * C), frac = dropped / n;
    // Binomial: σ = √(p(1−p)/n) ≤ 1e-3 for n = 261376; 5σ is a 6e-7 false-alarm rate,
    // while an off-by-lane or inverted comparison moves the fraction by ≥ 0.1 (p ≠ 0.5) or
    // correlates rows (caught by the definition test above).
    EXPECT_NEAR(frac, p, 5.0 * std::sqrt(p * (1.0 - p) / n)) << "p=" << p;
  }
}

TEST(Dropout, SameKeysSameMaskWhateverTheRowSplit) {
  const int64_t N = 71, C = 229, split = 30;
  DropoutKey key{0.3f, 99, 3, 1, RngSite::mlp_out_dropout};
  VecF x = randn(N * C, 51), full(N * C), parts(N * C);
  auto keys = row_keys(N, 1000, 7);
  dropout_forward(full.data(), x.data(), keys.data(), N, C, key);
  dropout_forward(parts.data(), x.data(), keys.data(), split, C, key);
  dropout_forward(parts.data() + split * C, x.data() + split * C, keys.data() + split, N - split, C,
                  key);
  EXPECT_EQ(parts, full);
}

TEST(Dropout, BackwardUsesForwardMaskAndAccumulates) {
  const int64_t N = 71, C = 229;
  DropoutKey key{0.4f, 7, 11, 5, RngSite::attn_out_dropout};
  VecF x = randn(N * C, 52), out(N * C), dout = randn(N * C, 53), dx = randn(N * C, 54);
  const VecF dx0 = dx;
  auto keys = row_keys(N, 3, 2);
  dropout_forward(out.data(), x.data(), keys.data(), N, C, key);
  dropout_backward(dx.data(), dout.data(), keys.data(), N, C, key);
  const float scale = 1.0f / (1.0f - key.p);
  for (int64_t i = 0; i < N * C; ++i) {
    const bool kept = out[i] != 0.0f;  // x is never exactly 0 here
    ASSERT_EQ(dx[i], dx0[i] + (kept ? dout[i] * scale : 0.0f)) << i;
  }
}

TEST(Dropout, ZeroPIsCopyAndPureAccumulate) {
  const int64_t N = 13, C = 7;
  DropoutKey key{0.0f, 7, 1, 1, RngSite::embed_dropout};
  VecF x = randn(N * C, 55), out(N * C), dout = randn(N * C, 56), dx = randn(N * C, 57);
  const VecF dx0 = dx;
  auto keys = row_keys(N, 0, 1);
  dropout_forward(out.data(), x.data(), keys.data(), N, C, key);
  EXPECT_EQ(out, x);
  dropout_backward(dx.data(), dout.data(), keys.data(), N, C, key);
  for (int64_t i = 0; i < N * C; ++i) ASSERT_EQ(dx[i], dx0[i] + dout[i]) << i;
  key.p = 1.0f;
  EXPECT_THROW(dropout_forward(out.data(), x.data(), keys.data(), N, C, key), Error);
}

// ================================ cross-entropy =====================================
TEST(CrossEntropy, ForwardMatchesNaiveStableAndIgnores) {
  const int64_t N = 71, V = 229;
  for (float shift : {0.0f, 1000.0f}) {
    VecF z = randn(N * V, 60, 3.0f, shift), loss(N, -1.0f);
    std::vector<int32_t> tgt(N);
    for (int64_t i = 0; i < N; ++i) tgt[i] = static_cast<int32_t>((i * 31 + 5) % V);
    tgt[4] = -1, tgt[9] = -100;  // ignored
    crossentropy_forward(loss.data(), z.data(), tgt.data(), N, V);
    VecD zd = to_d(z), ref(N);
    for (int64_t i = 0; i < N; ++i) ref[i] = naive::crossentropy_row(&zd[i * V], tgt[i], V);
    // Loss ~ 5–15. Without the shift: fp32 exp/log rounding ≲ 1e-6. With logits ~1000 the
    // result is a difference of two ~1000-sized floats: ulp(1000)/max loss ≈ 1e-5. An
    // unshifted exp overflows to inf at shift 1000.
    EXPECT_LT(rel_err(loss, ref), shift == 0.0f ? 2e-6 : 3e-5) << "shift " << shift;
    EXPECT_EQ(loss[4], 0.0f);
    EXPECT_EQ(loss[9], 0.0f);
  }
}

TEST(CrossEntropy, RejectsOutOfRangeTargets) {
  const int64_t N = 5, V = 11;
  VecF z = randn(N * V, 61), loss(N), dz(N * V), dl(N, 1.0f);
  std::vector<int32_t> tgt{0, 1, 2, 11, 4};
  EXPECT_TRUE(throws_with([&] { crossentropy_forward(loss.data(), z.data(), tgt.data(), N, V); },
                          {"index 3", "11"}));
  EXPECT_TRUE(
      throws_with([&] { crossentropy_backward(dz.data(), z.data(), tgt.data(), dl.data(), N, V); },
                  {"index 3", "11"}));
}

TEST(CrossEntropy, BackwardMatchesFiniteDifferencesAndAccumulates) {
  const int64_t N = 71, V = 229;
  VecF z = randn(N * V, 62, 3.0f), dl = randn(N, 63);
  std::vector<int32_t> tgt(N);
  for (int64_t i = 0; i < N; ++i) tgt[i] = static_cast<int32_t>((i * 13 + 1) % V);
  tgt[0] = -1, tgt[70] = -100;
  VecD zd = to_d(z);
  // L = Σ_i dl_i·loss_i; logit (i, j) only enters row i.
  auto loss_row = [&](size_t idx) {
    const int64_t i = idx / V;
    return dl[i] * naive::crossentropy_row(&zd[i * V], tgt[i], V);
  };
  VecD g = fd_grad(zd, loss_row, 1e-4);  // truncation ~h² ≈ 1e-8 of O(1) curvature
  VecF dz = randn(N * V, 64);
  const VecF dz0 = dz;
  crossentropy_backward(dz.data(), z.data(), tgt.data(), dl.data(), N, V);
  // fp32 softmax from a recomputed lse: a few ulp per probability (observed 2e-7);
  // tolerance 3e-6 of max|dz|. A missing dlosses factor or onehot term is O(1).
  EXPECT_LT(rel_err(dz, plus(dz0, VecF(g.begin(), g.end()))), 3e-6);
  // Ignored rows: untouched, exactly.
  for (int64_t j = 0; j < V; ++j) {
    ASSERT_EQ(dz[j], dz0[j]);
    ASSERT_EQ(dz[70 * V + j], dz0[70 * V + j]);
  }
}

// ================================ AdamW and helpers ================================
TEST(AdamW, ThreeStepsMatchDoubleReference) {
  const int64_t n = 1000;
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
  VecF w = randn(n, 70), m(n, 0.0f), v(n, 0.0f);
  VecD wr = to_d(w), mr(n, 0.0), vr(n, 0.0);
  for (int64_t t = 1; t <= 3; ++t) {
    VecF g = randn(n, 70 + t, 0.1f);
    adamw_update(w.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, t);
    naive::adamw_update(wr.data(), to_d(g).data(), mr.data(), vr.data(), n, lr, b1, b2, eps, wd, t);
  }
  // fp32 state after 3 steps: a few ulp of |w| ~ 1. Coupled (L2) decay differs by ~lr·λ·|w|/|g|
  // ≈ 1e-2, decaying after the step by lr·λ·|update| ≈ 1e-5, no bias correction by ~lr: all
  // above the 1e-6 bound.
  EXPECT_LT(rel_err(w, wr), 1e-6);
  EXPECT_LT(rel_err(m, mr), 1e-6);
  EXPECT_LT(rel_err(v, vr), 1e-5);  // v ~ g² has a wider dynamic range
}

TEST(AdamW, HandComputedConstantGradient) {
  // With a constant g, m̂ = g and v̂ = g² at every step, so
  //   w_t = w_{t−1}·(1 − lr·λ) − lr·g/(|g| + ε)  = w_{t−1}·0.999 − 0.1·0.5/0.50000001
  // w0 = 1: w1 = 0.899000002, w2 = 0.798101004, w3 = 0.697302905 (to 1e-9).
  float w = 1.0f, g = 0.5f, m = 0.0f, v = 0.0f;
  const double expect[3] = {0.899000002, 0.798101004, 0.697302905};
  for (int t = 1; t <= 3; ++t) {
    adamw_update(&w, &g, &m, &v, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, t);
    EXPECT_NEAR(w, expect[t - 1], 3e-7) << "step " << t;  // a few ulp at 0.7–0.9
  }
}

TEST(Optim, SumSquaresInDoubleAndScale) {
  const int64_t n = 100003;
  VecF g = randn(n, 80, 1.0f, 0.5f);
  double ref = 0.0;
  for (float x : g) ref += static_cast<double>(x) * x;
  // Squares are exact in double; only summation order differs: ≤ n·2⁻⁵³ ≈ 1e-11 relative.
  // A float accumulator is off by ~1e-4 at this n.
  EXPECT_NEAR(sum_squares(g.data(), n), ref, 1e-10 * ref);
  VecF s = g;
  scale_inplace(s.data(), n, 0.37f);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(s[i], g[i] * 0.37f) << i;
}

// ================================ cross-cutting ====================================
TEST(Determinism, ReductionsDoNotDependOnThreadCount) {
  const int64_t N = 300, C = 229, V = 41;
  VecF x = randn(N * C, 90), w = randn(C, 91), b = randn(C, 92), R = randn(N * C, 93);
  VecF out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
  std::vector<int32_t> tok(N);
  for (int64_t i = 0; i < N; ++i) tok[i] = static_cast<int32_t>((i * 7) % V);
  auto run = [&](int threads) {
    omp_set_num_threads(threads);
    VecF dx(N * C), dw(C), db(C), dwte(V * C), lw(C * C), lb(C);
    layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(),
                       rstd.data(), N, C);
    embedding_backward(dwte.data(), R.data(), tok.data(), N, C);
    linear_backward(nullptr, lw.data(), lb.data(), R.data(), x.data(), x.data(), N, C, C);
    VecF all = dx;
    for (const VecF* p : {&dw, &db, &dwte, &lb}) all.insert(all.end(), p->begin(), p->end());
    return all;
  };
  const int saved = omp_get_max_threads();
  const VecF one = run(1), three = run(3);
  omp_set_num_threads(saved);
  EXPECT_EQ(one, three);
}

TEST(Checks, EntryPointsRejectNullAndNonPositiveDims) {
  VecF a(64, 1.0f), b(64, 1.0f), c(64, 1.0f);
  std::vector<int32_t> tok(4, 0);
  std::vector<int64_t> pos(4, 0);
  EXPECT_THROW(linear_forward<float>(nullptr, a.data(), b.data(), nullptr, 2, 2, 2), Error);
  EXPECT_THROW(linear_forward(c.data(), a.data(), b.data(), nullptr, 0, 2, 2), Error);
  EXPECT_THROW(linear_backward(c.data(), nullptr, nullptr, a.data(), a.data(), b.data(), 2, 2, 2),
               Error);
  EXPECT_THROW(layernorm_forward(c.data(), a.data(), b.data(), a.data(), b.data(), nullptr, 2, 2),
               Error);
  EXPECT_THROW(layernorm_backward(c.data(), a.data(), b.data(), a.data(), a.data(), b.data(),
                                  a.data(), b.data(), 2, -1),
               Error);
  EXPECT_THROW(gelu_forward(c.data(), a.data(), 0), Error);
  EXPECT_THROW(gelu_backward(nullptr, a.data(), a.data(), 4), Error);
  EXPECT_THROW(residual_forward<float>(c.data(), nullptr, a.data(), 4), Error);
  EXPECT_THROW(embedding_forward(c.data(), tok.data(), a.data(), 4, 4, 0), Error);
  EXPECT_THROW(embedding_backward(c.data(), a.data(), nullptr, 4, 4), Error);
  EXPECT_THROW(rope_forward(c.data(), pos.data(), 1, 4, 1, 3, 3, 10000.0f), Error);  // odd d
  EXPECT_THROW(rope_forward(c.data(), pos.data(), 1, 4, 2, 4, 7, 10000.0f), Error);  // stride
  EXPECT_THROW(crossentropy_forward(c.data(), a.data(), tok.data(), 4, 0), Error);
  EXPECT_THROW(
      adamw_update(a.data(), b.data(), c.data(), c.data(), 4, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 0),
      Error);
  EXPECT_THROW(sum_squares(nullptr, 4), Error);
  EXPECT_THROW(scale_inplace(a.data(), -1, 2.0f), Error);
}

// ================================ threads that pay =================================
// core/threads.hpp: one thread below 2·kWorkPerThread, then one per kWorkPerThread up to the
// budget; BlasThreadsFor drops OpenBLAS to one thread for a small product only, and puts
// the count back.
TEST(Threads, WorkDecidesTheTeam) {
  const int saved = num_threads();
  set_num_threads(2);
  EXPECT_EQ(threads_for_work(0), 1);
  EXPECT_EQ(threads_for_work(2 * kWorkPerThread - 1), 1);
  EXPECT_EQ(threads_for_work(2 * kWorkPerThread), 2);
  EXPECT_EQ(threads_for_work(int64_t(1) << 50), 2);
  {
    const BlasThreadsFor small(2 * kWorkPerThread - 1);
    EXPECT_EQ(openblas_get_num_threads(), 1);
  }
  EXPECT_EQ(openblas_get_num_threads(), 2);
  {
    const BlasThreadsFor large(int64_t(1) << 40);
    EXPECT_EQ(openblas_get_num_threads(), 2);
  }
  set_num_threads(1);
  EXPECT_EQ(threads_for_work(int64_t(1) << 50), 1);
  set_num_threads(saved);
}

// A one-row linear (a decode step) is a matrix-vector product: against a double reference,
// with and without bias, on 1 and 2 threads. Tolerance as the row-pieces test: a K = 301
// sum of O(1) products in float.
TEST(Linear, OneRowIsTheMatrixVectorProduct) {
  const int64_t K = 301, N = 517;
  VecF inp = randn(K, 21), w = randn(N * K, 22), bias = randn(N, 23);
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const float* b :
         {static_cast<const float*>(nullptr), static_cast<const float*>(bias.data())}) {
      VecF out(N);
      linear_forward(out.data(), inp.data(), w.data(), b, 1, K, N);
      std::vector<double> ref(N);
      for (int64_t j = 0; j < N; ++j) {
        double acc = b ? b[j] : 0.0;
        for (int64_t k = 0; k < K; ++k) acc += double(inp[k]) * w[j * K + k];
        ref[j] = acc;
      }
      EXPECT_LT(rel_err(out, ref), 1e-6) << threads;
    }
  }
  set_num_threads(saved);
}

}  // namespace
}  // namespace seqpar
