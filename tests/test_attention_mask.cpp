// Document masks and sliding windows (parallel/mask.hpp) in the blocked attention kernel,
// against the double-precision naive attention with an explicit per-element mask.
//
// The naive reference here does not share the kernel's interval logic: it is given a
// (Tq, Tk) boolean matrix built straight from the definition (same document id, causal,
// |i − j| < w), applies it by setting the masked scores to −∞ in double precision and
// runs the same forward/backward math as attention_forward_naive. Tolerances as in
// test_attention.cpp (kTolFwd 1e-5, kTolBwd 3e-5: fp32 sums of at most a few hundred
// terms, ~1e-6 measured), while a wrong tile classification gives errors of O(1).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <vector>

#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"
#include "naive_ops.hpp"
#include "parallel/mask.hpp"

namespace seqpar {
namespace {

constexpr double kTolFwd = 1e-5;
constexpr double kTolBwd = 3e-5;

using naive::norm_err;

// Document ids (B, L) from a list of lengths per row, repeated until L is covered.
std::vector<int64_t> doc_ids(int B, int64_t L, const std::vector<std::vector<int64_t>>& lens) {
  return naive::cycled_doc_ids(B, L, lens);
}

// Reference forward and backward for one (B, L) self-attention with an explicit mask
// allowed(b, i, j), all in double. Layout: q, k, v, dout contiguous (B, L, heads, d).
struct Ref {
  std::vector<float> o, lse, dq, dk, dv;
};
template <class Allowed>
Ref naive(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
          const std::vector<float>& dout, int B, int L, int H, int Hkv, int d, Allowed allowed) {
  Ref r;
  r.o.assign(size_t(B) * L * H * d, 0.0f);
  r.lse.assign(size_t(B) * H * L, 0.0f);
  r.dq.assign(r.o.size(), 0.0f);
  r.dk.assign(size_t(B) * L * Hkv * d, 0.0f);
  r.dv.assign(r.dk.size(), 0.0f);
  const double scale = 1.0 / std::sqrt(double(d));
  const int g = H / Hkv;
  auto Q = [&](int b, int i, int h) { return &q[((size_t(b) * L + i) * H + h) * d]; };
  auto K = [&](int b, int j, int h) { return &k[((size_t(b) * L + j) * Hkv + h) * d]; };
  auto V = [&](int b, int j, int h) { return &v[((size_t(b) * L + j) * Hkv + h) * d]; };
  auto DO = [&](int b, int i, int h) { return &dout[((size_t(b) * L + i) * H + h) * d]; };
  std::vector<double> P(size_t(L) * L), dS(size_t(L) * L);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h) {
      const int hk = h / g;
      for (int i = 0; i < L; ++i) {
        double mx = -INFINITY;
        for (int j = 0; j < L; ++j) {
          double s = -INFINITY;
          if (allowed(b, i, j)) {
            s = 0;
            for (int c = 0; c < d; ++c) s += double(Q(b, i, h)[c]) * K(b, j, hk)[c];
            s *= scale;
          }
          P[size_t(i) * L + j] = s;
          mx = std::max(mx, s);
        }
        double sum = 0;
        for (int j = 0; j < L; ++j) {
          double& e = P[size_t(i) * L + j];
          e = mx == -INFINITY ? 0.0 : std::exp(e - mx);
          sum += e;
        }
        float* o = &r.o[((size_t(b) * L + i) * H + h) * d];
        for (int j = 0; j < L; ++j) P[size_t(i) * L + j] = sum > 0 ? P[size_t(i) * L + j] / sum : 0;
        for (int c = 0; c < d; ++c) {
          double a = 0;
          for (int j = 0; j < L; ++j) a += P[size_t(i) * L + j] * V(b, j, hk)[c];
          o[c] = float(a);
        }
        r.lse[(size_t(b) * H + h) * L + i] =
            sum > 0 ? float(mx + std::log(sum)) : -std::numeric_limits<float>::infinity();
        double delta = 0;
        std::vector<double> dp(L);
        for (int j = 0; j < L; ++j) {
          double x = 0;
          for (int c = 0; c < d; ++c) x += double(DO(b, i, h)[c]) * V(b, j, hk)[c];
          dp[j] = x;
          delta += P[size_t(i) * L + j] * x;
        }
        for (int j = 0; j < L; ++j) dS[size_t(i) * L + j] = P[size_t(i) * L + j] * (dp[j] - delta);
      }
      for (int i = 0; i < L; ++i)
        for (int c = 0; c < d; ++c) {
          double a = 0;
          for (int j = 0; j < L; ++j) a += dS[size_t(i) * L + j] * K(b, j, hk)[c];
          r.dq[((size_t(b) * L + i) * H + h) * d + c] += float(a * scale);
        }
      for (int j = 0; j < L; ++j)
        for (int c = 0; c < d; ++c) {
          double ak = 0, av = 0;
          for (int i = 0; i < L; ++i) {
            ak += dS[size_t(i) * L + j] * Q(b, i, h)[c];
            av += P[size_t(i) * L + j] * DO(b, i, h)[c];
          }
          r.dk[((size_t(b) * L + j) * Hkv + hk) * d + c] += float(ak * scale);
          r.dv[((size_t(b) * L + j) * Hkv + hk) * d + c] += float(av);
        }
    }
  return r;
}

struct Case {
  const char* name;
  int B, L, H, Hkv, d;
  bool causal;
  int64_t window;
  std::vector<std::vector<int64_t>> lens;  // document lengths per row (cycled); {} = one document
};

class MaskedKernel : public testing::TestWithParam<Case> {};

TEST_P(MaskedKernel, MatchesNaiveWithExplicitMask) {
  const Case c = GetParam();
  const int B = c.B, L = c.L, H = c.H, Hkv = c.Hkv, d = c.d;
  std::mt19937 gen(42);
  std::normal_distribution<float> nd;
  std::vector<float> q(size_t(B) * L * H * d), k(size_t(B) * L * Hkv * d), v(k.size()),
      dout(q.size());
  for (auto* x : {&q, &k, &v, &dout})
    for (float& y : *x) y = nd(gen);
  const std::vector<int64_t> ids =
      c.lens.empty() ? std::vector<int64_t>(size_t(B) * L, 0) : doc_ids(B, L, c.lens);
  SeqMask mask = mask_from_doc_ids(ids.data(), B, L, c.window);
  mask.check();
  auto allowed = [&](int b, int i, int j) {
    if (ids[size_t(b) * L + i] != ids[size_t(b) * L + j]) return false;
    if (c.causal && j > i) return false;
    if (c.window > 0 && std::abs(i - j) >= c.window) return false;
    return true;
  };
  const Ref ref = naive(q, k, v, dout, B, L, H, Hkv, d, allowed);

  std::vector<int64_t> pos(L);
  for (int i = 0; i < L; ++i) pos[i] = i;
  MaskBounds mb;
  mb.build(&mask, pos.data(), B, L, c.causal);
  std::vector<float> o(q.size()), lse(size_t(B) * H * L), delta(lse.size()), dq(q.size(), 0.0f),
      dk(k.size(), 0.0f), dv(k.size(), 0.0f), scratch(attention_scratch_floats(d, 0));
  AttnBwdParams p;
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.o = o.data(), p.lse = lse.data();
  p.q_stride = p.o_stride = p.dq_stride = int64_t(H) * d;
  p.q_bstride = p.o_bstride = p.dq_bstride = int64_t(L) * H * d;
  p.kv_stride = p.dkv_stride = int64_t(Hkv) * d;
  p.kv_bstride = p.dkv_bstride = int64_t(L) * Hkv * d;
  p.q_pos = p.k_pos = pos.data();
  p.B = B, p.Tq = p.Tk = L, p.H = H, p.Hkv = Hkv, p.d = d, p.causal = c.causal;
  p.scratch = scratch.data(), p.scratch_floats = int64_t(scratch.size());
  mb.apply(p);
  attention_forward(p);
  EXPECT_LT(norm_err(o, ref.o), kTolFwd) << "O";
  EXPECT_LT(norm_err(lse, ref.lse), kTolFwd) << "LSE";
  attention_delta(delta.data(), dout.data(), p);
  p.dout = dout.data(), p.delta = delta.data(), p.dq = dq.data(), p.dk = dk.data(),
  p.dv = dv.data();
  attention_backward(p);
  EXPECT_LT(norm_err(dq, ref.dq), kTolBwd) << "dQ";
  EXPECT_LT(norm_err(dk, ref.dk), kTolBwd) << "dK";
  EXPECT_LT(norm_err(dv, ref.dv), kTolBwd) << "dV";

  // The per-element rule the strategies use agrees with the definition everywhere.
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < L; ++i)
      for (int j = 0; j < L; ++j)
        ASSERT_EQ(attention_visible(p, b, i, j), allowed(b, i, j)) << b << " " << i << " " << j;
}

std::vector<Case> cases() {
  return {
      // documents shorter than a tile (64 query rows, 128 keys), one of length 1
      {"short_docs", 2, 200, 4, 2, 16, true, 0, {{7, 1, 30, 13}, {50, 1, 1, 90}}},
      // documents longer than a tile, crossing tile boundaries, bidirectional (bert)
      {"long_docs_bidir", 2, 300, 2, 1, 16, false, 0, {{170, 64, 66}, {1, 299}}},
      {"long_docs", 1, 400, 2, 2, 64, true, 0, {{129, 127, 1, 143}}},
      // sliding windows: 1 (each token sees itself), inside a tile, across tiles, >= L
      {"window1", 1, 150, 2, 1, 16, true, 1, {}},
      {"window17", 2, 200, 2, 1, 16, true, 17, {}},
      {"window130", 1, 300, 4, 4, 16, true, 130, {}},
      {"window_ge_L", 1, 100, 2, 1, 16, true, 100, {}},
      {"window_bidir", 1, 200, 2, 1, 16, false, 40, {}},
      // window and documents together
      {"window_docs", 2, 300, 4, 1, 16, true, 50, {{90, 10, 200}, {1, 2, 3, 250}}},
      // a single document per row (the plain causal path through the bounds)
      {"one_doc", 1, 129, 2, 2, 16, true, 0, {{129}}},
  };
}

INSTANTIATE_TEST_SUITE_P(All, MaskedKernel, testing::ValuesIn(cases()),
                         [](const auto& info) { return std::string(info.param.name); });

// SeqMask::bounds is the interval form of the definition.
TEST(SeqMask, BoundsMatchDefinition) {
  const int64_t L = 50;
  const std::vector<int64_t> ids = doc_ids(1, L, {{5, 1, 20, 24}});
  for (int64_t w : {0, 1, 3, 60})
    for (bool causal : {true, false}) {
      const SeqMask m = mask_from_doc_ids(ids.data(), 1, L, w);
      for (int64_t i = 0; i < L; ++i)
        for (int64_t j = 0; j < L; ++j) {
          const bool want =
              ids[i] == ids[j] && (!causal || j <= i) && (w == 0 || std::abs(i - j) < w);
          ASSERT_EQ(m.visible(0, i, j, causal), want) << "w=" << w << " i=" << i << " j=" << j;
        }
    }
}

TEST(SeqMask, BadStartsAreRefused) {
  SeqMask m;
  m.B = 1, m.L = 10, m.doc_starts = {{0, 4, 4}};
  EXPECT_THROW(m.check(), Error);
  m.doc_starts = {{1, 4}};
  EXPECT_THROW(m.check(), Error);
  m.doc_starts = {{0, 12}};
  EXPECT_THROW(m.check(), Error);
}

// any_key_visible agrees with a brute-force search.
TEST(SeqMask, AnyKeyVisibleIsExact) {
  const int64_t L = 64;
  const std::vector<int64_t> ids = doc_ids(1, L, {{10, 3, 20, 31}});
  const SeqMask m = mask_from_doc_ids(ids.data(), 1, L, 6);
  std::vector<int64_t> qpos = {11, 12, 40}, kpos;
  for (int64_t start = 0; start < L; start += 4) {
    kpos.clear();
    for (int64_t j = start; j < std::min(L, start + 4); ++j) kpos.push_back(j);
    bool want = false;
    for (int64_t qp : qpos)
      for (int64_t kp : kpos) want |= m.visible(0, qp, kp, true);
    EXPECT_EQ(any_key_visible(&m, true, 1, qpos.data(), 3, kpos.data(), int64_t(kpos.size())), want)
        << start;
  }
}

}  // namespace
}  // namespace seqpar
