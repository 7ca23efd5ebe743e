#include "model/model.hpp"

#include <cmath>
#include <cstring>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/rng.hpp"
#include "kernels/ops.hpp"

namespace seqpar {

std::vector<ParamSpec> param_specs(const ModelConfig& c) {
  const int64_t C = c.C, F = c.F, V = c.V, W = c.qkv_width();
  std::vector<ParamSpec> s;
  int64_t off = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    s.push_back({std::move(name), std::move(shape), off, n, decay});
    off += n;
  };
  add("wte.weight", {V, C}, true);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".";
    add(p + "ln1.weight", {C}, false);
    add(p + "ln1.bias", {C}, false);
    add(p + "attn.qkv.weight", {W, C}, true);
    add(p + "attn.qkv.bias", {W}, false);
    add(p + "attn.proj.weight", {C, C}, true);
    add(p + "attn.proj.bias", {C}, false);
    add(p + "ln2.weight", {C}, false);
    add(p + "ln2.bias", {C}, false);
    add(p + "mlp.fc1.weight", {F, C}, true);
    add(p + "mlp.fc1.bias", {F}, false);
    add(p + "mlp.fc2.weight", {C, F}, true);
    add(p + "mlp.fc2.bias", {C}, false);
  }
  add("lnf.weight", {C}, false);
  add("lnf.bias", {C}, false);
  return s;
}

ParamViews param_views(const ModelConfig& c, float* block) {
  auto specs = param_specs(c);
  size_t i = 0;
  auto next = [&]() { return block + specs[i++].offset; };
  ParamViews v;
  v.wte = next();
  v.layers.resize(c.n_layer);
  for (auto& L : v.layers) {
    L.ln1_w = next(); L.ln1_b = next();
    L.qkv_w = next(); L.qkv_b = next();
    L.proj_w = next(); L.proj_b = next();
    L.ln2_w = next(); L.ln2_b = next();
    L.fc1_w = next(); L.fc1_b = next();
    L.fc2_w = next(); L.fc2_b = next();
  }
  v.lnf_w = next();
  v.lnf_b = next();
  return v;
}

namespace {
int64_t total_params(const std::vector<ParamSpec>& s) { return s.back().offset + s.back().numel; }
}  // namespace

Model::Model(const ModelConfig& cfg, int B, int T, Arena& arena, const std::string& strategy,
             const SpSetup& sp)
    : cfg_(cfg), B_(B), T_(T), arena_(arena) {
  cfg_.validate();
  SP_CHECK(B >= 1, "batch B must be >= 1, got ", B);
  SP_CHECK(T >= 1, "local tokens T must be >= 1, got ", T);
  specs_ = param_specs(cfg_);
  n_params_ = total_params(specs_);
  params_ = Buffer(arena, Mem::params, n_params_, "parameters");
  grads_ = Buffer(arena, Mem::grads, n_params_, "gradients");
  pv_ = param_views(cfg_, params_.data());
  gv_ = param_views(cfg_, grads_.data());
  layout_acts();
  attn_ = make_attention(strategy, arena, sp, B, T, cfg_.H, cfg_.Hkv, cfg_.d());
}

Model::~Model() = default;

void Model::layout_acts() {
  const int64_t N = int64_t(B_) * T_, C = cfg_.C, F = cfg_.F, V = cfg_.V, W = cfg_.qkv_width();
  const int64_t HD = int64_t(cfg_.H) * cfg_.d();
  // Activations saved for backward: one block, sizes in one place.
  const int64_t per_layer = N * C /*x_in*/ + N * C /*ln1*/ + 2 * N + N * W + N * HD /*att*/ +
                            N * cfg_.H /*lse*/ + N * C /*x_mid*/ + N * C /*ln2*/ + 2 * N +
                            2 * N * F /*fc1, gelu*/;
  const int64_t tail = N * C /*x_out*/ + N * C /*lnf*/ + 2 * N + N * V /*logits*/ + N /*losses*/;
  acts_ = Buffer(arena_, Mem::acts, per_layer * cfg_.n_layer + tail, "activations");
  float* p = acts_.data();
  auto take = [&](int64_t n) { float* r = p; p += n; return r; };
  la_.resize(cfg_.n_layer);
  for (auto& a : la_) {
    a.x_in = take(N * C);
    a.ln1 = take(N * C);
    a.ln1_mean = take(N);
    a.ln1_rstd = take(N);
    a.qkv = take(N * W);
    a.att = take(N * HD);
    a.lse = take(N * cfg_.H);
    a.x_mid = take(N * C);
    a.ln2 = take(N * C);
    a.ln2_mean = take(N);
    a.ln2_rstd = take(N);
    a.fc1 = take(N * F);
    a.gelu = take(N * F);
  }
  x_out_ = take(N * C);
  lnf_ = take(N * C);
  lnf_mean_ = take(N);
  lnf_rstd_ = take(N);
  logits_ = take(N * V);
  losses_ = take(N);
  // Backward scratch, reused by every layer.
  const int64_t n_scratch = 4 * N * C + N * W + N * HD + 2 * N * F + N * V + N;
  scratch_ = Buffer(arena_, Mem::scratch, n_scratch, "backward scratch");
  p = scratch_.data();
  dx_ = take(N * C);
  dtmp_ = take(N * C);
  dln_ = take(N * C);
  dqkv_ = take(N * W);
  datt_ = take(N * HD);
  dfc1_ = take(N * F);
  dgelu_ = take(N * F);
  dlogits_ = take(N * V);
  dlosses_ = take(N);
}

void Model::init_weights(uint64_t seed) {
  if (arena_.dry_run()) return;
  // w ~ N(0, σ²) by Box–Muller on Philox draws keyed by (parameter index, element);
  // residual projections (attn.proj, mlp.fc2) use σ/√(2·n_layer) as in GPT-2.
  const float std_resid = cfg_.init_std / std::sqrt(2.0f * cfg_.n_layer);
  for (size_t i = 0; i < specs_.size(); ++i) {
    const ParamSpec& s = specs_[i];
    float* w = params_.data() + s.offset;
    const bool is_ln_weight = s.name.find("ln") != std::string::npos &&
                              s.name.find(".weight") != std::string::npos;
    if (s.shape.size() == 1) {
      for (int64_t e = 0; e < s.numel; ++e) w[e] = is_ln_weight ? 1.0f : 0.0f;
      continue;
    }
    const bool resid = s.name.find("attn.proj.weight") != std::string::npos ||
                       s.name.find("mlp.fc2.weight") != std::string::npos;
    const float sd = resid ? std_resid : cfg_.init_std;
    for (int64_t e = 0; e < s.numel; ++e) {
      u32x4 r = philox4x32(rng_counter(uint32_t(e), uint32_t(e >> 32), 0, uint32_t(i), 0,
                                       RngSite::init),
                           seed);
      double u1 = (double(r[0]) + 1.0) / 4294967296.0, u2 = double(r[1]) / 4294967296.0;
      w[e] = float(sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
    }
  }
}

void Model::zero_grad() {
  if (!arena_.dry_run()) std::memset(grads_.data(), 0, sizeof(float) * n_params_);
}

double Model::forward(const Batch& b, const StepContext& ctx) {
  SP_CHECK(b.B == B_ && b.T == T_, "batch shard is (", b.B, ", ", b.T, "), the model was built for (",
           B_, ", ", T_, ")");
  if (arena_.dry_run()) return 0.0;
  const int64_t N = int64_t(B_) * T_, C = cfg_.C, F = cfg_.F, V = cfg_.V, W = cfg_.qkv_width();
  const int H = cfg_.H, Hkv = cfg_.Hkv, d = cfg_.d();
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  auto key = [&](uint32_t layer, RngSite site) {
    return DropoutKey{p_drop, ctx.seed, ctx.step, layer, site};
  };

  embedding_forward(la_[0].x_in, b.tokens.data(), pv_.wte, N, C, V);
  if (p_drop > 0) dropout_forward(la_[0].x_in, la_[0].x_in, b.row_key.data(), N, C,
                                  key(0, RngSite::embed_dropout));
  for (int l = 0; l < cfg_.n_layer; ++l) {
    const LayerParams& P = pv_.layers[l];
    LayerActs& a = la_[l];
    layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, a.x_in, P.ln1_w, P.ln1_b, N, C);
    linear_forward(a.qkv, a.ln1, P.qkv_w, P.qkv_b, N, C, W);
    rope_forward(a.qkv, b.pos.data(), B_, T_, H, d, W, cfg_.rope_theta);
    rope_forward(a.qkv + int64_t(H) * d, b.pos.data(), B_, T_, Hkv, d, W, cfg_.rope_theta);
    AttnShard s{a.qkv, b.pos.data(), B_, T_, H, Hkv, d, b.L, cfg_.causal(),
                ctx.train ? cfg_.attn_dropout : 0.0f, ctx.seed, ctx.step, uint32_t(l)};
    attn_->forward(s, a.att, a.lse);
    linear_forward(a.x_mid, a.att, P.proj_w, P.proj_b, N, C, C);
    if (p_drop > 0) dropout_forward(a.x_mid, a.x_mid, b.row_key.data(), N, C,
                                    key(l, RngSite::attn_out_dropout));
    residual_forward(a.x_mid, a.x_in, a.x_mid, N * C);
    layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.x_mid, P.ln2_w, P.ln2_b, N, C);
    linear_forward(a.fc1, a.ln2, P.fc1_w, P.fc1_b, N, C, F);
    gelu_forward(a.gelu, a.fc1, N * F);
    float* next = l + 1 < cfg_.n_layer ? la_[l + 1].x_in : x_out_;
    linear_forward(next, a.gelu, P.fc2_w, P.fc2_b, N, F, C);
    if (p_drop > 0) dropout_forward(next, next, b.row_key.data(), N, C,
                                    key(l, RngSite::mlp_out_dropout));
    residual_forward(next, a.x_mid, next, N * C);
  }
  layernorm_forward(lnf_, lnf_mean_, lnf_rstd_, x_out_, pv_.lnf_w, pv_.lnf_b, N, C);
  linear_forward(logits_, lnf_, pv_.wte, nullptr, N, C, V);
  crossentropy_forward(losses_, logits_, b.targets.data(), N, V);
  double sum = 0.0;
  for (int64_t i = 0; i < N; ++i) sum += losses_[i];
  return sum;
}

void Model::backward(const Batch& b, const StepContext& ctx, float loss_scale) {
  if (arena_.dry_run()) return;
  const int64_t N = int64_t(B_) * T_, C = cfg_.C, F = cfg_.F, V = cfg_.V, W = cfg_.qkv_width();
  const int H = cfg_.H, Hkv = cfg_.Hkv, d = cfg_.d();
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  auto key = [&](uint32_t layer, RngSite site) {
    return DropoutKey{p_drop, ctx.seed, ctx.step, layer, site};
  };
  auto zero = [](float* x, int64_t n) { std::memset(x, 0, sizeof(float) * n); };

  for (int64_t i = 0; i < N; ++i) dlosses_[i] = loss_scale;
  zero(dlogits_, N * V);
  crossentropy_backward(dlogits_, logits_, b.targets.data(), dlosses_, N, V);
  zero(dln_, N * C);
  linear_backward(dln_, gv_.wte, nullptr, dlogits_, lnf_, pv_.wte, N, C, V);
  zero(dx_, N * C);
  layernorm_backward(dx_, gv_.lnf_w, gv_.lnf_b, dln_, x_out_, pv_.lnf_w, lnf_mean_, lnf_rstd_, N,
                     C);
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    const LayerParams& P = pv_.layers[l];
    LayerParams& G = gv_.layers[l];
    LayerActs& a = la_[l];
    // dx_ = ∂loss/∂(layer output) = ∂/∂x_mid (residual) and ∂/∂ dropout(fc2(·)).
    zero(dtmp_, N * C);
    dropout_backward(dtmp_, dx_, b.row_key.data(), N, C, key(l, RngSite::mlp_out_dropout));
    zero(dgelu_, N * F);
    linear_backward(dgelu_, G.fc2_w, G.fc2_b, dtmp_, a.gelu, P.fc2_w, N, F, C);
    zero(dfc1_, N * F);
    gelu_backward(dfc1_, a.fc1, dgelu_, N * F);
    zero(dln_, N * C);
    linear_backward(dln_, G.fc1_w, G.fc1_b, dfc1_, a.ln2, P.fc1_w, N, C, F);
    layernorm_backward(dx_, G.ln2_w, G.ln2_b, dln_, a.x_mid, P.ln2_w, a.ln2_mean, a.ln2_rstd, N,
                       C);
    // dx_ = ∂loss/∂x_mid.
    zero(dtmp_, N * C);
    dropout_backward(dtmp_, dx_, b.row_key.data(), N, C, key(l, RngSite::attn_out_dropout));
    zero(datt_, N * int64_t(H) * d);
    linear_backward(datt_, G.proj_w, G.proj_b, dtmp_, a.att, P.proj_w, N, C, C);
    zero(dqkv_, N * W);
    AttnShard s{a.qkv, b.pos.data(), B_, T_, H, Hkv, d, b.L, cfg_.causal(),
                ctx.train ? cfg_.attn_dropout : 0.0f, ctx.seed, ctx.step, uint32_t(l)};
    attn_->backward(s, a.att, a.lse, datt_, dqkv_);
    rope_backward(dqkv_, b.pos.data(), B_, T_, H, d, W, cfg_.rope_theta);
    rope_backward(dqkv_ + int64_t(H) * d, b.pos.data(), B_, T_, Hkv, d, W, cfg_.rope_theta);
    zero(dln_, N * C);
    linear_backward(dln_, G.qkv_w, G.qkv_b, dqkv_, a.ln1, P.qkv_w, N, C, W);
    layernorm_backward(dx_, G.ln1_w, G.ln1_b, dln_, a.x_in, P.ln1_w, a.ln1_mean, a.ln1_rstd, N, C);
    // dx_ = ∂loss/∂x_in.
  }
  zero(dtmp_, N * C);
  dropout_backward(dtmp_, dx_, b.row_key.data(), N, C, key(0, RngSite::embed_dropout));
  embedding_backward(gv_.wte, dtmp_, b.tokens.data(), N, C);
}

}  // namespace seqpar
