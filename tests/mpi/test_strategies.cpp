// ranks: 1 2 3 4
// Every sequence-parallel strategy against `local` on the same global input.
//
// Each rank builds the same global Q, K, V and dO (B, L, ·) from a fixed seed, runs the
// single-rank reference on the whole sequence, then runs the strategy on its own shard
// (contiguous or zigzag positions) and checks its rows of O, LSE, dQ, dK, dV, and that the
// bytes comm/ counted equal the strategy's analytic volume.
//
// Tolerances: the strategies reorder fp32 sums (block merges by LSE, all-reduces of row
// sums, dQ partials summed across ranks) relative to the reference; with at most a few
// hundred keys per row that is ~1e-6 relative. 1e-5 (forward) and 3e-5 (backward, one more
// level of accumulation) leave margin while any indexing or masking bug is O(1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "core/check.hpp"
#include "naive_ops.hpp"
#include "parallel/attention.hpp"
#include "parallel/layout.hpp"

using namespace seqpar;

namespace {

struct Case {
  std::string strategy;
  bool causal;
  int H, Hkv, d;
  int chunk;  // tokens per shard = chunk (contiguous) or 2·chunk (zigzag)
  ShardLayout layout;
  float dropout;
  int mqsp_micro = 0;
  int usp_u = 0;       // usp Ulysses group size; used where it divides N, else automatic
  bool docs = false;   // packed documents (lengths below), different in each batch row
  int64_t window = 0;  // sliding window (0: none)
  // Any L (issue 9): 0: L = chunk·N (·2 for zigzag); −1: L = N (one token per rank);
  // > 0: this L, whatever N (primes, lengths 2N does not divide): uneven shards.
  int64_t L_fixed = 0;
  // --precision bf16: K|V (and Q) blocks move as bf16. The inputs are rounded to bf16
  // values first, as the model's bf16 QKV storage makes them, so moving them in bf16 is
  // exact and the fp32 tolerances below still hold; the bytes are the bf16 formulas.
  bool bf16 = false;
};

// Document ids (B, L) of a packed batch: row 0 cycles short documents (length 1, shorter
// than a tile, crossing shard boundaries), row 1 has one long document that spans several
// shards and a few short ones.
std::vector<int64_t> packed_doc_ids(int B, int64_t L) {
  return naive::cycled_doc_ids(B, L, {{1, 5, 17, 3, 40, 9, 2, 70}, {L / 2 + 3, 1, 4, 11}});
}

std::string case_name(const testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::string n = c.strategy + (c.causal ? "_causal" : "_bidir") + "_H" + std::to_string(c.H) +
                  "kv" + std::to_string(c.Hkv) + "_d" + std::to_string(c.d) + "_chunk" +
                  std::to_string(c.chunk) + "_" + layout_name(c.layout);
  if (c.dropout > 0) n += "_dropout";
  if (c.mqsp_micro > 0) n += "_m" + std::to_string(c.mqsp_micro);
  if (c.usp_u > 0) n += "_u" + std::to_string(c.usp_u);
  if (c.docs) n += "_docs";
  if (c.window > 0) n += "_w" + std::to_string(c.window);
  if (c.L_fixed != 0) n += c.L_fixed < 0 ? std::string("_LeqN") : "_L" + std::to_string(c.L_fixed);
  if (c.bf16) n += "_bf16";
  return n;
}

// max|a − b| / max(max|b|, floor). The floor keeps gradients that are zero in exact
// arithmetic (a window of 1: each row sees only itself, P = 1, dS = P∘(dP − Δ) = 0, so dQ
// and dK are pure fp32 rounding, ~1e-7) from dividing noise by noise; against O(1) data
// the bound is then 3e-6 absolute, still far below any masking or indexing bug.
double rel_err(const std::vector<float>& a, const std::vector<float>& b, double floor = 1e-30) {
  double num = 0, den = floor;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i]) && a[i] == b[i]) continue;  // LSE of a row that sees no key
    if (!std::isfinite(a[i])) return INFINITY;       // NaN would vanish in std::max
    num = std::max(num, double(std::fabs(a[i] - b[i])));
    den = std::max(den, double(std::fabs(b[i])));
  }
  return num / den;
}

class Strategies : public testing::TestWithParam<Case> {};

TEST_P(Strategies, MatchLocalForwardBackwardAndBytes) {
  const Case c = GetParam();
  Comm world = Comm::world();
  const int N = world.size(), r = world.rank();
  if (c.strategy == "materialized" && N > 1) GTEST_SKIP() << "materialized runs with sp=1 only";
  const int B = 2, W = (c.H + 2 * c.Hkv) * c.d, HD = c.H * c.d;
  const int64_t L = c.L_fixed < 0 ? N
                    : c.L_fixed > 0
                        ? c.L_fixed
                        : int64_t(c.chunk) * N * (c.layout == ShardLayout::zigzag ? 2 : 1);

  // Global inputs, identical on every rank.
  std::mt19937 gen(1234 + c.d);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> qkv(B * L * W), dout(B * L * HD);
  for (auto& x : qkv) x = nd(gen);
  for (auto& x : dout) x = nd(gen);
  if (c.bf16)
    for (auto& x : qkv) x = to_float(to_bf16(x));
  std::vector<int64_t> all_pos(L);
  for (int64_t i = 0; i < L; ++i) all_pos[i] = i;

  AttnShard g{qkv.data(), all_pos.data(), B,         int(L), c.H, c.Hkv, c.d,
              L,          c.causal,       c.dropout, 99,     7,   3};
  SeqMask mask;
  if (c.docs || c.window > 0) {
    const std::vector<int64_t> ids =
        c.docs ? packed_doc_ids(B, L) : std::vector<int64_t>(size_t(B) * L, 0);
    mask = mask_from_doc_ids(ids.data(), B, L, c.window);
    g.mask = &mask;
  }
  std::vector<float> o_ref(B * L * HD), lse_ref(B * c.H * L), dqkv_ref(B * L * W, 0.0f);
  {
    Arena a;
    auto ref = make_attention("local", a, SpSetup{}, B, int(L), c.H, c.Hkv, c.d);
    ref->forward(g, o_ref.data(), lse_ref.data());
    ref->backward(g, o_ref.data(), lse_ref.data(), dout.data(), dqkv_ref.data());
  }

  // This rank's shard.
  const std::vector<int64_t> pos = shard_positions(L, N, r, c.layout);
  const int T = int(pos.size());
  std::vector<float> q_sh(B * T * W), do_sh(B * T * HD);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      std::copy_n(&qkv[(b * L + pos[t]) * W], W, &q_sh[(b * T + t) * W]);
      std::copy_n(&dout[(b * L + pos[t]) * HD], HD, &do_sh[(b * T + t) * HD]);
    }
  Arena arena;
  SpSetup sp{&world, c.layout, L, c.mqsp_micro, c.usp_u > 0 && N % c.usp_u == 0 ? c.usp_u : 0};
  if (c.bf16) sp.precision = Precision::bf16;
  auto strat = make_attention(c.strategy, arena, sp, B, T, c.H, c.Hkv, c.d);
  AttnShard s{q_sh.data(), pos.data(), B, T, c.H, c.Hkv, c.d, L, c.causal, c.dropout, 99, 7, 3};
  s.mask = g.mask;
  std::vector<float> o(B * T * HD), lse(B * c.H * T), dqkv(B * T * W, 0.0f);

  world.stats().reset();
  strat->forward(s, o.data(), lse.data());
  const uint64_t fwd_bytes = world.stats().total_bytes_sent();
  world.stats().reset();
  strat->backward(s, o.data(), lse.data(), do_sh.data(), dqkv.data());
  const uint64_t bwd_bytes = world.stats().total_bytes_sent();

  std::vector<float> o_exp(o.size()), lse_exp(lse.size()), dqkv_exp(dqkv.size());
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      std::copy_n(&o_ref[(b * L + pos[t]) * HD], HD, &o_exp[(b * T + t) * HD]);
      std::copy_n(&dqkv_ref[(b * L + pos[t]) * W], W, &dqkv_exp[(b * T + t) * W]);
      for (int h = 0; h < c.H; ++h)
        lse_exp[(b * c.H + h) * T + t] = lse_ref[(b * c.H + h) * L + pos[t]];
    }
  EXPECT_LT(rel_err(o, o_exp), 1e-5) << "O on rank " << r;
  EXPECT_LT(rel_err(lse, lse_exp), 1e-5) << "LSE on rank " << r;
  // dQ, dK, dV separately, so a failure says which.
  for (int part = 0; part < 3; ++part) {
    const int lo = part == 0 ? 0 : part == 1 ? c.H * c.d : (c.H + c.Hkv) * c.d;
    const int hi = part == 0 ? c.H * c.d : part == 1 ? (c.H + c.Hkv) * c.d : W;
    std::vector<float> got, want;
    for (int64_t row = 0; row < int64_t(B) * T; ++row)
      for (int j = lo; j < hi; ++j) {
        got.push_back(dqkv[row * W + j]);
        want.push_back(dqkv_exp[row * W + j]);
      }
    EXPECT_LT(rel_err(got, want, 0.1), 3e-5) << "d"
                                             << "QKV"[part] << " on rank " << r;
  }
  EXPECT_EQ(fwd_bytes, strat->bytes_forward(s)) << "forward bytes on rank " << r;
  EXPECT_EQ(bwd_bytes, strat->bytes_backward(s)) << "backward bytes on rank " << r;
}

// Strategies that apply document masks and sliding windows (materialized: at sp = 1 only).
std::vector<std::string> masked_strategies() {
  return {"ring", "ulysses", "usp", "mqsp", "rsa", "materialized"};
}

// Strategies that accept any L >= N (shards differing by one unit of the layout).
std::vector<std::string> uneven_strategies() {
  return {"ring", "allgather", "ulysses", "usp", "mqsp", "rsa"};
}

std::vector<Case> cases() {
  std::vector<Case> v;
  // Any L (issue 9): L = N, L prime, zigzag with L not divisible by 2N, striped with a
  // short last stripe; with masks, windows and dropout; multi-tile shards.
  for (std::string st : uneven_strategies())
    for (auto layout : {ShardLayout::contiguous, ShardLayout::zigzag, ShardLayout::striped}) {
      v.push_back({st, true, 4, 2, 16, 1, layout, 0.0f, 0, 0, false, 0, -1});
      v.push_back({st, false, 4, 4, 16, 1, layout, 0.0f, 0, 0, false, 0, -1});
      v.push_back({st, true, 4, 2, 16, 1, layout, 0.0f, 0, 0, false, 0, 97});
      v.push_back({st, false, 6, 2, 16, 1, layout, 0.1f, 0, 0, false, 0, 97});
      v.push_back({st, true, 4, 1, 16, 1, layout, 0.0f, 0, 0, true, 20, 301});
      v.push_back({st, true, 4, 2, 16, 1, layout, 0.1f, 0, 0, true, 0, 1009});
    }
  // Uneven shards with uneven Ulysses heads: GQA groups split across ranks give a rank
  // several kernel pieces (per-row calls, per-row masks), for ulysses and for usp with
  // u = 2 (at N = 4 a ring across two groups whose lengths differ, L_g = 49 and 48 for
  // L = 97 contiguous; 1009 gives groups of 505 and 504, several ring pieces per block).
  for (std::string st : {"ulysses", "usp"})
    for (auto layout : {ShardLayout::contiguous, ShardLayout::zigzag, ShardLayout::striped}) {
      v.push_back({st, true, 6, 3, 16, 1, layout, 0.0f, 0, 2, true, 0, 97});
      v.push_back({st, false, 6, 2, 16, 1, layout, 0.1f, 0, 2, true, 9, 97});
      v.push_back({st, true, 8, 2, 16, 1, layout, 0.0f, 0, 2, false, 0, 1009});
      v.push_back({st, true, 3, 1, 16, 1, layout, 0.0f, 0, 2, false, 0, -1});
    }
  // mqsp with m ≠ N over uneven shards: chunk boundaries ⌊kL/m⌋ fall inside shards of
  // different lengths, so chunks hold several owner segments of uneven length.
  for (auto layout : {ShardLayout::contiguous, ShardLayout::zigzag, ShardLayout::striped}) {
    v.push_back({"mqsp", true, 4, 2, 16, 1, layout, 0.0f, 5, 0, false, 0, 97});
    v.push_back({"mqsp", false, 6, 2, 16, 1, layout, 0.1f, 7, 0, true, 20, 301});
    v.push_back({"mqsp", true, 4, 1, 16, 1, layout, 0.0f, 1, 0, true, 0, 1009});
  }
  for (std::string st : {"ring", "ulysses", "usp", "mqsp", "rsa"})
    for (bool causal : {true, false})
      for (auto layout : {ShardLayout::contiguous, ShardLayout::zigzag}) {
        v.push_back({st, causal, 4, 4, 16, 5, layout, 0.0f});  // MHA, odd shard
        v.push_back({st, causal, 4, 2, 64, 8, layout, 0.0f});  // GQA, d = 64
        v.push_back({st, causal, 6, 1, 16, 3, layout, 0.0f});  // MQA, H not a power of 2
      }
  for (std::string st : {"ring", "ulysses", "usp", "mqsp", "rsa"})
    v.push_back({st, true, 4, 2, 16, 6, ShardLayout::zigzag, 0.1f});            // attention dropout
  v.push_back({"mqsp", true, 4, 2, 16, 12, ShardLayout::contiguous, 0.0f, 3});  // m ≠ N
  v.push_back({"mqsp", false, 4, 4, 16, 7, ShardLayout::contiguous, 0.0f, 1});  // m = 1
  for (std::string st : {"ring", "ulysses", "usp", "mqsp", "rsa"}) {
    // Shards longer than the kernels' tiles (64 query rows, 128 keys), so the tiled and
    // multi-piece paths run: ring splits a block into several kernel calls, rsa its dP
    // tiles, the blocked kernel several tiles per shard.
    v.push_back({st, true, 4, 2, 16, 300, ShardLayout::contiguous, 0.0f});
    v.push_back({st, false, 4, 1, 16, 150, ShardLayout::zigzag, 0.1f});
    // Heads that do not divide by N = 3 or 4: uneven Ulysses head groups with kv heads
    // replicated across ranks, several pieces per rank.
    v.push_back({st, true, 8, 2, 16, 5, ShardLayout::contiguous, 0.0f});
    v.push_back({st, false, 6, 2, 16, 4, ShardLayout::zigzag, 0.0f});
  }
  // bf16 K|V blocks (ring, usp's ring, allgather): causal zigzag, uneven L with documents
  // and a window, multi-piece shards, GQA; every other strategy under bf16 too (they keep
  // fp32 buffers, so this checks the flag changes nothing there).
  for (std::string st : {"ring", "allgather", "usp", "ulysses", "mqsp", "rsa"}) {
    Case a{st, true, 4, 2, 16, 6, ShardLayout::zigzag, 0.1f};
    a.bf16 = true;
    v.push_back(a);
    Case b{st, true, 4, 1, 16, 1, ShardLayout::contiguous, 0.0f, 0, 0, true, 20, 301};
    b.bf16 = true;
    v.push_back(b);
    Case m{st, false, 4, 2, 16, 150, ShardLayout::zigzag, 0.0f};
    m.bf16 = true;
    v.push_back(m);
  }
  // usp with forced Ulysses group sizes (where u divides N): uneven heads inside a
  // group with a ring across groups, and fewer heads than ranks in a group.
  v.push_back({"usp", true, 6, 2, 16, 6, ShardLayout::zigzag, 0.0f, 0, 2});
  v.push_back({"usp", false, 3, 1, 16, 5, ShardLayout::contiguous, 0.1f, 0, 2});
  v.push_back({"usp", true, 2, 1, 16, 4, ShardLayout::contiguous, 0.0f, 0, 4});
  // allgather (issue 9): the unmasked shapes above, and every masked case below.
  for (bool causal : {true, false})
    for (auto layout : {ShardLayout::contiguous, ShardLayout::zigzag}) {
      v.push_back({"allgather", causal, 4, 4, 16, 5, layout, 0.0f});
      v.push_back({"allgather", causal, 4, 2, 64, 8, layout, 0.0f});
      v.push_back({"allgather", causal, 4, 1, 16, 150, layout, 0.1f});
    }
  // The striped layout (issue 9, load balance): stripes of gcd(T, 64) tokens, here 64
  // (T = 128: whole tiles), 1 (T = 5: token round-robin) and 2 (T = 150), with and without
  // masks, for every strategy that runs on several ranks.
  for (std::string st : {"ring", "allgather", "ulysses", "usp", "mqsp", "rsa"}) {
    v.push_back({st, true, 4, 2, 16, 128, ShardLayout::striped, 0.0f});
    v.push_back({st, false, 4, 4, 16, 5, ShardLayout::striped, 0.1f});
    v.push_back({st, true, 4, 2, 16, 150, ShardLayout::striped, 0.0f, 0, 0, true, 0});
    v.push_back({st, true, 4, 1, 16, 128, ShardLayout::striped, 0.0f, 0, 0, true, 40});
  }
  // Document masks and sliding windows (issue 9): documents shorter than a tile, of length
  // 1, longer than a shard and crossing shard boundaries; windows of 1, inside a shard,
  // across shards and >= L; both together; with dropout.
  std::vector<std::string> masked = masked_strategies();
  masked.push_back("allgather");
  for (std::string st : masked)
    for (auto layout : {ShardLayout::contiguous, ShardLayout::zigzag}) {
      v.push_back({st, true, 4, 2, 16, 20, layout, 0.0f, 0, 0, true, 0});
      v.push_back({st, false, 4, 4, 16, 13, layout, 0.0f, 0, 0, true, 0});
      v.push_back({st, true, 4, 1, 16, 150, layout, 0.0f, 0, 0, true, 0});
      v.push_back({st, true, 4, 2, 16, 24, layout, 0.0f, 0, 0, false, 1});
      v.push_back({st, true, 4, 2, 16, 24, layout, 0.0f, 0, 0, false, 9});
      v.push_back({st, true, 2, 1, 16, 150, layout, 0.0f, 0, 0, false, 70});
      v.push_back({st, true, 4, 2, 16, 10, layout, 0.0f, 0, 0, false, 100000});
      v.push_back({st, true, 4, 2, 16, 30, layout, 0.1f, 0, 0, true, 12});
      v.push_back({st, false, 4, 2, 16, 30, layout, 0.0f, 0, 0, true, 7});
      // Heads split across GQA groups give a rank several kernel pieces, so ulysses and
      // usp call per batch row and each call needs its own row's mask: H = 6, Hkv = 3
      // at N = 2 (ulysses) and under u = 2 (usp; at N = 4 with a ring across the two
      // groups, one ring call per row with that row's hop schedule); H = 6, Hkv = 2 at
      // N = 3, 4 (ulysses). Chunk 13: row 0 has a document boundary at 26 = u·T, so at
      // N = 4 (contiguous) ring group 1 needs group 0's block in row 1 only and the
      // per-row hop schedules (and bytes) differ from the union over rows.
      v.push_back({st, true, 6, 3, 16, 13, layout, 0.0f, 0, 2, true, 0});
      v.push_back({st, false, 6, 2, 16, 14, layout, 0.1f, 0, 2, true, 9});
    }
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, Strategies, testing::ValuesIn(cases()), case_name);

// Any L >= N splits, shards differing by at most one unit (a token; a stripe for
// striped) and together holding every position once; L < N is refused naming L and N.
TEST(Layouts, AnyLengthSplitsEvenlyAndShorterThanNIsRefused) {
  for (int N : {1, 2, 3, 4, 7})
    for (int64_t L : {int64_t(N), int64_t(N) + 1, int64_t(2 * N) + 1, int64_t(97), int64_t(1009)})
      for (auto lay : {ShardLayout::contiguous, ShardLayout::zigzag, ShardLayout::striped}) {
        if (L < N) continue;
        std::vector<int> seen(L, 0);
        int64_t lo = L, hi = 0;
        for (int r = 0; r < N; ++r) {
          const auto pos = shard_positions(L, N, r, lay);
          ASSERT_EQ(int64_t(pos.size()), shard_len(L, N, r, lay));
          ASSERT_TRUE(std::is_sorted(pos.begin(), pos.end()));
          lo = std::min<int64_t>(lo, pos.size()), hi = std::max<int64_t>(hi, pos.size());
          for (int64_t p : pos) ++seen[p];
        }
        for (int c : seen) ASSERT_EQ(c, 1) << layout_name(lay) << " L=" << L << " N=" << N;
        const int64_t unit = lay == ShardLayout::striped ? stripe_width(L, N) : 1;
        EXPECT_GE(lo, 1);
        EXPECT_LE(hi - lo, unit) << layout_name(lay) << " L=" << L << " N=" << N;
        EXPECT_EQ(max_shard_len(L, N, lay), hi);
      }
  try {
    shard_positions(3, 4, 0, ShardLayout::zigzag);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("L=3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("sp=4"), std::string::npos) << e.what();
  }
}

TEST(Layouts, StripedDealsStripesRoundRobin) {
  // L = 12, N = 2: T = 6, stripes of gcd(6, 64) = 2 tokens; rank 0 holds stripes 0, 2, 4.
  EXPECT_EQ(shard_positions(12, 2, 0, ShardLayout::striped),
            (std::vector<int64_t>{0, 1, 4, 5, 8, 9}));
  EXPECT_EQ(shard_positions(12, 2, 1, ShardLayout::striped),
            (std::vector<int64_t>{2, 3, 6, 7, 10, 11}));
  // L = 13, N = 2 (uneven): stripes of 4 (the largest power of two <= 6), the last of 1;
  // rank 0 holds stripes 0, 2 (and the short one), rank 1 stripes 1 and 3.
  EXPECT_EQ(shard_positions(13, 2, 0, ShardLayout::striped),
            (std::vector<int64_t>{0, 1, 2, 3, 8, 9, 10, 11}));
  EXPECT_EQ(shard_positions(13, 2, 1, ShardLayout::striped),
            (std::vector<int64_t>{4, 5, 6, 7, 12}));
  // T = 256: stripes of 64 (a query tile); every position exactly once over the ranks.
  std::vector<int> seen(1024, 0);
  for (int r = 0; r < 4; ++r) {
    const auto pos = shard_positions(1024, 4, r, ShardLayout::striped);
    ASSERT_EQ(pos.size(), 256u);
    EXPECT_EQ(pos[63] + 1, pos[64] - 3 * 64);  // next stripe of rank r is N stripes on
    for (int64_t p : pos) ++seen[p];
  }
  for (int c : seen) EXPECT_EQ(c, 1);
  EXPECT_EQ(parse_layout("striped"), ShardLayout::striped);
}

TEST(Layouts, ZigzagHoldsChunksRAndMirror) {
  // L = 16, N = 2: chunks of 4; rank 0 holds chunks 0 and 3, rank 1 chunks 1 and 2.
  EXPECT_EQ(shard_positions(16, 2, 0, ShardLayout::zigzag),
            (std::vector<int64_t>{0, 1, 2, 3, 12, 13, 14, 15}));
  EXPECT_EQ(shard_positions(16, 2, 1, ShardLayout::zigzag),
            (std::vector<int64_t>{4, 5, 6, 7, 8, 9, 10, 11}));
}

}  // namespace

namespace {

class WrongShard : public testing::TestWithParam<std::string> {};

// A shard whose positions are not the layout's, on the last rank only, is refused on
// EVERY rank (the strategies agree on their checks before communicating): no hang.
TEST_P(WrongShard, IsRefusedOnEveryRank) {
  Comm world = Comm::world();
  const int N = world.size(), r = world.rank();
  const int B = 1, H = 4, Hkv = 2, d = 16, W = (H + 2 * Hkv) * d;
  const int64_t L = 8 * N;
  std::vector<int64_t> pos = shard_positions(L, N, r, ShardLayout::contiguous);
  if (r == N - 1) std::swap(pos.front(), pos.back());  // not the layout's order
  const int T = int(pos.size());
  std::vector<float> qkv(B * T * W, 0.5f), o(B * T * H * d), lse(B * H * T);
  Arena arena;
  auto strat = make_attention(GetParam(), arena, SpSetup{&world, ShardLayout::contiguous, L}, B, T,
                              H, Hkv, d);
  AttnShard s{qkv.data(), pos.data(), B, T, H, Hkv, d, L, true};
  try {
    strat->forward(s, o.data(), lse.data());
    ADD_FAILURE() << "no error on rank " << r;
  } catch (const Error& e) {
    const std::string m = e.what();
    if (r == N - 1)
      EXPECT_NE(m.find("position"), std::string::npos) << m;
    else
      EXPECT_NE(m.find("another rank"), std::string::npos) << m;
  }
}

INSTANTIATE_TEST_SUITE_P(All, WrongShard, testing::Values("ring", "ulysses", "usp", "mqsp", "rsa"));

class WrongLength : public testing::TestWithParam<std::string> {};

// A shard one token longer than the layout gives this rank (L = 97, uneven for N > 1) is
// refused at construction, naming the rank, both lengths, the layout, L and sp.
TEST_P(WrongLength, IsRefusedNamingTheValues) {
  Comm world = Comm::world();
  const int N = world.size(), r = world.rank();
  const int64_t L = 97;
  const int want = int(shard_len(L, N, r, ShardLayout::zigzag));
  Arena arena;
  try {
    make_attention(GetParam(), arena, SpSetup{&world, ShardLayout::zigzag, L}, 1, want + 1, 4, 2,
                   16);
    ADD_FAILURE() << "no error on rank " << r;
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const std::string& part :
         {"rank " + std::to_string(r), "T=" + std::to_string(want + 1), std::string("zigzag"),
          std::string("L=97"), "sp=" + std::to_string(N), "gives it " + std::to_string(want)})
      EXPECT_NE(m.find(part), std::string::npos) << "'" << part << "' missing: " << m;
  }
}

INSTANTIATE_TEST_SUITE_P(All, WrongLength, testing::ValuesIn(uneven_strategies()));

}  // namespace

// A window shorter than a shard: under the contiguous layout each rank needs only its own
// block and its left neighbour's, so the ring runs two steps and each block makes one hop
// (and its accumulator one hop home), whatever N: S forward on every rank but the last,
// S more backward on every rank but the first. Bidirectional without a window it is
// (N−1)·S and 2·(N−1)·S. Checked on the counters, not only the formula.
TEST(RingSkips, WindowShorterThanAShardCostsOneHop) {
  Comm world = Comm::world();
  const int N = world.size(), r = world.rank();
  const int B = 1, H = 2, Hkv = 1, d = 16, T = 40, W = (H + 2 * Hkv) * d;
  const int64_t L = int64_t(T) * N;
  std::vector<float> qkv(size_t(B) * T * W, 0.5f), o(size_t(B) * T * H * d), lse(size_t(B) * H * T),
      dqkv(qkv.size(), 0.0f);
  const std::vector<int64_t> pos = shard_positions(L, N, r, ShardLayout::contiguous);
  std::vector<int64_t> ids(size_t(B) * L, 0);
  const SeqMask mask = mask_from_doc_ids(ids.data(), B, L, /*window=*/16);
  Arena arena;
  SpSetup sp{&world, ShardLayout::contiguous, L};
  auto ring = make_attention("ring", arena, sp, B, T, H, Hkv, d);
  AttnShard s{qkv.data(), pos.data(), B, T, H, Hkv, d, L, true, 0.0f, 1, 0, 0};
  s.mask = &mask;
  const uint64_t S = uint64_t(B) * T * 2 * Hkv * d * 4;
  world.stats().reset();
  ring->forward(s, o.data(), lse.data());
  EXPECT_EQ(world.stats().total_bytes_sent(), r < N - 1 ? S : 0);
  world.stats().reset();
  ring->backward(s, o.data(), lse.data(), o.data(), dqkv.data());
  EXPECT_EQ(world.stats().total_bytes_sent(), (r < N - 1 ? S : 0) + (r > 0 ? S : 0));
  // Causal alone: block src is needed by ranks src..N−1, so it stops at N−1 instead of
  // going round; rank r < N−1 forwards blocks 0..r, the last rank none (half the traffic).
  s.mask = nullptr;
  EXPECT_EQ(ring->bytes_forward(s), r < N - 1 ? uint64_t(r + 1) * S : 0);
  s.causal = false;
  EXPECT_EQ(ring->bytes_forward(s), uint64_t(N - 1) * S);
  EXPECT_EQ(ring->bytes_backward(s), 2 * uint64_t(N - 1) * S);
}
