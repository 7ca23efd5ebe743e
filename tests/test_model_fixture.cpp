// Whole-model check against PyTorch: tools/make_fixture.py builds the same GPT (causal,
// GQA) and BERT (bidirectional, masked LM) in float64 PyTorch from the same weights and
// inputs and stores logits, loss, every parameter gradient and 3 AdamW steps in
// tests/fixtures/*.safetensors. The engine runs in fp32, so the tolerances below are
// fp32 rounding through two blocks (~1e-6 relative per op), not model error: any real
// mistake (a transposed weight, a wrong rotary sign, a missing mask) moves values by O(1).
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/arena.hpp"
#include "kernels/ops.hpp"
#include "model/model.hpp"
#include "train/checkpoint.hpp"

using namespace seqpar;

namespace {

struct Fixture {
  std::map<std::string, NamedTensor> t;
  const std::vector<float>& operator[](const std::string& n) const {
    auto it = t.find(n);
    if (it == t.end()) throw std::runtime_error("fixture has no tensor " + n);
    return it->second.data;
  }
};

Fixture load(const std::string& name) {
  Fixture f;
  for (auto& x : read_safetensors(std::string(SEQPAR_SOURCE_DIR) + "/tests/fixtures/" + name))
    f.t[x.name] = x;
  return f;
}

// max|a − b| / max|b|
double rel_err(const float* a, const std::vector<float>& b) {
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < b.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;  // NaN would vanish in std::max
    num = std::max(num, double(std::fabs(a[i] - b[i])));
    den = std::max(den, double(std::fabs(b[i])));
  }
  return num / den;
}

ModelConfig config(bool bert) {
  // Must match `cases` in tools/make_fixture.py.
  ModelConfig c;
  c.kind = bert ? ModelKind::bert : ModelKind::gpt;
  c.n_layer = 2;
  c.C = 32;
  c.H = 4;
  c.Hkv = bert ? 4 : 2;
  c.F = 64;
  c.V = bert ? 257 : 256;
  return c;
}

void check_against_pytorch(bool bert) {
  const Fixture f = load(bert ? "bert_small.safetensors" : "gpt_small.safetensors");
  const int B = 2, T = 24;
  const ModelConfig cfg = config(bert);
  Arena arena;
  Model model(cfg, B, T, arena);
  for (const auto& s : model.specs()) {
    const auto& w = f["param." + s.name];
    ASSERT_EQ(int64_t(w.size()), s.numel) << s.name;
    std::copy(w.begin(), w.end(), model.params() + s.offset);
  }
  Batch b;
  b.B = B;
  b.T = T;
  b.L = T;
  for (int t = 0; t < T; ++t) b.pos.push_back(t);
  for (float x : f["tokens"]) b.tokens.push_back(int32_t(x));
  for (float x : f["targets"]) b.targets.push_back(int32_t(x));
  for (int i = 0; i < B * T; ++i) b.row_key.push_back(i);
  int count = 0;
  for (int32_t t : b.targets) count += t >= 0;
  StepContext ctx{1, 0, false};

  model.zero_grad();
  const double loss = model.forward(b, ctx) / count;
  EXPECT_NEAR(loss, f["loss"][0], 2e-5 * f["loss"][0]);
  EXPECT_LT(rel_err(model.logits(), f["logits"]), 2e-5);
  model.backward(b, ctx, 1.0f / count);
  for (const auto& s : model.specs())
    EXPECT_LT(rel_err(model.grads() + s.offset, f["grad." + s.name]), 1e-4) << "grad of " << s.name;

  // Three AdamW steps (lr 1e-2, betas (0.9, 0.95), eps 1e-8, decay 0.1 on matrices):
  // the fixture's step losses and final weights. Adam divides by √v̂, which amplifies
  // fp32 gradient noise on near-zero entries, so weights are compared at 1e-4.
  std::vector<float> m(model.num_params()), v(model.num_params());
  for (int step = 1; step <= 3; ++step) {
    model.zero_grad();
    const double l = model.forward(b, ctx) / count;
    EXPECT_NEAR(l, f["step_losses"][step - 1], 5e-5 * l) << "step " << step;
    model.backward(b, ctx, 1.0f / count);
    for (const auto& s : model.specs())
      adamw_update(model.params() + s.offset, model.grads() + s.offset, m.data() + s.offset,
                   v.data() + s.offset, s.numel, 1e-2f, 0.9f, 0.95f, 1e-8f, s.decay ? 0.1f : 0.0f,
                   step);
  }
  for (const auto& s : model.specs())
    EXPECT_LT(rel_err(model.params() + s.offset, f["after3." + s.name]), 1e-4) << s.name;
}

}  // namespace

TEST(ModelVsPyTorch, GptCausalGqa) { check_against_pytorch(false); }
TEST(ModelVsPyTorch, BertMaskedLm) { check_against_pytorch(true); }
