// Packed documents mean what they say: a sequence of three documents packed back to back,
// with the document mask (--pack-documents) and each document's positions restarting at 0
// (--doc-positions reset), gives every token the loss it has when its document runs alone
// (L = the document's length, one document, no mask), and the packed gradient is the sum of
// the three documents' gradients. The same holds with a sliding window (--window), which
// the lone run applies too. Without the mask the later documents' losses change, so the
// comparison can fail. gpt, llama and bert (bidirectional: the mask keeps attention inside
// each document in both directions). And the model reads per-row RoPE positions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "core/arena.hpp"
#include "data/token_file.hpp"
#include "model/model.hpp"
#include "test_models.hpp"
#include "test_util.hpp"
#include "train/data.hpp"

using namespace seqpar;

namespace {

constexpr int kV = 40;  // data vocabulary; EOS = kV − 1; bert's [MASK] = kV
constexpr uint64_t kHash = 0x5eed;

// test::small_model (GQA for llama, F = 96) over the kV-token data.
ModelConfig small_model(ModelKind kind) {
  ModelConfig m = test::small_model({.kind = kind, .Hkv = kind == ModelKind::llama ? 2 : 4});
  m.V = kind == ModelKind::bert ? kV + 1 : kV;
  if (kind == ModelKind::llama) m.F = 96;
  m.init_std = 0.2f;         // weights large enough that attention is far from uniform
  m.tokenizer_hash = kHash;  // a token model: vocabularies below 256 are allowed
  return m;
}

struct Case {
  ModelKind kind;
  int64_t window;
  DocPositions positions;
};

class PackedEqualsOneByOne : public testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    // Documents of 6, 9 and 7 tokens (EOS included), then a lone EOS: 23 tokens, written
    // twice (n = 46). The second half is the validation split (train/data.hpp: at least
    // L + 1 = 23 tokens, from a document start), so with L = 22 the only training window
    // starts at 0 and its L inputs are exactly the first three documents.
    test::write_token_file(path(), kV, kHash, kV - 1,
                           test::random_docs(kV, 3, {5, 8, 6, 0, 5, 8, 6, 0}));
  }
  std::string path() const { return (dir_ / "three.tok").string(); }
  test::TempDir dir_{"packing"};
};

TEST_P(PackedEqualsOneByOne, LossesAndGradients) {
  const Case c = GetParam();
  const int64_t L = 22;
  const std::vector<int64_t> starts = {0, 6, 15}, lens = {6, 9, 7};
  const ModelConfig cfg = small_model(c.kind);
  auto src = make_source(path(), 1, L);
  std::vector<int64_t> all(L);
  for (int64_t i = 0; i < L; ++i) all[i] = i;
  const Batch packed = make_batch(*src, c.kind, 1, 0, 1, L, all, {true, c.positions, c.window});
  ASSERT_EQ(packed.mask.doc_starts.at(0), starts);
  StepContext ctx{1, 0, false};  // no dropout: its keys are global positions, not documents

  Arena a0;
  Model mp(cfg, 1, int(L), a0);
  mp.init_weights(7);
  mp.zero_grad();
  const double packed_sum = mp.forward(packed, ctx);
  const std::vector<float> packed_losses(mp.losses(), mp.losses() + L);
  mp.backward(packed, ctx, 1.0f);

  // Each document alone: its slice of the packed batch's tokens and targets (the same
  // [MASK] choices for bert; the document's last target is −1 for causal kinds, as packed),
  // positions 0..n−1, no documents to mask, the same window.
  double alone_sum = 0;
  std::vector<double> alone_grads(mp.num_params(), 0.0);
  double max_diff_unmasked = 0;
  for (size_t k = 0; k < starts.size(); ++k) {
    const int n = int(lens[k]);
    Batch b;
    b.B = 1;
    b.T = n;
    b.L = n;
    for (int j = 0; j < n; ++j) {
      b.pos.push_back(j);
      b.tokens.push_back(packed.tokens[starts[k] + j]);
      b.targets.push_back(packed.targets[starts[k] + j]);
      b.row_key.push_back(j);
    }
    b.mask.B = 1;
    b.mask.L = n;
    b.mask.window = c.window;
    Arena a;
    Model m(cfg, 1, n, a);
    m.init_weights(7);
    m.zero_grad();
    alone_sum += m.forward(b, ctx);
    m.backward(b, ctx, 1.0f);
    for (int64_t i = 0; i < m.num_params(); ++i) alone_grads[i] += m.grads()[i];
    for (int j = 0; j < n; ++j) {
      const float want = m.losses()[j], got = packed_losses[starts[k] + j];
      // fp32: the same sums in other tile and GEMM blockings (L = 22 rows vs n), ~1e-7
      // relative per operation through two layers; global RoPE positions rotate by other
      // angles, equal scores up to the rounding of cos and sin (RoPE is relative).
      EXPECT_NEAR(got, want, 1e-5f * std::max(1.0f, std::fabs(want)))
          << "document " << k << " token " << j;
    }
  }
  EXPECT_NEAR(packed_sum, alone_sum, 1e-5 * std::fabs(alone_sum));
  double num = 0, den = 0;
  for (int64_t i = 0; i < mp.num_params(); ++i) {
    num = std::max(num, std::fabs(double(mp.grads()[i]) - alone_grads[i]));
    den = std::max(den, std::fabs(alone_grads[i]));
  }
  // Max-normalised: fp32 sums over ~22 rows in another order, ≲ 1e-6; a gradient leaking
  // across a document boundary is O(1) of the largest entry.
  EXPECT_LT(num / den, 1e-5) << "packed gradient vs the sum over the lone documents";

  // Control: the same packed tokens without the document mask. The first document sees
  // only itself anyway (causal); the others see their predecessors and their losses move.
  Batch unmasked = packed;
  unmasked.mask.doc_starts.clear();
  mp.forward(unmasked, ctx);
  for (int64_t p = 0; p < L; ++p)
    max_diff_unmasked =
        std::max(max_diff_unmasked, double(std::fabs(mp.losses()[p] - packed_losses[p])));
  EXPECT_GT(max_diff_unmasked, 1e-3) << "without the mask the documents must interact";
}

void PrintTo(const Case& c, std::ostream* os) {
  *os << model_kind_name(c.kind) << " window " << c.window << " positions "
      << doc_positions_name(c.positions);
}

std::string case_name(const testing::TestParamInfo<Case>& i) {
  return std::string(model_kind_name(i.param.kind)) + "_window" + std::to_string(i.param.window) +
         "_" + doc_positions_name(i.param.positions);
}

INSTANTIATE_TEST_SUITE_P(All, PackedEqualsOneByOne,
                         testing::Values(Case{ModelKind::gpt, 0, DocPositions::reset},
                                         Case{ModelKind::llama, 0, DocPositions::reset},
                                         Case{ModelKind::llama, 4, DocPositions::reset},
                                         Case{ModelKind::llama, 0, DocPositions::global},
                                         Case{ModelKind::bert, 0, DocPositions::reset},
                                         Case{ModelKind::bert, 3, DocPositions::reset}),
                         case_name);

// The model rotates each batch row by its own RoPE positions (Batch::rope_pos): within one
// document RoPE scores depend only on i − j, so reset positions are invisible to the test
// above; positions that are not a shift of the global ones (3·p here) are not.
TEST(PackedRopePositions, EachRowRotatesByItsOwnPositions) {
  const int T = 16;
  ModelConfig cfg = small_model(ModelKind::llama);
  Batch one;
  one.B = 1;
  one.T = one.L = T;
  std::mt19937 rng(5);
  for (int t = 0; t < T; ++t) {
    one.pos.push_back(t);
    one.tokens.push_back(int32_t(rng() % kV));
    one.targets.push_back(int32_t(rng() % kV));
    one.row_key.push_back(t);
  }
  Batch two = one;  // the same row twice, the second rotated by 3·p
  two.B = 2;
  two.tokens.insert(two.tokens.end(), one.tokens.begin(), one.tokens.end());
  two.targets.insert(two.targets.end(), one.targets.begin(), one.targets.end());
  two.row_key.insert(two.row_key.end(), one.row_key.begin(), one.row_key.end());
  for (int t = 0; t < T; ++t) two.rope_pos.push_back(t);
  for (int t = 0; t < T; ++t) two.rope_pos.push_back(3 * t);
  Batch scaled = one;
  for (int t = 0; t < T; ++t) scaled.rope_pos.push_back(3 * t);
  StepContext ctx{1, 0, false};
  auto losses = [&](const Batch& b) {
    Arena a;
    Model m(cfg, b.B, T, a);
    m.init_weights(7);
    m.forward(b, ctx);
    return std::vector<float>(m.losses(), m.losses() + b.B * T);
  };
  const std::vector<float> l1 = losses(one), l2 = losses(two), l3 = losses(scaled);
  double moved = 0;
  for (int t = 0; t < T; ++t) {
    // The same rows, the same angles and products: equal up to the GEMM's blocking of
    // 16 vs 32 rows (fp32 rounding).
    EXPECT_NEAR(l2[t], l1[t], 1e-5f * std::max(1.0f, std::fabs(l1[t]))) << "row 0, token " << t;
    EXPECT_NEAR(l2[T + t], l3[t], 1e-5f * std::max(1.0f, std::fabs(l3[t]))) << "row 1, token " << t;
    moved = std::max(moved, double(std::fabs(l2[T + t] - l1[t])));
  }
  EXPECT_GT(moved, 1e-3) << "positions 3·p must change the second row's losses";
}

}  // namespace
