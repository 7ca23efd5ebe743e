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
#include "core/check.hpp"
#include "kernels/ops.hpp"
#include "model/model.hpp"
#include "test_util.hpp"
#include "train/checkpoint.hpp"

using namespace seqpar;
using seqpar::test::rel_err;  // max|a − b| / max|b|

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

double max_abs(const std::vector<float>& x) {
  double m = 0;
  for (float v : x) m = std::max(m, double(std::fabs(v)));
  return m;
}

constexpr double kU = 0x1p-24;  // fp32 unit roundoff

// Parameter gradients, as rel_err. A length-k fp32 sum is off by about √k·u times the sum
// of its terms' magnitudes (errors of either sign, a random walk; Higham & Mary 2019); in
// these small random-init models the terms are of the size of the tensor's largest entry,
// hence an error relative to max|b|. A gradient is the end of about D = 50 such sums in
// sequence: per block forward LayerNorm (2 sums), qkv, QKᵀ, softmax, PV, proj, LayerNorm
// (2), fc1, fc2, twice, then lnf, logits and the softmax over V; backward the same again
// plus the sum over the B·T rows. Each is of length k ≤ V = 256, and their errors are
// allowed to add up with the same sign: D·√k·u = 50·16·2⁻²⁴ ≈ 4.8e-5 (measured ≤ 1.7e-6 in
// Release and Debug). A real mistake (a transposed weight, a wrong rotary sign, a missing
// mask) moves a gradient by O(1); TolerancesCatchSmallBugs checks that an error of 1e-3 is
// caught.
constexpr double kGradTol = 50 * 16 * kU;

// AdamW weights after `steps` steps, per element. Adam's step lr·m̂/(√v̂ + eps) does not
// scale with the gradient, so fp32 gradient noise δ counts relative to each element's own
// |g|, not to the tensor's largest: with m̂ = Σ a_s·g_s and v̂ = Σ b_s·g_s² (Σa = Σb = 1)
// a change δ in every g_s moves m̂ by ≤ δ and √v̂ by ≤ δ, so m̂/√v̂ (≤ 1 for betas
// (0.9, 0.95) up to step 3) by ≤ 2δ/√v̂ ≤ 3.6·δ/|g₁|, since v̂ keeps ≥ 0.316·g₁² of the
// first gradient g₁ (the fixture's float64 gradient) up to step 3. Where |g₁| ≲ δ the step
// may even go the other way: at most 2·lr per step. Bound, δ = kGradTol·max|g₁| (the error
// the gradients are allowed), plus fp32 rounding of the weight itself (≤ 1 ulp per step
// and 1/2 storing the fixture):
//   |w − w_ref| ≤ steps·lr·min(2, 3.6·δ/|g₁|) + 4·u·|w_ref|.
// A max|w − w_ref| / max|w_ref| tolerance has no such bound: it is set by whichever entry
// has the smallest |g|, e.g. 1.2e-4 in a Debug build for a layers.0.attn.proj.weight entry
// whose gradient is 3e-6 of the tensor's largest. Returns the worst error / bound (> 1
// fails); a 1% error in the learning rate gives ≫ 1.
double adamw_err(const float* w, const std::vector<float>& w_ref, const std::vector<float>& g1,
                 int steps, double lr) {
  const double delta = kGradTol * max_abs(g1);
  double worst = 0;
  for (size_t i = 0; i < w_ref.size(); ++i) {
    if (!std::isfinite(w[i])) return INFINITY;
    const double g = std::fabs(g1[i]);
    const double step_err = g > 0 ? std::min(2.0, 3.6 * delta / g) : 2.0;
    const double bound = steps * lr * step_err + 4 * kU * std::fabs(w_ref[i]);
    worst = std::max(worst, std::fabs(double(w[i]) - w_ref[i]) / bound);
  }
  return worst;
}

ModelConfig config(ModelKind kind) {
  // Must match `cases` in tools/make_fixture.py.
  ModelConfig c;
  c.kind = kind;
  c.n_layer = 2;
  c.C = 32;
  c.H = 4;
  c.Hkv = kind == ModelKind::bert ? 4 : 2;
  c.F = 64;
  c.V = kind == ModelKind::bert ? 257 : 256;
  if (kind == ModelKind::llama) {  // a subword vocabulary, SwiGLU width 48, untied head
    c.V = 300;
    c.F = 48;
    c.rope_theta = 1000.0f;
    c.tie_embeddings = false;
    c.tokenizer_hash = 1;  // "not bytes": V = 300 is a subword vocabulary
  }
  return c;
}

const char* fixture_file(ModelKind kind) {
  return kind == ModelKind::bert    ? "bert_small.safetensors"
         : kind == ModelKind::llama ? "llama_small.safetensors"
                                    : "gpt_small.safetensors";
}

// The fixture's AdamW: lr 1e-2, betas (0.9, 0.95), eps 1e-8, decay 0.1 on matrices.
constexpr float kLr = 1e-2f;
constexpr int kSteps = 3;

// What the engine computes from the fixture's weights and batch: loss, logits and
// gradients, then the losses of kSteps AdamW steps and the weights after them.
struct EngineRun {
  std::vector<ParamSpec> specs;
  double loss = 0;
  std::vector<float> logits, grads, step_losses, after;
};

// `lr_scale` ≠ 1 runs the optimizer with a wrong learning rate (a deliberate bug).
EngineRun run_engine(ModelKind kind, const Fixture& f, float lr_scale = 1.0f) {
  const int B = 2, T = 24;
  const ModelConfig cfg = config(kind);
  Arena arena;
  Model model(cfg, B, T, arena);
  EngineRun r;
  r.specs = model.specs();
  for (const auto& s : model.specs()) {
    const auto& w = f["param." + s.name];
    SP_CHECK(int64_t(w.size()) == s.numel, s.name, ": fixture has ", w.size(), " floats, ", s.numel,
             " expected");
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
  r.loss = model.forward(b, ctx) / count;
  r.logits = model.logits();
  model.backward(b, ctx, 1.0f / count);
  r.grads.assign(model.grads(), model.grads() + model.num_params());

  std::vector<float> m(model.num_params()), v(model.num_params());
  for (int step = 1; step <= kSteps; ++step) {
    model.zero_grad();
    r.step_losses.push_back(model.forward(b, ctx) / count);
    model.backward(b, ctx, 1.0f / count);
    for (const auto& s : model.specs())
      adamw_update(model.params() + s.offset, model.grads() + s.offset, m.data() + s.offset,
                   v.data() + s.offset, s.numel, kLr * lr_scale, 0.9f, 0.95f, 1e-8f,
                   s.decay ? 0.1f : 0.0f, step);
  }
  r.after.assign(model.params(), model.params() + model.num_params());
  return r;
}

// Gradient rel_err per parameter, and AdamW weight error / bound per parameter.
std::map<std::string, double> grad_errors(const EngineRun& r, const Fixture& f) {
  std::map<std::string, double> e;
  for (const auto& s : r.specs) e[s.name] = rel_err(r.grads.data() + s.offset, f["grad." + s.name]);
  return e;
}

std::map<std::string, double> weight_errors(const EngineRun& r, const Fixture& f) {
  std::map<std::string, double> e;
  for (const auto& s : r.specs)
    e[s.name] = adamw_err(r.after.data() + s.offset, f["after3." + s.name], f["grad." + s.name],
                          kSteps, kLr);
  return e;
}

void check_against_pytorch(ModelKind kind) {
  const Fixture f = load(fixture_file(kind));
  const EngineRun r = run_engine(kind, f);
  EXPECT_NEAR(r.loss, f["loss"][0], 2e-5 * f["loss"][0]);
  EXPECT_LT(rel_err(r.logits.data(), f["logits"]), 2e-5);
  for (const auto& [name, e] : grad_errors(r, f)) EXPECT_LT(e, kGradTol) << "grad of " << name;
  for (int step = 1; step <= kSteps; ++step)
    EXPECT_NEAR(r.step_losses[step - 1], f["step_losses"][step - 1], 5e-5 * r.step_losses[step - 1])
        << "step " << step;
  for (const auto& [name, e] : weight_errors(r, f))
    EXPECT_LE(e, 1.0) << name << " after " << kSteps << " AdamW steps (error / bound)";
}

}  // namespace

TEST(ModelVsPyTorch, GptCausalGqa) { check_against_pytorch(ModelKind::gpt); }
TEST(ModelVsPyTorch, BertMaskedLm) { check_against_pytorch(ModelKind::bert); }
// RMSNorm, SwiGLU, no biases, untied head, GQA, V = 300, θ = 1000; Hugging Face's names.
TEST(ModelVsPyTorch, LlamaSubwordGqaUntied) { check_against_pytorch(ModelKind::llama); }

// The tolerances above catch errors far smaller than a real mistake makes: one gradient
// entry off by 1e-3 of its tensor's scale, and a learning rate 1% off.
TEST(ModelVsPyTorch, TolerancesCatchSmallBugs) {
  const Fixture f = load("gpt_small.safetensors");
  EngineRun r = run_engine(ModelKind::gpt, f);
  for (const auto& s : r.specs) {
    EngineRun bad = r;
    bad.grads[s.offset + s.numel / 2] += 1e-3 * max_abs(f["grad." + s.name]);
    EXPECT_GT(grad_errors(bad, f).at(s.name), kGradTol) << "grad of " << s.name;
  }
  const EngineRun bad_lr = run_engine(ModelKind::gpt, f, 1.01f);
  int caught = 0;
  for (const auto& [name, e] : weight_errors(bad_lr, f)) caught += e > 1.0;
  EXPECT_EQ(caught, int(r.specs.size())) << "tensors whose weights show a 1% lr error";
}
