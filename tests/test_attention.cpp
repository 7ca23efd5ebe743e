// Blocked attention (kernels/attention.cpp) against the double-precision naive reference,
// plus finite differences, LSE merging across key blocks, shard pairs, dropout, a
// long-sequence memory check and bitwise determinism of backward across runs and thread
// counts.
//
// Tolerances. Errors are normalised: max|a − b| / max|b| over the whole tensor.
//  * forward O, LSE: fp32 sgemm accumulates ≤ a few hundred terms of O(1) values and the
//    exp approximation has rel. error ~2e-7, so the normalised error is ~1e-6 (measured
//    ≤ 1e-6); kTolFwd = 1e-5 leaves an order of magnitude of margin and still catches any
//    indexing or masking bug (those give errors of O(1)).
//  * backward dQ, dK, dV: dS = P∘(dP − Δ) subtracts nearly equal numbers and is then
//    summed again over ≤ T·H/Hkv terms, so allow ~3× more: kTolBwd = 3e-5 (measured
//    ≤ 1e-6 on these shapes).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/arena.hpp"
#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"
#include "naive_ops.hpp"

namespace seqpar {
namespace {

constexpr double kTolFwd = 1e-5;
constexpr double kTolBwd = 3e-5;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using naive::norm_err;

void fill_randn(std::vector<float>& x, uint32_t seed, float sd = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  for (float& v : x) v = nd(gen);
}

// One attention problem with Q/K/V read from a packed (B, T, H + 2·Hkv, d) buffer (or
// three separate contiguous tensors), O/dO contiguous, dQ/dK/dV in a packed gradient
// buffer of the same layout when packed. Queries and keys may have different positions.
struct Problem {
  int B, Tq, Tk, H, Hkv, d;
  bool causal, packed;
  std::vector<float> qkv_q, qkv_kv, o, lse, dout, delta, dq_buf, dkv_buf, scratch;
  std::vector<int64_t> q_pos, k_pos;
  AttnBwdParams p;

  Problem(int B_, int Tq_, int Tk_, int H_, int Hkv_, int d_, bool causal_, bool packed_,
          int64_t q0 = 0, int64_t k0 = 0, uint32_t seed = 1)
      : B(B_), Tq(Tq_), Tk(Tk_), H(H_), Hkv(Hkv_), d(d_), causal(causal_), packed(packed_) {
    const int64_t w = packed ? int64_t{H + 2 * Hkv} * d : 0;
    // With packing, queries live in qkv_q at column 0 and keys/values in qkv_kv at
    // columns H·d and (H + Hkv)·d (two buffers because Tq may differ from Tk).
    const int64_t qs = packed ? w : int64_t{H} * d, kvs = packed ? w : int64_t{Hkv} * d;
    qkv_q.resize(size_t(B) * Tq * qs);
    qkv_kv.resize(size_t(B) * Tk * kvs * (packed ? 1 : 2));
    fill_randn(qkv_q, seed);
    fill_randn(qkv_kv, seed + 1);
    o.assign(size_t(B) * Tq * H * d, 0.0f);
    lse.assign(size_t(B) * H * Tq, 0.0f);
    dout.resize(o.size());
    fill_randn(dout, seed + 2);
    delta.assign(lse.size(), 0.0f);
    dq_buf.assign(size_t(B) * Tq * qs, 0.0f);
    dkv_buf.assign(qkv_kv.size(), 0.0f);
    scratch.assign(attention_scratch_floats(d, 0), 0.0f);
    for (int i = 0; i < Tq; ++i) q_pos.push_back(q0 + i);
    for (int j = 0; j < Tk; ++j) k_pos.push_back(k0 + j);

    p.q = qkv_q.data();
    p.k = packed ? qkv_kv.data() + int64_t{H} * d : qkv_kv.data();
    p.v = packed ? qkv_kv.data() + int64_t{H + Hkv} * d : qkv_kv.data() + size_t(B) * Tk * kvs;
    p.o = o.data();
    p.lse = lse.data();
    p.q_stride = qs, p.q_bstride = Tq * qs;
    p.kv_stride = kvs, p.kv_bstride = Tk * kvs;
    p.o_stride = int64_t{H} * d, p.o_bstride = int64_t{Tq} * H * d;
    p.q_pos = q_pos.data(), p.k_pos = k_pos.data();
    p.B = B, p.Tq = Tq, p.Tk = Tk, p.H = H, p.Hkv = Hkv, p.d = d;
    p.causal = causal;
    p.scratch = scratch.data(), p.scratch_floats = int64_t(scratch.size());
    p.dout = dout.data(), p.delta = delta.data();
    p.dq = dq_buf.data();
    p.dk = packed ? dkv_buf.data() + int64_t{H} * d : dkv_buf.data();
    p.dv = packed ? dkv_buf.data() + int64_t{H + Hkv} * d : dkv_buf.data() + size_t(B) * Tk * kvs;
    p.dq_stride = qs, p.dq_bstride = Tq * qs;
    p.dkv_stride = kvs, p.dkv_bstride = Tk * kvs;
  }
  void zero_grads() {
    std::fill(dq_buf.begin(), dq_buf.end(), 0.0f);
    std::fill(dkv_buf.begin(), dkv_buf.end(), 0.0f);
  }
};

struct Case {
  int B, T, H, Hkv, d;
  bool causal, packed;
};
std::string case_name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::ostringstream os;
  os << "B" << c.B << "_T" << c.T << "_H" << c.H << "kv" << c.Hkv << "_d" << c.d
     << (c.causal ? "_causal" : "_bidir") << (c.packed ? "_packed" : "_sep");
  return os.str();
}

class AttentionVsNaive : public testing::TestWithParam<Case> {};

// Forward O, LSE and backward dQ, dK, dV of the blocked kernel equal the naive reference.
TEST_P(AttentionVsNaive, ForwardBackward) {
  const Case c = GetParam();
  Problem fast(c.B, c.T, c.T, c.H, c.Hkv, c.d, c.causal, c.packed);
  Problem ref(c.B, c.T, c.T, c.H, c.Hkv, c.d, c.causal, c.packed);
  attention_forward(fast.p);
  attention_forward_naive(ref.p);
  EXPECT_LT(norm_err(fast.o, ref.o), kTolFwd);
  EXPECT_LT(norm_err(fast.lse, ref.lse), kTolFwd);
  for (float x : fast.o) ASSERT_TRUE(std::isfinite(x));

  attention_delta(fast.delta.data(), fast.dout.data(), fast.p);
  attention_backward(fast.p);
  attention_backward_naive(ref.p);
  EXPECT_LT(norm_err(fast.dq_buf, ref.dq_buf), kTolBwd);
  EXPECT_LT(norm_err(fast.dkv_buf, ref.dkv_buf), kTolBwd);
  // backward accumulates (+=): a second call doubles every gradient
  std::vector<float> once = fast.dkv_buf;
  attention_backward(fast.p);
  for (float& x : once) x *= 2.0f;
  EXPECT_LT(norm_err(fast.dkv_buf, once), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionVsNaive,
    testing::Values(Case{2, 1, 4, 2, 16, true, true}, Case{2, 1, 4, 4, 64, false, false},
                    Case{2, 7, 4, 2, 16, true, true}, Case{2, 7, 4, 1, 64, false, true},
                    Case{2, 129, 4, 2, 64, true, true}, Case{2, 129, 4, 1, 64, false, true},
                    Case{2, 129, 4, 4, 16, true, false}, Case{2, 129, 4, 1, 16, false, false},
                    Case{1, 300, 2, 1, 64, true, true}, Case{1, 300, 2, 2, 16, false, true}),
    case_name);

// Gradient of the scalar loss ℒ = Σ O∘R by central differences of the naive forward
// (double inside, fp32 out). With eps = 1e-2 the truncation error is O(eps²·ℒ''') ~ 1e-4
// and the fp32 rounding of O contributes ~1e-7·√(T·H·d)/eps ~ 1e-4, so the normalised
// error stays under 5e-4 (measured ~1.5e-5), while a wrong gradient term is off by O(1).
// K and V stored as bf16 (k16 / v16, what the strategies' bf16 K|V blocks hand the kernel):
// the blocked kernel widens them tile by tile and otherwise computes in fp32, so against the
// naive reference on the same (bf16-representable) values it keeps the fp32 tolerances.
// Uneven T (ragged last tiles), GQA, causal and bidirectional, packed and separate.
TEST(Attention, Bf16KeysAndValues) {
  for (bool causal : {true, false})
    for (bool packed : {true, false}) {
      Problem fast(2, 200, 200, 4, 2, 32, causal, packed, 0, 0, 7);
      Problem ref(2, 200, 200, 4, 2, 32, causal, packed, 0, 0, 7);
      for (auto* pr : {&fast, &ref})  // K/V values that bf16 holds exactly
        for (float& x : pr->qkv_kv) x = to_float(to_bf16(x));
      std::vector<bf16> kv16(fast.qkv_kv.size());
      to_bf16(kv16.data(), fast.qkv_kv.data(), int64_t(kv16.size()));
      fast.p.k16 = kv16.data() + (fast.p.k - fast.qkv_kv.data());
      fast.p.v16 = kv16.data() + (fast.p.v - fast.qkv_kv.data());
      fast.p.k = fast.p.v = nullptr;
      std::fill(fast.qkv_kv.begin(), fast.qkv_kv.end(), NAN);  // never read
      attention_forward(fast.p);
      attention_forward_naive(ref.p);
      EXPECT_LT(norm_err(fast.o, ref.o), kTolFwd) << causal << packed;
      EXPECT_LT(norm_err(fast.lse, ref.lse), kTolFwd) << causal << packed;
      attention_delta(fast.delta.data(), fast.dout.data(), fast.p);
      attention_backward(fast.p);
      attention_backward_naive(ref.p);
      EXPECT_LT(norm_err(fast.dq_buf, ref.dq_buf), kTolBwd) << causal << packed;
      EXPECT_LT(norm_err(fast.dkv_buf, ref.dkv_buf), kTolBwd) << causal << packed;
    }
  // A mix (k fp32, v16 bf16) is refused.
  Problem mix(1, 8, 8, 2, 2, 8, true, false);
  std::vector<bf16> v16(mix.qkv_kv.size());
  mix.p.v16 = v16.data();
  mix.p.v = nullptr;
  EXPECT_THROW(attention_forward(mix.p), Error);
}

TEST(Attention, FiniteDifferenceGradient) {
  for (bool causal : {true, false}) {
    Problem pr(1, 7, 7, 2, 1, 16, causal, true, 0, 0, 7);
    attention_forward(pr.p);
    attention_delta(pr.delta.data(), pr.dout.data(), pr.p);  // dO = R
    attention_backward(pr.p);
    Problem fd(1, 7, 7, 2, 1, 16, causal, true, 0, 0, 7);
    auto loss = [&]() {
      attention_forward_naive(fd.p);
      double l = 0.0;
      for (size_t i = 0; i < fd.o.size(); ++i) l += double{fd.o[i]} * fd.dout[i];
      return l;
    };
    std::vector<float> num_q(fd.qkv_q.size()), num_kv(fd.qkv_kv.size());
    auto central = [&](std::vector<float>& x, std::vector<float>& g) {
      const float eps = 1e-2f;
      for (size_t i = 0; i < x.size(); ++i) {
        const float x0 = x[i];
        x[i] = x0 + eps;
        const double lp = loss(), hp = x[i] - x0;
        x[i] = x0 - eps;
        const double lm = loss(), hm = x0 - x[i];
        x[i] = x0;
        g[i] = static_cast<float>((lp - lm) / (hp + hm));
      }
    };
    central(fd.qkv_q, num_q);  // packed: the q columns of the q buffer
    central(fd.qkv_kv, num_kv);
    // In the q buffer only the first H·d columns of each token are Q; the rest are unused
    // and have zero numerical and analytic gradient.
    EXPECT_LT(norm_err(pr.dq_buf, num_q), 5e-4) << "causal=" << causal;
    EXPECT_LT(norm_err(pr.dkv_buf, num_kv), 5e-4) << "causal=" << causal;
  }
}

// Forward over the whole key set == forward over key blocks merged with accumulate=true,
// in an order where the first block is fully masked (causal) for most rows, so merging
// into and from LSE = −∞ is exercised. Backward over the same key blocks, each with the
// full-row LSE and Δ, sums to the one-call gradients.
TEST(Attention, MergeAcrossKeyBlocks) {
  for (bool causal : {true, false}) {
    const int T = 129;
    Problem whole(2, T, T, 4, 2, 32, causal, true);
    attention_forward(whole.p);
    attention_delta(whole.delta.data(), whole.dout.data(), whole.p);
    attention_backward(whole.p);

    Problem split(2, T, T, 4, 2, 32, causal, true);
    std::fill(split.o.begin(), split.o.end(), 0.0f);
    std::fill(split.lse.begin(), split.lse.end(), kNegInf);
    const int cuts[][2] = {{100, 129}, {0, 50}, {50, 100}};
    auto sub = [&](int j0, int j1) {  // the same problem restricted to keys [j0, j1)
      AttnBwdParams q = split.p;
      q.k += j0 * q.kv_stride, q.v += j0 * q.kv_stride;
      q.dk += j0 * q.dkv_stride, q.dv += j0 * q.dkv_stride;
      q.k_pos += j0, q.Tk = j1 - j0;
      return q;
    };
    for (auto& c : cuts) attention_forward(sub(c[0], c[1]), /*accumulate=*/true);
    for (float x : split.o) ASSERT_FALSE(std::isnan(x));
    EXPECT_LT(norm_err(split.o, whole.o), kTolFwd) << "causal=" << causal;
    EXPECT_LT(norm_err(split.lse, whole.lse), kTolFwd) << "causal=" << causal;

    attention_delta(split.delta.data(), split.dout.data(), split.p);
    for (auto& c : cuts) attention_backward(sub(c[0], c[1]));
    EXPECT_LT(norm_err(split.dq_buf, whole.dq_buf), kTolBwd) << "causal=" << causal;
    EXPECT_LT(norm_err(split.dkv_buf, whole.dkv_buf), kTolBwd) << "causal=" << causal;
  }
}

// Shard pairs of a causal sequence of 2T tokens split in two shards of T.
TEST(Attention, ShardPairsByGlobalPosition) {
  const int T = 70;
  // queries [T, 2T) vs keys [0, T): every key visible, same as bidirectional attention
  Problem late(1, T, T, 2, 1, 64, true, false, T, 0);
  Problem ref(1, T, T, 2, 1, 64, false, false, T, 0);
  attention_forward(late.p);
  attention_forward_naive(ref.p);
  EXPECT_LT(norm_err(late.o, ref.o), kTolFwd);
  EXPECT_LT(norm_err(late.lse, ref.lse), kTolFwd);

  // queries [0, T) vs keys [T, 2T): nothing visible: O = 0, LSE = −∞, no gradient
  Problem early(1, T, T, 2, 1, 64, true, false, 0, T);
  attention_forward(early.p);
  for (float x : early.o) ASSERT_EQ(x, 0.0f);
  for (float x : early.lse) ASSERT_EQ(x, kNegInf);
  attention_delta(early.delta.data(), early.dout.data(), early.p);
  attention_backward(early.p);
  for (float x : early.dq_buf) ASSERT_EQ(x, 0.0f);
  for (float x : early.dkv_buf) ASSERT_EQ(x, 0.0f);

  // the full 2T sequence computed shard by shard (query shard 1 over key shards 0, 1)
  // equals rows [T, 2T) of one naive call
  Problem full(1, 2 * T, 2 * T, 2, 1, 64, true, false);
  attention_forward_naive(full.p);
  AttnParams s1 = full.p;  // query shard 1 into its own O/LSE
  std::vector<float> o1(size_t(T) * 2 * 64), lse1(size_t(2) * T);
  s1.q += T * s1.q_stride, s1.q_pos += T, s1.Tq = T;
  s1.o = o1.data(), s1.o_bstride = int64_t(o1.size()), s1.lse = lse1.data();
  AttnParams k0 = s1, k1 = s1;
  k0.Tk = T;
  k1.k += T * k1.kv_stride, k1.v += T * k1.kv_stride, k1.k_pos += T, k1.Tk = T;
  attention_forward(k1);                       // diagonal shard pair first
  attention_forward(k0, /*accumulate=*/true);  // then the fully visible one
  std::vector<float> want_o(full.o.begin() + size_t(T) * 2 * 64, full.o.end());
  std::vector<float> want_lse;
  for (int h = 0; h < 2; ++h)
    for (int i = T; i < 2 * T; ++i) want_lse.push_back(full.lse[size_t(h) * 2 * T + i]);
  EXPECT_LT(norm_err(o1, want_o), kTolFwd);
  EXPECT_LT(norm_err(lse1, want_lse), kTolFwd);
}

// Zigzag shard (causal load balance, N = 2): rank 0 holds chunks 0 and 3 of 4, so its
// query positions jump inside one query block; keys are the whole sequence.
TEST(Attention, ZigzagQueryPositions) {
  const int C = 48, L = 4 * C;
  Problem fast(1, 2 * C, L, 4, 2, 64, true, true);
  Problem ref(1, 2 * C, L, 4, 2, 64, true, true);
  for (Problem* pr : {&fast, &ref})
    for (int i = 0; i < 2 * C; ++i) pr->q_pos[i] = i < C ? i : 3 * C + (i - C);
  attention_forward(fast.p);
  attention_forward_naive(ref.p);
  EXPECT_LT(norm_err(fast.o, ref.o), kTolFwd);
  EXPECT_LT(norm_err(fast.lse, ref.lse), kTolFwd);
  attention_delta(fast.delta.data(), fast.dout.data(), fast.p);
  attention_backward(fast.p);
  attention_backward_naive(ref.p);
  EXPECT_LT(norm_err(fast.dq_buf, ref.dq_buf), kTolBwd);
  EXPECT_LT(norm_err(fast.dkv_buf, ref.dkv_buf), kTolBwd);
}

// Attention-probability dropout: blocked == naive with the same counter-based mask, the
// mask does not depend on key blocking, and it really drops (O differs from p = 0).
TEST(Attention, ProbabilityDropout) {
  for (bool causal : {true, false}) {
    const int T = 129;
    auto make = [&]() {
      auto pr = std::make_unique<Problem>(2, T, T, 4, 2, 16, causal, true);
      pr->p.dropout_p = 0.1f, pr->p.seed = 1234, pr->p.step = 3, pr->p.layer = 2;
      return pr;
    };
    auto fast = make(), ref = make(), split = make(), nodrop = make();
    nodrop->p.dropout_p = 0.0f;
    attention_forward(fast->p);
    attention_forward_naive(ref->p);
    attention_forward(nodrop->p);
    EXPECT_LT(norm_err(fast->o, ref->o), kTolFwd);
    EXPECT_LT(norm_err(fast->lse, ref->lse), kTolFwd);
    EXPECT_GT(norm_err(fast->o, nodrop->o), 1e-2) << "dropout had no effect";
    EXPECT_LT(norm_err(fast->lse, nodrop->lse), kTolFwd) << "LSE must be pre-dropout";

    attention_delta(fast->delta.data(), fast->dout.data(), fast->p);
    attention_backward(fast->p);
    attention_backward_naive(ref->p);
    EXPECT_LT(norm_err(fast->dq_buf, ref->dq_buf), kTolBwd);
    EXPECT_LT(norm_err(fast->dkv_buf, ref->dkv_buf), kTolBwd);

    std::fill(split->lse.begin(), split->lse.end(), kNegInf);
    for (int j0 : {60, 0}) {  // keys [60, 129) then [0, 60)
      AttnBwdParams q = split->p;
      q.k += j0 * q.kv_stride, q.v += j0 * q.kv_stride, q.k_pos += j0;
      q.Tk = j0 == 0 ? 60 : T - 60;
      attention_forward(q, true);
    }
    EXPECT_LT(norm_err(split->o, fast->o), kTolFwd);
  }
}

// L = 4096 causal (B=1, H=2, d=64): every buffer from the arena, whose peak must stay far
// below one L×L fp32 score matrix; the scratch does not grow with L. Correctness: a
// key-split merge equals one call, and spot rows of O/LSE equal a double computation.
TEST(Attention, LongSequenceMemory) {
  const int L = 4096, H = 2, d = 64;
  Arena arena;
  const size_t n = size_t(L) * H * d;
  Buffer q(arena, Mem::acts, n, "q"), k(arena, Mem::acts, n, "k"), v(arena, Mem::acts, n, "v");
  Buffer o(arena, Mem::acts, n, "o"), lse(arena, Mem::acts, size_t(H) * L, "lse");
  Buffer dout(arena, Mem::acts, n, "dout"), delta(arena, Mem::acts, size_t(H) * L, "delta");
  Buffer dq(arena, Mem::grads, n, "dq"), dk(arena, Mem::grads, n, "dk");
  Buffer dv(arena, Mem::grads, n, "dv");
  // scratch for 2 threads whatever the machine: the kernel then runs on ≤ 2 threads, and
  // the scratch bound below does not depend on the core count
  const int64_t sf = attention_scratch_floats(d, 2);
  Buffer scratch(arena, Mem::scratch, size_t(sf), "attention scratch");
  std::mt19937 gen(5);
  std::normal_distribution<float> nd;
  for (Buffer* b : {&q, &k, &v, &dout})
    for (size_t i = 0; i < n; ++i) b->data()[i] = nd(gen);
  std::vector<int64_t> pos(L);
  for (int i = 0; i < L; ++i) pos[i] = i;

  AttnBwdParams p;
  p.q = q.data(), p.k = k.data(), p.v = v.data(), p.o = o.data(), p.lse = lse.data();
  p.q_stride = p.kv_stride = p.o_stride = H * d;
  p.q_bstride = p.kv_bstride = p.o_bstride = int64_t{L} * H * d;
  p.q_pos = p.k_pos = pos.data();
  p.B = 1, p.Tq = L, p.Tk = L, p.H = H, p.Hkv = H, p.d = d, p.causal = true;
  p.scratch = scratch.data(), p.scratch_floats = sf;
  p.dout = dout.data(), p.delta = delta.data();
  p.dq = dq.data(), p.dk = dk.data(), p.dv = dv.data();
  p.dq_stride = p.dkv_stride = H * d;
  p.dq_bstride = p.dkv_bstride = int64_t{L} * H * d;

  attention_forward(p);
  attention_delta(delta.data(), dout.data(), p);
  attention_backward(p);

  const double score_matrix = double(L) * L * sizeof(float);
  EXPECT_LT(double(arena.total_peak()), score_matrix / 2);
  EXPECT_LT(double(arena.peak(Mem::scratch)), score_matrix / 64);

  // spot rows: O and LSE in double straight from the definition
  const double scale = 1.0 / std::sqrt(double(d));
  for (int i : {0, 1, 777, 2048, L - 1})
    for (int h = 0; h < H; ++h) {
      std::vector<double> s(i + 1), acc(d, 0.0);
      double mx = -INFINITY, sum = 0.0;
      for (int j = 0; j <= i; ++j) {
        double x = 0.0;
        for (int c = 0; c < d; ++c)
          x += double{q.data()[(i * H + h) * d + c]} * k.data()[(j * H + h) * d + c];
        s[j] = x * scale, mx = std::max(mx, s[j]);
      }
      for (int j = 0; j <= i; ++j) {
        const double e = std::exp(s[j] - mx);
        sum += e;
        for (int c = 0; c < d; ++c) acc[c] += e * v.data()[(j * H + h) * d + c];
      }
      EXPECT_NEAR(lse.data()[h * L + i], mx + std::log(sum), 1e-4) << "row " << i;
      for (int c = 0; c < d; ++c)
        ASSERT_NEAR(o.data()[(i * H + h) * d + c], acc[c] / sum, 2e-5) << "row " << i;
    }

  // dK/dV from two key halves (full-row LSE, Δ) equal the one-call result
  std::vector<float> dk1(dk.data(), dk.data() + n), dv1(dv.data(), dv.data() + n);
  std::vector<float> dq1(dq.data(), dq.data() + n);
  std::fill(dq.data(), dq.data() + n, 0.0f);
  std::fill(dk.data(), dk.data() + n, 0.0f);
  std::fill(dv.data(), dv.data() + n, 0.0f);
  for (int j0 : {0, L / 2}) {
    AttnBwdParams h = p;
    h.k += j0 * h.kv_stride, h.v += j0 * h.kv_stride, h.k_pos += j0, h.Tk = L / 2;
    h.dk += j0 * h.dkv_stride, h.dv += j0 * h.dkv_stride;
    attention_backward(h);
  }
  auto as_vec = [&](Buffer& b) { return std::vector<float>(b.data(), b.data() + n); };
  EXPECT_LT(norm_err(as_vec(dq), dq1), kTolBwd);
  EXPECT_LT(norm_err(as_vec(dk), dk1), kTolBwd);
  EXPECT_LT(norm_err(as_vec(dv), dv1), kTolBwd);
}

// Backward is bitwise deterministic: the same call twice with 4 threads gives identical
// dQ, dK, dV, and so do 1, 2 and 3 threads (dQ tiles are added in ascending key block
// order whatever the thread timing). Shapes with many key and query blocks, GQA (several
// units per group in flight) and MQA with one batch row (every unit in one group), causal
// with contiguous and with zigzag positions (irregular fully-masked tiles), and
// bidirectional.
TEST(Attention, BackwardBitwiseDeterministic) {
  const int saved = num_threads();
  struct Shape {
    int B, T, H, Hkv, d;
    bool causal, zigzag;
  };
  for (const Shape& c :
       {Shape{2, 777, 4, 2, 32, true, false}, Shape{2, 777, 4, 2, 32, false, false},
        Shape{1, 640, 4, 1, 16, true, true}, Shape{1, 640, 2, 1, 16, false, false}}) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " T=" << c.T << " H=" << c.H << " Hkv="
                                    << c.Hkv << " causal=" << c.causal << " zigzag=" << c.zigzag);
    Problem pr(c.B, c.T, c.T, c.H, c.Hkv, c.d, c.causal, true);
    if (c.zigzag)  // two chunks far apart, as a zigzag shard holds them
      for (int i = 0; i < c.T; ++i) pr.q_pos[i] = pr.k_pos[i] = i < c.T / 2 ? i : 3 * c.T + i;
    pr.scratch.assign(attention_scratch_floats(c.d, 4), 0.0f);
    pr.p.scratch = pr.scratch.data(), pr.p.scratch_floats = int64_t(pr.scratch.size());
    set_num_threads(4);
    attention_forward(pr.p);
    attention_delta(pr.delta.data(), pr.dout.data(), pr.p);
    auto run = [&](int threads) {
      set_num_threads(threads);
      pr.zero_grads();
      attention_backward(pr.p);
      return std::make_pair(pr.dq_buf, pr.dkv_buf);
    };
    const auto first = run(4);
    for (int threads : {4, 4, 1, 2, 3}) {
      const auto again = run(threads);
      EXPECT_TRUE(again.first == first.first) << "dQ differs with " << threads << " threads";
      EXPECT_TRUE(again.second == first.second) << "dK/dV differ with " << threads << " threads";
    }
  }
  set_num_threads(saved);
}

TEST(Attention, ChecksAtEntry) {
  Problem pr(1, 7, 7, 4, 2, 16, true, true);
  auto expect_msg = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error, expected: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  AttnBwdParams p = pr.p;
  p.scratch = nullptr;
  expect_msg([&] { attention_forward(p); }, "scratch is null");
  p = pr.p;
  p.scratch_floats = 10;
  expect_msg([&] { attention_backward(p); }, "scratch_floats=10");
  p = pr.p;
  p.H = 6, p.Hkv = 4;
  expect_msg([&] { attention_forward(p); }, "H=6 not divisible by Hkv=4");
  p = pr.p;
  p.q_pos = nullptr;
  expect_msg([&] { attention_forward(p); }, "q_pos is null");
  p = pr.p;
  p.delta = nullptr;
  expect_msg([&] { attention_backward(p); }, "delta is null");
  p = pr.p;
  p.dropout_p = 1.0f;
  expect_msg([&] { attention_forward(p); }, "dropout_p=1");
}

}  // namespace
}  // namespace seqpar
