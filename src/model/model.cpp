#include "model/model.hpp"

#include <cmath>
#include <cstring>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/rng.hpp"
#include "kernels/ops.hpp"

namespace seqpar {

const char* recompute_name(Recompute r) {
  return r == Recompute::none ? "none" : r == Recompute::selective ? "selective" : "full";
}

Recompute parse_recompute(const std::string& s) {
  if (s == "none") return Recompute::none;
  if (s == "selective") return Recompute::selective;
  if (s == "full") return Recompute::full;
  SP_FAIL_USAGE("unknown recompute mode '", s, "' (expected none, selective or full)");
}

int TpSetup::size() const { return comm ? comm->size() : 1; }
int TpSetup::rank() const { return comm ? comm->rank() : 0; }

int kv_heads_per_rank(const ModelConfig& c, int t) { return c.Hkv >= t ? c.Hkv / t : 1; }

int kv_replicas(const ModelConfig& c, int t) { return c.Hkv >= t ? 1 : t / c.Hkv; }

std::vector<ParamSpec> param_specs(const ModelConfig& c, int t, int r) {
  SP_CHECK(t >= 1 && r >= 0 && r < t, "tensor-parallel rank ", r, " of ", t);
  SP_CHECK_USAGE(c.H % t == 0, "heads H=", c.H, " are not divisible by tp=", t,
           " (each tensor-parallel rank owns H/t heads)");
  SP_CHECK(c.Hkv % t == 0 || t % c.Hkv == 0, "kv heads Hkv=", c.Hkv, " and tp=", t,
           " do not fit: each tensor-parallel rank owns Hkv/t kv heads (tp dividing Hkv) or "
           "one kv head replicated on tp/Hkv ranks (Hkv dividing tp)");
  SP_CHECK_USAGE(c.F % t == 0, "ffn width F=", c.F, " is not divisible by tp=", t);
  const int64_t C = c.C, F = c.F, V = c.V, d = c.d(), H = c.H, Hkv = c.Hkv;
  // Hkv ≥ t: this rank's Hkv/t kv heads. Hkv < t: the one kv head its H/t query heads
  // read (group j = r / (t/Hkv)), replicated on the t/Hkv ranks of that group.
  const int64_t Hkvt = kv_heads_per_rank(c, t), kv0 = Hkv >= t ? r * Hkvt : r / (t / Hkv);
  const int64_t Ht = H / t, Ft = F / t, Wt = (Ht + 2 * Hkvt) * d;
  std::vector<ParamSpec> s;
  int64_t off = 0;
  auto add = [&](std::string name, std::vector<int64_t> global, bool decay, int split,
                 std::vector<std::pair<int64_t, int64_t>> segs) {
    std::vector<int64_t> shape = global;
    if (split >= 0) {
      int64_t n = 0;
      for (auto& sg : segs) n += sg.second;
      shape[split] = n;
    }
    int64_t n = 1;
    for (int64_t x : shape) n *= x;
    s.push_back({std::move(name), shape, global, off, n, decay, split < 0, split, std::move(segs)});
    off += n;
  };
  auto lp = [](int l) { return "layers." + std::to_string(l) + "."; };
  // Replicated on every tensor-parallel rank.
  add("wte.weight", {V, C}, true, -1, {});
  for (int l = 0; l < c.n_layer; ++l) {
    add(lp(l) + "ln1.weight", {C}, false, -1, {});
    add(lp(l) + "ln1.bias", {C}, false, -1, {});
    add(lp(l) + "attn.proj.bias", {C}, false, -1, {});
    add(lp(l) + "ln2.weight", {C}, false, -1, {});
    add(lp(l) + "ln2.bias", {C}, false, -1, {});
    add(lp(l) + "mlp.fc2.bias", {C}, false, -1, {});
  }
  add("lnf.weight", {C}, false, -1, {});
  add("lnf.bias", {C}, false, -1, {});
  // Shards: rows [q heads | k heads | v heads] of this rank's heads, its F/t columns.
  const std::vector<std::pair<int64_t, int64_t>> qkv_rows = {
      {r * Ht * d, Ht * d}, {H * d + kv0 * d, Hkvt * d}, {(H + Hkv) * d + kv0 * d, Hkvt * d}};
  for (int l = 0; l < c.n_layer; ++l) {
    add(lp(l) + "attn.qkv.weight", {(H + 2 * Hkv) * d, C}, true, 0, qkv_rows);
    add(lp(l) + "attn.qkv.bias", {(H + 2 * Hkv) * d}, false, 0, qkv_rows);
    add(lp(l) + "attn.proj.weight", {C, H * d}, true, 1, {{r * Ht * d, Ht * d}});
    add(lp(l) + "mlp.fc1.weight", {F, C}, true, 0, {{r * Ft, Ft}});
    add(lp(l) + "mlp.fc1.bias", {F}, false, 0, {{r * Ft, Ft}});
    add(lp(l) + "mlp.fc2.weight", {C, F}, true, 1, {{r * Ft, Ft}});
  }
  (void)Wt;
  return s;
}

namespace {

// Calls fn(shard_index, global_index) for every element of this rank's shard.
template <class Fn>
void for_each_element(const ParamSpec& s, Fn fn) {
  if (s.split_dim < 0) {
    for (int64_t i = 0; i < s.numel; ++i) fn(i, i);
    return;
  }
  const auto& g = s.global_shape;
  if (s.split_dim == 0) {
    int64_t inner = 1;
    for (size_t k = 1; k < g.size(); ++k) inner *= g[k];
    int64_t li = 0;
    for (auto [start, len] : s.segments)
      for (int64_t row = start; row < start + len; ++row)
        for (int64_t j = 0; j < inner; ++j) fn(li++, row * inner + j);
  } else {
    SP_CHECK(g.size() == 2 && s.split_dim == 1, "parameter ", s.name, " split along dim ",
             s.split_dim, " of a ", g.size(), "-d tensor");
    const int64_t cols = s.shape[1];
    for (int64_t row = 0; row < g[0]; ++row) {
      int64_t lc = 0;
      for (auto [start, len] : s.segments)
        for (int64_t col = start; col < start + len; ++col) fn(row * cols + lc++, row * g[1] + col);
    }
  }
}

uint32_t name_hash(const std::string& s) {
  uint32_t h = 2166136261u;
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

}  // namespace

void shard_from_global(const ParamSpec& s, const float* global, float* shard) {
  for_each_element(s, [&](int64_t li, int64_t gi) { shard[li] = global[gi]; });
}

void shard_to_global(const ParamSpec& s, const float* shard, float* global) {
  for_each_element(s, [&](int64_t li, int64_t gi) { global[gi] = shard[li]; });
}

ParamViews param_views(const std::vector<ParamSpec>& specs, int n_layer, float* block) {
  ParamViews v;
  v.layers.resize(n_layer);
  for (const auto& s : specs) {
    float* p = block + s.offset;
    if (s.name == "wte.weight") {
      v.wte = p;
      continue;
    }
    if (s.name == "lnf.weight") {
      v.lnf_w = p;
      continue;
    }
    if (s.name == "lnf.bias") {
      v.lnf_b = p;
      continue;
    }
    const size_t dot = s.name.find('.', 7);
    const int l = std::stoi(s.name.substr(7, dot - 7));
    const std::string f = s.name.substr(dot + 1);
    LayerParams& L = v.layers.at(l);
    if (f == "ln1.weight")
      L.ln1_w = p;
    else if (f == "ln1.bias")
      L.ln1_b = p;
    else if (f == "attn.qkv.weight")
      L.qkv_w = p;
    else if (f == "attn.qkv.bias")
      L.qkv_b = p;
    else if (f == "attn.proj.weight")
      L.proj_w = p;
    else if (f == "attn.proj.bias")
      L.proj_b = p;
    else if (f == "ln2.weight")
      L.ln2_w = p;
    else if (f == "ln2.bias")
      L.ln2_b = p;
    else if (f == "mlp.fc1.weight")
      L.fc1_w = p;
    else if (f == "mlp.fc1.bias")
      L.fc1_b = p;
    else if (f == "mlp.fc2.weight")
      L.fc2_w = p;
    else if (f == "mlp.fc2.bias")
      L.fc2_b = p;
    else
      SP_FAIL("unknown parameter ", s.name);
  }
  return v;
}

Model::Model(const ModelConfig& cfg, int B, int T, Arena& arena, const ModelParallel& par)
    : cfg_(cfg), B_(B), T_(T), par_(par), arena_(arena) {
  cfg_.validate();
  SP_CHECK(B >= 1, "batch B must be >= 1, got ", B);
  SP_CHECK(T >= 1, "local tokens T must be >= 1, got ", T);
  tp_ = par_.tp.size();
  tp_rank_ = par_.tp.rank();
  seq_par_ = par_.tp_sequence_parallel;
  N_ = int64_t(B) * T;
  SP_CHECK(!seq_par_ || N_ % tp_ == 0, "the ", B, "×", T, " = ", N_,
           " rows of the sequence shard do not divide over tp=", tp_,
           " (Megatron sequence parallelism splits them evenly); choose batch·seq_len/sp a "
           "multiple of tp");
  R_ = seq_par_ ? N_ / tp_ : N_;
  specs_ = param_specs(cfg_, tp_, tp_rank_);
  Ht_ = cfg_.H / tp_;
  Hkvt_ = kv_heads_per_rank(cfg_, tp_);
  Ft_ = cfg_.F / tp_;
  n_params_ = specs_.back().offset + specs_.back().numel;
  n_repl_ = 0;
  for (const auto& s : specs_)
    if (s.replicated) n_repl_ = s.offset + s.numel;
  params_ = Buffer(arena, Mem::params, n_params_, "parameters");
  grads_ = Buffer(arena, Mem::grads, n_params_, "gradients");
  pv_ = param_views(specs_, cfg_.n_layer, params_.data());
  gv_ = param_views(specs_, cfg_.n_layer, grads_.data());
  layout_buffers();
  // One strategy instance serves every layer: strategies keep no state between forward
  // and backward beyond what the model passes back (O, LSE).
  SpSetup sp = par_.sp;
  // The materialised baseline keeps P of every layer unless its core is recomputed.
  sp.materialized_layers = par_.recompute == Recompute::none ? cfg_.n_layer : 1;
  attn_.push_back(make_attention(par_.strategy, arena, sp, B, T, Ht_, Hkvt_, cfg_.d()));
}

Model::~Model() = default;

void Model::layout_buffers() {
  const int64_t N = N_, R = R_, C = cfg_.C, V = cfg_.V, d = cfg_.d();
  const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * d, HDt = int64_t(Ht_) * d, Ft = Ft_;
  const Recompute rc = par_.recompute;
  // Floats of each saved tensor of one layer (sizes in one place).
  struct Sizes {
    int64_t x_in, ln1, stats, qkv, att, lse, x_mid, ln2, fc1, gelu;
  } z{R * C, R * C, 2 * R, N * Wt, N * HDt, N * Ht_, R * C, R * C, N * Ft, N * Ft};
  const int64_t all =
      z.x_in + z.ln1 + z.stats + z.qkv + z.att + z.lse + z.x_mid + z.ln2 + z.stats + z.fc1 + z.gelu;
  // What each layer keeps, and what one shared working set holds (recomputed in backward):
  //   none:      everything per layer
  //   selective: everything but the attention core output (recomputed from QKV)
  //   full:      only the layer input; the rest is recomputed from it
  const int64_t per_layer = rc == Recompute::none        ? all
                            : rc == Recompute::selective ? all - z.att
                                                         : z.x_in;
  const int64_t shared = rc == Recompute::none        ? 0
                         : rc == Recompute::selective ? z.att
                                                      : all - z.x_in;
  const int64_t tail = R * C /*x_out*/ + R * C /*lnf*/ + 2 * R + R * V /*logits*/ + R /*losses*/;
  acts_ = Buffer(arena_, Mem::acts, per_layer * cfg_.n_layer + tail, "activations");
  if (shared > 0) work_ = Buffer(arena_, Mem::acts, shared, "recompute working set");
  float* p = acts_.data();
  float* w = work_.data();
  auto take = [](float*& q, int64_t n) {
    float* r = q;
    q += n;
    return r;
  };
  auto fill = [&](LayerActs& a, float*& q, bool with_x_in, bool with_att) {
    if (with_x_in) a.x_in = take(q, z.x_in);
    a.ln1 = take(q, z.ln1);
    a.ln1_mean = take(q, R);
    a.ln1_rstd = take(q, R);
    a.qkv = take(q, z.qkv);
    if (with_att) a.att = take(q, z.att);
    a.lse = take(q, z.lse);
    a.x_mid = take(q, z.x_mid);
    a.ln2 = take(q, z.ln2);
    a.ln2_mean = take(q, R);
    a.ln2_rstd = take(q, R);
    a.fc1 = take(q, z.fc1);
    a.gelu = take(q, z.gelu);
  };
  la_.assign(cfg_.n_layer, LayerActs{});
  if (rc == Recompute::full) fill(wk_, w, false, true);
  if (rc == Recompute::selective) wk_.att = take(w, z.att);
  for (auto& a : la_) {
    if (rc == Recompute::full) {
      a = wk_;
      a.x_in = take(p, z.x_in);
    } else {
      fill(a, p, true, rc == Recompute::none);
      if (rc == Recompute::selective) a.att = wk_.att;
    }
  }
  x_out_ = take(p, R * C);
  lnf_ = take(p, R * C);
  lnf_mean_ = take(p, R);
  lnf_rstd_ = take(p, R);
  logits_ = take(p, R * V);
  losses_ = take(p, R);
  // Backward scratch, reused by every layer.
  const int64_t full = tp_ > 1 && seq_par_ ? N * C : 0;
  const int64_t n_scratch = 3 * R * C + 2 * full + N * Wt + N * HDt + 2 * N * Ft + R * V + R;
  scratch_ = Buffer(arena_, Mem::scratch, n_scratch, "backward scratch");
  p = scratch_.data();
  dx_ = take(p, R * C);
  dtmp_ = take(p, R * C);
  dln_ = take(p, R * C);
  full_ = take(p, full);
  dfull_ = take(p, full);
  dqkv_ = take(p, N * Wt);
  datt_ = take(p, N * HDt);
  dfc1_ = take(p, N * Ft);
  dgelu_ = take(p, N * Ft);
  dlogits_ = take(p, R * V);
  dlosses_ = take(p, R);
}

std::vector<std::pair<int64_t, int64_t>> Model::kv_replica_ranges() const {
  std::vector<std::pair<int64_t, int64_t>> r;
  if (kv_replicas(cfg_, tp_) == 1) return r;
  const int64_t d = cfg_.d(), C = cfg_.C, kv_rows = 2 * int64_t(Hkvt_) * d;
  for (const ParamSpec& s : specs_) {
    // The K and V rows follow this rank's Ht·d query rows of the QKV weight and bias.
    if (s.name.ends_with("attn.qkv.weight")) r.push_back({s.offset + Ht_ * d * C, kv_rows * C});
    if (s.name.ends_with("attn.qkv.bias")) r.push_back({s.offset + Ht_ * d, kv_rows});
  }
  return r;
}

void Model::init_weights(uint64_t seed) {
  if (arena_.dry_run()) return;
  // w ~ N(0, σ²) by Box–Muller on Philox draws keyed by (hash of the name, GLOBAL element
  // index), so every layout initialises the same model. Residual projections (attn.proj,
  // mlp.fc2) use σ/√(2·n_layer) as in GPT-2; LayerNorm weights 1, biases 0.
  const float std_resid = cfg_.init_std / std::sqrt(2.0f * cfg_.n_layer);
  for (const ParamSpec& s : specs_) {
    float* w = params_.data() + s.offset;
    if (s.global_shape.size() == 1) {
      const bool ln_weight =
          s.name.find("ln") != std::string::npos && s.name.find(".weight") != std::string::npos;
      for (int64_t e = 0; e < s.numel; ++e) w[e] = ln_weight ? 1.0f : 0.0f;
      continue;
    }
    const bool resid = s.name.find("attn.proj.weight") != std::string::npos ||
                       s.name.find("mlp.fc2.weight") != std::string::npos;
    const double sd = resid ? std_resid : cfg_.init_std;
    const uint32_t key = name_hash(s.name);
    for_each_element(s, [&](int64_t li, int64_t gi) {
      u32x4 r = philox4x32(
          {uint32_t(gi), uint32_t(uint64_t(gi) >> 32), key, uint32_t(RngSite::init)}, seed);
      double u1 = (double(r[0]) + 1.0) / 4294967296.0, u2 = double(r[1]) / 4294967296.0;
      w[li] = float(sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
    });
  }
}

void Model::zero_grad() {
  if (!arena_.dry_run()) std::memset(grads_.data(), 0, sizeof(float) * n_params_);
}

void Model::gather_rows(const float* part, float* full, int64_t width) {
  par_.tp.comm->allgather(part, full, size_t(R_ * width));
}

void Model::reduce_scatter_rows(const float* full, float* part, int64_t width) {
  par_.tp.comm->reduce_scatter_sum(full, part, size_t(R_ * width));
}

void Model::allreduce_rows(float* x, int64_t width) {
  par_.tp.comm->allreduce_sum(x, size_t(N_ * width));
}

AttnShard Model::shard(int l, const Batch& b, const StepContext& ctx, const LayerActs& a) const {
  AttnShard s{a.qkv,
              b.pos.data(),
              B_,
              T_,
              Ht_,
              Hkvt_,
              cfg_.d(),
              b.L,
              cfg_.causal(),
              ctx.train ? cfg_.attn_dropout : 0.0f,
              ctx.seed,
              ctx.step,
              uint32_t(l)};
  s.head_offset = tp_rank_ * Ht_;  // global head index of local head 0 (dropout keys)
  return s;
}

void Model::attention_forward(int l, const Batch& b, const StepContext& ctx, LayerActs& a) {
  attn_[0]->forward(shard(l, b, ctx, a), a.att, a.lse);
}

void Model::layer_forward(int l, const Batch& b, const StepContext& ctx, LayerActs& a,
                          float* next) {
  const int64_t N = N_, R = R_, C = cfg_.C, d = cfg_.d();
  const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * d, HDt = int64_t(Ht_) * d, Ft = Ft_;
  const LayerParams& P = pv_.layers[l];
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  const int64_t* keys = b.row_key.data() + row_begin();
  // Attention block: LN on this rank's rows; all-gather the sequence; column-parallel QKV.
  layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, a.x_in, P.ln1_w, P.ln1_b, R, C);
  const bool sp = tp_ > 1 && seq_par_;  // Megatron sequence parallelism in the tp group
  const float* in = a.ln1;
  if (sp) {
    gather_rows(a.ln1, full_, C);
    in = full_;
  }
  linear_forward(a.qkv, in, P.qkv_w, P.qkv_b, N, C, Wt);
  rope_forward(a.qkv, b.pos.data(), B_, T_, Ht_, d, Wt, cfg_.rope_theta);
  rope_forward(a.qkv + Ht_ * d, b.pos.data(), B_, T_, Hkvt_, d, Wt, cfg_.rope_theta);
  attention_forward(l, b, ctx, a);
  // Row-parallel proj: partial sums over this rank's heads, reduce-scattered to rows.
  if (tp_ == 1) {
    linear_forward(a.x_mid, a.att, P.proj_w, P.proj_b, N, HDt, C);
  } else if (sp) {
    linear_forward(full_, a.att, P.proj_w, nullptr, N, HDt, C);
    reduce_scatter_rows(full_, a.x_mid, C);
    bias_forward(a.x_mid, P.proj_b, R, C);
  } else {
    linear_forward(a.x_mid, a.att, P.proj_w, nullptr, N, HDt, C);
    allreduce_rows(a.x_mid, C);
    bias_forward(a.x_mid, P.proj_b, R, C);
  }
  if (p_drop > 0)
    dropout_forward(a.x_mid, a.x_mid, keys, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, uint32_t(l), RngSite::attn_out_dropout});
  residual_forward(a.x_mid, a.x_in, a.x_mid, R * C);
  // MLP block, same pattern with FC1 column-parallel and FC2 row-parallel.
  layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.x_mid, P.ln2_w, P.ln2_b, R, C);
  in = a.ln2;
  if (sp) {
    gather_rows(a.ln2, full_, C);
    in = full_;
  }
  linear_forward(a.fc1, in, P.fc1_w, P.fc1_b, N, C, Ft);
  gelu_forward(a.gelu, a.fc1, N * Ft);
  if (tp_ == 1) {
    linear_forward(next, a.gelu, P.fc2_w, P.fc2_b, N, Ft, C);
  } else if (sp) {
    linear_forward(full_, a.gelu, P.fc2_w, nullptr, N, Ft, C);
    reduce_scatter_rows(full_, next, C);
    bias_forward(next, P.fc2_b, R, C);
  } else {
    linear_forward(next, a.gelu, P.fc2_w, nullptr, N, Ft, C);
    allreduce_rows(next, C);
    bias_forward(next, P.fc2_b, R, C);
  }
  if (p_drop > 0)
    dropout_forward(next, next, keys, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, uint32_t(l), RngSite::mlp_out_dropout});
  residual_forward(next, a.x_mid, next, R * C);
}

double Model::forward(const Batch& b, const StepContext& ctx) {
  SP_CHECK(b.B == B_ && b.T == T_, "batch shard is (", b.B, ", ", b.T,
           "), the model was built for (", B_, ", ", T_, ")");
  if (arena_.dry_run()) return 0.0;
  const int64_t R = R_, C = cfg_.C, V = cfg_.V, rb = row_begin();
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  embedding_forward(la_[0].x_in, b.tokens.data() + rb, pv_.wte, R, C, V);
  if (p_drop > 0)
    dropout_forward(la_[0].x_in, la_[0].x_in, b.row_key.data() + rb, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, 0, RngSite::embed_dropout});
  for (int l = 0; l < cfg_.n_layer; ++l)
    layer_forward(l, b, ctx, la_[l], l + 1 < cfg_.n_layer ? la_[l + 1].x_in : x_out_);
  layernorm_forward(lnf_, lnf_mean_, lnf_rstd_, x_out_, pv_.lnf_w, pv_.lnf_b, R, C);
  linear_forward(logits_, lnf_, pv_.wte, nullptr, R, C, V);
  crossentropy_forward(losses_, logits_, b.targets.data() + rb, R, V);
  double sum = 0.0;
  for (int64_t i = 0; i < R; ++i) sum += losses_[i];
  return sum;
}

void Model::backward(const Batch& b, const StepContext& ctx, float loss_scale) {
  if (arena_.dry_run()) return;
  const int64_t N = N_, R = R_, C = cfg_.C, V = cfg_.V, d = cfg_.d(), rb = row_begin();
  const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * d, HDt = int64_t(Ht_) * d, Ft = Ft_;
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  const int64_t* keys = b.row_key.data() + rb;
  auto key = [&](uint32_t layer, RngSite site) {
    return DropoutKey{p_drop, ctx.seed, ctx.step, layer, site};
  };
  auto zero = [](float* x, int64_t n) { std::memset(x, 0, sizeof(float) * n); };
  // tp: Megatron sequence parallelism (sharded rows, gather / reduce-scatter);
  // ar: plain tensor parallelism (all rows everywhere, all-reduce of input gradients).
  const bool tp = tp_ > 1 && seq_par_, ar = tp_ > 1 && !seq_par_;

  for (int64_t i = 0; i < R; ++i) dlosses_[i] = loss_scale;
  zero(dlogits_, R * V);
  crossentropy_backward(dlogits_, logits_, b.targets.data() + rb, dlosses_, R, V);
  zero(dln_, R * C);
  linear_backward(dln_, gv_.wte, nullptr, dlogits_, lnf_, pv_.wte, R, C, V);
  zero(dx_, R * C);
  layernorm_backward(dx_, gv_.lnf_w, gv_.lnf_b, dln_, x_out_, pv_.lnf_w, lnf_mean_, lnf_rstd_, R,
                     C);
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    const LayerParams& P = pv_.layers[l];
    LayerParams& G = gv_.layers[l];
    LayerActs& a = la_[l];
    if (par_.recompute == Recompute::full) layer_forward(l, b, ctx, a, dtmp_);
    if (par_.recompute == Recompute::selective) attention_forward(l, b, ctx, a);
    // dx_ = ∂loss/∂(layer output): into the residual (x_mid) and through dropout(fc2(·)).
    zero(dtmp_, R * C);
    dropout_backward(dtmp_, dx_, keys, R, C, key(l, RngSite::mlp_out_dropout));
    const float* dnext = dtmp_;
    if (tp) {
      bias_backward(G.fc2_b, dtmp_, R, C);
      gather_rows(dtmp_, dfull_, C);  // backward of the reduce-scatter
      dnext = dfull_;
    }
    zero(dgelu_, N * Ft);
    linear_backward(dgelu_, G.fc2_w, tp ? nullptr : G.fc2_b, dnext, a.gelu, P.fc2_w, N, Ft, C);
    zero(dfc1_, N * Ft);
    gelu_backward(dfc1_, a.fc1, dgelu_, N * Ft);
    if (tp) {
      gather_rows(a.ln2, full_, C);  // the input was kept sharded: gather it again
      zero(dfull_, N * C);
      linear_backward(dfull_, G.fc1_w, G.fc1_b, dfc1_, full_, P.fc1_w, N, C, Ft);
      reduce_scatter_rows(dfull_, dln_, C);  // backward of the all-gather
    } else {
      zero(dln_, R * C);
      linear_backward(dln_, G.fc1_w, G.fc1_b, dfc1_, a.ln2, P.fc1_w, N, C, Ft);
      if (ar) allreduce_rows(dln_, C);  // each rank holds its F/t columns' share
    }
    layernorm_backward(dx_, G.ln2_w, G.ln2_b, dln_, a.x_mid, P.ln2_w, a.ln2_mean, a.ln2_rstd, R, C);
    // dx_ = ∂loss/∂x_mid.
    zero(dtmp_, R * C);
    dropout_backward(dtmp_, dx_, keys, R, C, key(l, RngSite::attn_out_dropout));
    dnext = dtmp_;
    if (tp) {
      bias_backward(G.proj_b, dtmp_, R, C);
      gather_rows(dtmp_, dfull_, C);
      dnext = dfull_;
    }
    zero(datt_, N * HDt);
    linear_backward(datt_, G.proj_w, tp ? nullptr : G.proj_b, dnext, a.att, P.proj_w, N, HDt, C);
    zero(dqkv_, N * Wt);
    attn_[0]->backward(shard(l, b, ctx, a), a.att, a.lse, datt_, dqkv_);
    rope_backward(dqkv_, b.pos.data(), B_, T_, Ht_, d, Wt, cfg_.rope_theta);
    rope_backward(dqkv_ + Ht_ * d, b.pos.data(), B_, T_, Hkvt_, d, Wt, cfg_.rope_theta);
    if (tp) {
      gather_rows(a.ln1, full_, C);
      zero(dfull_, N * C);
      linear_backward(dfull_, G.qkv_w, G.qkv_b, dqkv_, full_, P.qkv_w, N, C, Wt);
      reduce_scatter_rows(dfull_, dln_, C);
    } else {
      zero(dln_, R * C);
      linear_backward(dln_, G.qkv_w, G.qkv_b, dqkv_, a.ln1, P.qkv_w, N, C, Wt);
      if (ar) allreduce_rows(dln_, C);
    }
    layernorm_backward(dx_, G.ln1_w, G.ln1_b, dln_, a.x_in, P.ln1_w, a.ln1_mean, a.ln1_rstd, R, C);
    // dx_ = ∂loss/∂x_in.
  }
  zero(dtmp_, R * C);
  dropout_backward(dtmp_, dx_, keys, R, C, key(0, RngSite::embed_dropout));
  embedding_backward(gv_.wte, dtmp_, b.tokens.data() + rb, R, C);
}

}  // namespace seqpar
