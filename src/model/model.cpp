#include "model/model.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>

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

const char* precision_name(Precision p) { return p == Precision::fp32 ? "fp32" : "bf16"; }

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::fp32;
  if (s == "bf16") return Precision::bf16;
  SP_FAIL_USAGE("unknown precision '", s, "' (expected fp32 or bf16)");
}

const char* loss_name(LossImpl l) { return l == LossImpl::fused ? "fused" : "materialized"; }

LossImpl parse_loss(const std::string& s) {
  if (s == "fused") return LossImpl::fused;
  if (s == "materialized") return LossImpl::materialized;
  SP_FAIL_USAGE("unknown loss '", s, "' (expected fused or materialized)");
}

std::pair<int64_t, int64_t> vocab_range(int64_t V, int t, int r) {
  const int64_t base = V / t, extra = V % t;
  return {r * base + std::min<int64_t>(r, extra), base + (r < extra ? 1 : 0)};
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
  // Embedding and output head: replicated at t = 1; under tensor parallelism split by
  // vocabulary rows (Megatron's vocabulary parallelism), among the shards.
  auto add_vocab = [&](const std::string& embed, const std::string& head) {
    const auto vr = vocab_range(V, t, r);
    const int split = t > 1 ? 0 : -1;
    add(embed, {V, C}, true, split,
        t > 1 ? std::vector<std::pair<int64_t, int64_t>>{vr}
              : std::vector<std::pair<int64_t, int64_t>>{});
    if (!c.tie_embeddings)
      add(head, {V, C}, true, split,
          t > 1 ? std::vector<std::pair<int64_t, int64_t>>{vr}
                : std::vector<std::pair<int64_t, int64_t>>{});
  };
  // Shards: rows [q heads | k heads | v heads] of this rank's heads, its F/t columns.
  const std::vector<std::pair<int64_t, int64_t>> q_rows = {{r * Ht * d, Ht * d}},
                                                 k_rows = {{kv0 * d, Hkvt * d}};
  if (c.llama()) {
    // Hugging Face LLaMA names and [out, in] layouts. q, k, v (and gate, up) follow each
    // other in the block, so this rank's shards form one (Ht + 2·Hkvt)·d × C QKV matrix
    // (and one 2·Ft × C gate|up matrix) for a single product each.
    auto lp = [](int l) { return "model.layers." + std::to_string(l) + "."; };
    if (t == 1) add_vocab("model.embed_tokens.weight", "lm_head.weight");
    for (int l = 0; l < c.n_layer; ++l) {
      add(lp(l) + "input_layernorm.weight", {C}, false, -1, {});
      add(lp(l) + "post_attention_layernorm.weight", {C}, false, -1, {});
    }
    add("model.norm.weight", {C}, false, -1, {});
    if (t > 1) add_vocab("model.embed_tokens.weight", "lm_head.weight");
    for (int l = 0; l < c.n_layer; ++l) {
      add(lp(l) + "self_attn.q_proj.weight", {H * d, C}, true, 0, q_rows);
      add(lp(l) + "self_attn.k_proj.weight", {Hkv * d, C}, true, 0, k_rows);
      add(lp(l) + "self_attn.v_proj.weight", {Hkv * d, C}, true, 0, k_rows);
      add(lp(l) + "self_attn.o_proj.weight", {C, H * d}, true, 1, {{r * Ht * d, Ht * d}});
      add(lp(l) + "mlp.gate_proj.weight", {F, C}, true, 0, {{r * Ft, Ft}});
      add(lp(l) + "mlp.up_proj.weight", {F, C}, true, 0, {{r * Ft, Ft}});
      add(lp(l) + "mlp.down_proj.weight", {C, F}, true, 1, {{r * Ft, Ft}});
    }
    (void)Wt;
    return s;
  }
  auto lp = [](int l) { return "layers." + std::to_string(l) + "."; };
  // Replicated on every tensor-parallel rank.
  if (t == 1) add_vocab("wte.weight", "head.weight");
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
  if (t > 1) add_vocab("wte.weight", "head.weight");
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

std::vector<float> gather_param(const ModelConfig& cfg, size_t i, const float* shard, Comm* tp) {
  const int t = tp ? tp->size() : 1;
  const ParamSpec s = param_specs(cfg, t, tp ? tp->rank() : 0).at(i);
  int64_t n = 1;
  for (int64_t x : s.global_shape) n *= x;
  std::vector<float> g(size_t(n), 0.0f);
  if (s.replicated || t == 1) {
    shard_to_global(s, shard, g.data());
    return g;
  }
  std::vector<ParamSpec> rank_spec;
  std::vector<int64_t> counts;
  int64_t total = 0;
  for (int r = 0; r < t; ++r) {
    rank_spec.push_back(param_specs(cfg, t, r).at(i));
    counts.push_back(rank_spec.back().numel);
    total += counts.back();
  }
  std::vector<float> all(static_cast<size_t>(total));
  tp->allgatherv(shard, all.data(), counts);
  int64_t off = 0;
  for (int r = 0; r < t; ++r) {
    shard_to_global(rank_spec[r], all.data() + off, g.data());
    off += counts[r];
  }
  return g;
}

ParamViews param_views(const std::vector<ParamSpec>& specs, int n_layer, float* block) {
  ParamViews v;
  v.layers.resize(n_layer);
  // Tensor name (after the layer prefix) → view; gpt/bert names, then LLaMA's. LLaMA has no
  // biases (their views stay null); its q (gate) view spans q|k|v (gate|up), which follow
  // each other in the block.
  for (const auto& s : specs) {
    float* p = block + s.offset;
    const std::string& n = s.name;
    if (n == "wte.weight" || n == "model.embed_tokens.weight") {
      v.wte = p;
    } else if (n == "head.weight" || n == "lm_head.weight") {
      v.head = p;
    } else if (n == "lnf.weight" || n == "model.norm.weight") {
      v.lnf_w = p;
    } else if (n == "lnf.bias") {
      v.lnf_b = p;
    } else {
      const size_t at = n.rfind("layers.", 0) == 0 ? 7 : n.rfind("model.layers.", 0) == 0 ? 13 : 0;
      SP_CHECK(at > 0, "unknown parameter ", n);
      const size_t dot = n.find('.', at);
      const int l = std::stoi(n.substr(at, dot - at));
      const std::string f = n.substr(dot + 1);
      LayerParams& L = v.layers.at(l);
      const std::pair<const char*, float**> fields[] = {
          {"ln1.weight", &L.ln1_w},
          {"ln1.bias", &L.ln1_b},
          {"attn.qkv.weight", &L.qkv_w},
          {"attn.qkv.bias", &L.qkv_b},
          {"attn.proj.weight", &L.proj_w},
          {"attn.proj.bias", &L.proj_b},
          {"ln2.weight", &L.ln2_w},
          {"ln2.bias", &L.ln2_b},
          {"mlp.fc1.weight", &L.fc1_w},
          {"mlp.fc1.bias", &L.fc1_b},
          {"mlp.fc2.weight", &L.fc2_w},
          {"mlp.fc2.bias", &L.fc2_b},
          {"input_layernorm.weight", &L.ln1_w},
          {"self_attn.q_proj.weight", &L.qkv_w},
          {"self_attn.o_proj.weight", &L.proj_w},
          {"post_attention_layernorm.weight", &L.ln2_w},
          {"mlp.gate_proj.weight", &L.fc1_w},
          {"mlp.down_proj.weight", &L.fc2_w}};
      bool found = f == "self_attn.k_proj.weight" || f == "self_attn.v_proj.weight" ||
                   f == "mlp.up_proj.weight";  // inside the q|k|v and gate|up views
      for (auto [name, view] : fields)
        if (f == name) *view = p, found = true;
      SP_CHECK(found, "unknown parameter ", n);
    }
  }
  if (!v.head) v.head = v.wte;  // tied
  return v;
}

int param_unit(const ParamSpec& s) {
  const std::string& n = s.name;
  const size_t at = n.rfind("layers.", 0) == 0 ? 7 : n.rfind("model.layers.", 0) == 0 ? 13 : 0;
  if (at == 0) return 0;  // embedding, head, final norm
  return 1 + std::stoi(n.substr(at, n.find('.', at) - at));
}

std::vector<ParamSpec> unit_specs(const std::vector<ParamSpec>& specs, int u) {
  std::vector<ParamSpec> out;
  int64_t off = 0;
  for (const ParamSpec& s : specs)
    if (param_unit(s) == u) {
      out.push_back(s);
      out.back().offset = off;
      off += s.numel;
    }
  return out;
}

void Model::set_unit_views(ParamViews& v, int u, float* block) const {
  const ParamViews w = param_views(unit_specs_[u], cfg_.n_layer, block);
  if (u == 0) {
    v.wte = w.wte;
    v.head = w.head;
    v.lnf_w = w.lnf_w;
    v.lnf_b = w.lnf_b;
  } else {
    v.layers[u - 1] = w.layers[u - 1];
  }
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
  // Megatron sequence parallelism: tp rank t holds ⌊N/tp⌋ + [t < N mod tp] consecutive rows
  // of the flattened (B·T) shard (any N ≥ tp; uneven splits move by all-gather-v and
  // reduce-scatter-v).
  SP_CHECK(!seq_par_ || N_ >= tp_, "the ", B, "×", T, " = ", N_,
           " rows of the sequence shard are fewer than tp=", tp_,
           " (Megatron sequence parallelism gives every tp rank at least one row)");
  R_ = seq_par_ ? N_ / tp_ + (tp_rank_ < N_ % tp_ ? 1 : 0) : N_;
  SP_CHECK_USAGE(par_.precision == Precision::fp32 || tp_ == 1 || cfg_.C % 2 == 0,
                 "--precision bf16 with tp=", tp_, " needs an even width C (got ", cfg_.C,
                 "): the Megatron all-gathers move bf16 rows as pairs of elements");
  specs_ = param_specs(cfg_, tp_, tp_rank_);
  Ht_ = cfg_.H / tp_;
  Hkvt_ = kv_heads_per_rank(cfg_, tp_);
  Ft_ = cfg_.F / tp_;
  std::tie(v0_, Vt_) = vocab_range(cfg_.V, tp_, tp_rank_);
  n_params_ = specs_.back().offset + specs_.back().numel;
  n_repl_ = 0;
  for (const auto& s : specs_)
    if (s.replicated) n_repl_ = s.offset + s.numel;
  if (par_.sharded) {
    src_params_ = par_.sharded->holds_params() ? par_.sharded : nullptr;
    src_grads_ = par_.sharded->holds_grads() ? par_.sharded : nullptr;
    for (int u = 0; u <= cfg_.n_layer; ++u) unit_specs_.push_back(unit_specs(specs_, u));
  }
  // Held by a ParamSource: the views are set unit by unit as it hands the blocks over. An
  // inference model reads another model's block and has no gradients.
  if (!src_params_ && !par_.shared_params)
    params_ = Buffer(arena, Mem::params, n_params_, "parameters");
  if (!src_grads_ && !par_.inference) grads_ = Buffer(arena, Mem::grads, n_params_, "gradients");
  pv_ = param_views(specs_, cfg_.n_layer, par_.shared_params ? par_.shared_params : params_.data());
  gv_ = param_views(specs_, cfg_.n_layer, grads_.data());
  layout_buffers();
  // One strategy instance serves every layer: strategies keep no state between forward
  // and backward beyond what the model passes back (O, LSE).
  SpSetup sp = par_.sp;
  // The materialised baseline keeps P of every layer unless its core is recomputed.
  sp.materialized_layers = par_.recompute == Recompute::none ? cfg_.n_layer : 1;
  sp.precision = par_.precision;
  attn_.push_back(par_.attention
                      ? par_.attention(arena, sp, B, T, Ht_, Hkvt_, cfg_.d())
                      : make_attention(par_.strategy, arena, sp, B, T, Ht_, Hkvt_, cfg_.d()));
}

Model::~Model() = default;

void Model::layout_buffers() {
  const int64_t N = N_, R = R_, C = cfg_.C, V = cfg_.V, d = cfg_.d();
  const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * d, HDt = int64_t(Ht_) * d, Ft = Ft_;
  const int64_t F1t = cfg_.llama() ? 2 * Ft : Ft;  // first feed-forward product: [gate | up]
  const Recompute rc = par_.recompute;
  // Bytes of each saved tensor of one layer (sizes in one place): the S tensors at the
  // storage type's es bytes per element, the statistics (mean|rstd, LSE) fp32; every slot
  // rounded up to whole floats so the fp32 ones stay aligned. (RMSNorm keeps no mean: its
  // slot is allocated all the same, 4·R bytes, to keep one layout.)
  const bool bf = par_.precision == Precision::bf16;
  const int64_t es = bf ? int64_t(sizeof(bf16)) : int64_t(sizeof(float));
  auto S_ = [&](int64_t n) { return (n * es + 3) / 4 * 4; };
  auto F_ = [](int64_t n) { return 4 * n; };
  struct Sizes {
    int64_t x_in, ln1, stats, qkv, att, lse, x_mid, ln2, fc1, gelu;
  } z{S_(R * C),   S_(R * C), F_(2 * R), S_(N * Wt),  S_(N * HDt),
      F_(N * Ht_), S_(R * C), S_(R * C), S_(N * F1t), S_(N * Ft)};
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
  // The head sees all N rows of the sp shard (gathered over tp under Megatron sequence
  // parallelism) and this rank's Vt vocabulary rows; the materialized loss keeps their
  // (N, Vt) logits, the fused one only per-row statistics.
  const bool mat = par_.loss == LossImpl::materialized;
  const int64_t Vt = Vt_, nlog = mat ? N * Vt : 0;
  // x_out in S; lnf, its statistics, the logits, lse and losses fp32 (the head computes in
  // fp32 and keeps nothing else).
  const int64_t tail = S_(R * C) /*x_out*/ + F_(R * C) /*lnf*/ + F_(2 * R) + F_(nlog) +
                       F_(N) /*lse*/ + F_(R) /*losses*/;
  acts_ = Buffer(arena_, Mem::acts, (per_layer * cfg_.n_layer + tail) / 4, "activations");
  if (shared > 0) work_ = Buffer(arena_, Mem::acts, shared / 4, "recompute working set");
  char* p = reinterpret_cast<char*>(acts_.data());
  char* w = reinterpret_cast<char*>(work_.data());
  auto take_b = [](char*& q, int64_t bytes) {  // bytes: a multiple of 4
    char* r = q;
    q += bytes;
    return r;
  };
  auto takef = [&](char*& q, int64_t n) { return reinterpret_cast<float*>(take_b(q, F_(n))); };
  auto fill = [&](LayerActs& a, char*& q, bool with_x_in, bool with_att) {
    if (with_x_in) a.x_in = take_b(q, z.x_in);
    a.ln1 = take_b(q, z.ln1);
    a.ln1_mean = takef(q, R);
    a.ln1_rstd = takef(q, R);
    a.qkv = take_b(q, z.qkv);
    if (with_att) a.att = take_b(q, z.att);
    a.lse = takef(q, N * Ht_);
    a.x_mid = take_b(q, z.x_mid);
    a.ln2 = take_b(q, z.ln2);
    a.ln2_mean = takef(q, R);
    a.ln2_rstd = takef(q, R);
    a.fc1 = take_b(q, z.fc1);
    a.gelu = take_b(q, z.gelu);
  };
  la_.assign(cfg_.n_layer, LayerActs{});
  if (rc == Recompute::full) fill(wk_, w, false, true);
  if (rc == Recompute::selective) wk_.att = take_b(w, z.att);
  for (auto& a : la_) {
    if (rc == Recompute::full) {
      a = wk_;
      a.x_in = take_b(p, z.x_in);
    } else {
      fill(a, p, true, rc == Recompute::none);
      if (rc == Recompute::selective) a.att = wk_.att;
    }
  }
  x_out_ = take_b(p, S_(R * C));
  lnf_ = takef(p, R * C);
  lnf_mean_ = takef(p, R);
  lnf_rstd_ = takef(p, R);
  logits_ = takef(p, nlog);
  lse_ = takef(p, N);
  losses_ = takef(p, R);
  // Backward scratch, reused by every layer.
  const int64_t full = tp_ > 1 && seq_par_ ? N * C : 0;
  const int64_t n_xent = mat ? 0 : fused_xent_scratch_floats(par_.loss_chunks, N, Vt);
  // bf16: the linears' fp32 row tiles, and fp32 QKV and O for the strategies. In forward
  // these widen into dqkv_ and datt_ (idle until backward); in backward into dfc1_ and
  // dgelu_ (idle once the layer's MLP backward is done) when those are large enough.
  // An fp32 inference model keeps only what forward and logits() use: the gathered rows
  // (tp) and one row of logits; no gradient buffers and no loss statistics.
  const int64_t bw = par_.inference && !bf ? 0 : 1;
  const int64_t n_lin =
      bf ? linear_scratch_floats(std::max({C, HDt, Ft}), std::max({Wt, C, F1t})) : 0;
  const int64_t n_qkv32 = bf && F1t < Wt ? N * Wt : 0, n_o32 = bf && Ft < HDt ? N * HDt : 0;
  const int64_t n_scratch =
      bw * (3 * R * C + full + N * Wt + N * HDt + N * F1t + N * Ft + nlog + 4 * N + n_xent) + full +
      Vt + n_lin + n_qkv32 + n_o32;
  scratch_ = Buffer(arena_, Mem::scratch, n_scratch, "backward scratch");
  float* f = scratch_.data();
  auto take = [](float*& q, int64_t n) {
    float* r = q;
    q += n;
    return r;
  };
  dx_ = take(f, bw * R * C);
  dtmp_ = take(f, bw * R * C);
  dln_ = take(f, bw * R * C);
  full_ = take(f, full);
  dfull_ = take(f, bw * full);
  dqkv_ = take(f, bw * N * Wt);
  datt_ = take(f, bw * N * HDt);
  dfc1_ = take(f, bw * N * F1t);
  dgelu_ = take(f, bw * N * Ft);
  dlogits_ = take(f, bw * nlog);
  dlosses_ = take(f, bw * N);
  xent_m_ = take(f, bw * N);
  xent_s_ = take(f, bw * N);
  xent_zt_ = take(f, bw * N);
  xent_scratch_ = take(f, bw * n_xent);
  row_logits_ = take(f, Vt);
  lin_scratch_ = take(f, n_lin);
  bwd_qkv32_ = n_qkv32 ? take(f, n_qkv32) : dfc1_;
  bwd_o32_ = n_o32 ? take(f, n_o32) : dgelu_;
  (void)V;
}

std::vector<std::pair<int64_t, int64_t>> Model::kv_replica_ranges() const {
  return seqpar::kv_replica_ranges(cfg_, specs_, tp_);
}

std::vector<std::pair<int64_t, int64_t>> kv_replica_ranges(const ModelConfig& c,
                                                           const std::vector<ParamSpec>& specs,
                                                           int tp) {
  std::vector<std::pair<int64_t, int64_t>> r;
  if (kv_replicas(c, tp) == 1) return r;
  const int64_t d = c.d(), C = c.C, kv_rows = 2 * int64_t(kv_heads_per_rank(c, tp)) * d;
  const int64_t Ht = c.H / tp;
  for (const ParamSpec& s : specs) {
    // The K and V rows follow this rank's Ht·d query rows of the QKV weight and bias.
    if (s.name.ends_with("attn.qkv.weight")) r.push_back({s.offset + Ht * d * C, kv_rows * C});
    if (s.name.ends_with("attn.qkv.bias")) r.push_back({s.offset + Ht * d, kv_rows});
    if (s.name.ends_with("self_attn.k_proj.weight") || s.name.ends_with("self_attn.v_proj.weight"))
      r.push_back({s.offset, s.numel});
  }
  return r;
}

void Model::init_weights(uint64_t seed) {
  if (arena_.dry_run()) return;
  SP_CHECK(params_.data(),
           "init_weights: the parameters are held by a ParamSource (ZeRO 3); "
           "initialise them through it (TrainState::init_weights)");
  init_params(cfg_, specs_, params_.data(), seed);
}

void init_params(const ModelConfig& c, const std::vector<ParamSpec>& specs, float* block,
                 uint64_t seed) {
  // w ~ N(0, σ²) by Box–Muller on Philox draws keyed by (hash of the name, GLOBAL element
  // index), so every layout initialises the same model. Residual projections (attn.proj,
  // mlp.fc2) use σ/√(2·n_layer) as in GPT-2; LayerNorm weights 1, biases 0.
  const float std_resid = c.init_std / std::sqrt(2.0f * c.n_layer);
  for (const ParamSpec& s : specs) {
    float* w = block + s.offset;
    if (s.global_shape.size() == 1) {  // norm weights 1, biases 0
      const bool norm_weight = s.name.ends_with(".weight");
      for (int64_t e = 0; e < s.numel; ++e) w[e] = norm_weight ? 1.0f : 0.0f;
      continue;
    }
    const bool resid = s.name.ends_with("attn.proj.weight") || s.name.ends_with("mlp.fc2.weight") ||
                       s.name.ends_with("o_proj.weight") || s.name.ends_with("down_proj.weight");
    const double sd = resid ? std_resid : c.init_std;
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
  SP_CHECK(!par_.inference, "an inference model has no gradients");
  // A ParamSource hands out zeroed gradient blocks itself (grad()).
  if (!arena_.dry_run() && grads_.data()) std::memset(grads_.data(), 0, sizeof(float) * n_params_);
}

int64_t Model::row_begin() const {
  return seq_par_ ? tp_rank_ * (N_ / tp_) + std::min<int64_t>(tp_rank_, N_ % tp_) : 0;
}

std::vector<int64_t> Model::row_counts(int64_t width) const {
  std::vector<int64_t> c(tp_);
  for (int t = 0; t < tp_; ++t) c[t] = (N_ / tp_ + (t < N_ % tp_ ? 1 : 0)) * width;
  return c;
}

void Model::gather_rows(const float* part, float* full, int64_t width) {
  if (N_ % tp_ == 0)
    par_.tp.comm->allgather(part, full, size_t(R_ * width));
  else
    par_.tp.comm->allgatherv(part, full, row_counts(width));
}

void Model::reduce_scatter_rows(const float* full, float* part, int64_t width) {
  if (N_ % tp_ == 0)
    par_.tp.comm->reduce_scatter_sum(full, part, size_t(R_ * width));
  else
    par_.tp.comm->reduce_scatterv_sum(full, part, row_counts(width));
}

void Model::allreduce_rows(float* x, int64_t width) {
  par_.tp.comm->allreduce_sum(x, size_t(N_ * width));
}

AttnShard Model::shard(int l, const Batch& b, const StepContext& ctx, const float* qkv) const {
  AttnShard s{qkv,
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
  if (!b.mask.trivial()) s.mask = &b.mask;
  return s;
}

template <class S>
const float* Model::qkv_f32(const LayerActs& a, float* buf) const {
  if constexpr (std::is_same_v<S, float>) {
    return static_cast<const float*>(a.qkv);
  } else {
    const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * cfg_.d();
    to_float(buf, static_cast<const S*>(a.qkv), N_ * Wt);
    return buf;
  }
}

// The strategies take fp32 QKV and write fp32 O (their score tiles and merges are fp32
// whatever the storage): under bf16, QKV is widened into dqkv_ and O written into datt_
// (both idle until backward), then O rounded into the stored a.att.
template <class S>
void Model::attention_forward(int l, const Batch& b, const StepContext& ctx, LayerActs& a) {
  const float* qkv = qkv_f32<S>(a, dqkv_);
  if constexpr (std::is_same_v<S, float>) {
    attn_[0]->forward(shard(l, b, ctx, qkv), static_cast<float*>(a.att), a.lse);
  } else {
    attn_[0]->forward(shard(l, b, ctx, qkv), datt_, a.lse);
    to_bf16(static_cast<S*>(a.att), datt_, N_ * int64_t(Ht_) * cfg_.d());
  }
}

// LayerNorm (gpt, bert) or RMSNorm (llama) over this rank's R rows. RMSNorm has no mean
// and no bias: `mean` and `b` are unused. Backward accumulates into dinp and dw (db).
template <class O, class I>
void Model::norm_forward(O* out, float* mean, float* rstd, const I* in, const float* w,
                         const float* b) {
  if (cfg_.llama())
    rmsnorm_forward(out, rstd, in, w, R_, cfg_.C, cfg_.norm_eps);
  else
    layernorm_forward(out, mean, rstd, in, w, b, R_, cfg_.C);
}

template <class S>
void Model::norm_backward(float* dinp, float* dw, float* db, const float* dout, const S* inp,
                          const float* w, const float* mean, const float* rstd) {
  if (cfg_.llama())
    rmsnorm_backward(dinp, dw, dout, inp, w, rstd, R_, cfg_.C);
  else
    layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, R_, cfg_.C);
}

template <class S>
void Model::layer_forward(int l, const Batch& b, const StepContext& ctx, LayerActs& a, S* next) {
  const int64_t N = N_, R = R_, C = cfg_.C, d = cfg_.d();
  const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * d, HDt = int64_t(Ht_) * d, Ft = Ft_;
  const LayerParams& P = pv_.layers[l];
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  const int64_t* keys = b.row_key.data() + row_begin();
  S *x_in = static_cast<S*>(a.x_in), *ln1 = static_cast<S*>(a.ln1), *qkv = static_cast<S*>(a.qkv);
  S *att = static_cast<S*>(a.att), *x_mid = static_cast<S*>(a.x_mid), *ln2 = static_cast<S*>(a.ln2);
  S *fc1 = static_cast<S*>(a.fc1), *gelu = static_cast<S*>(a.gelu);
  float* ls = lin_scratch_;
  // Attention block: LN on this rank's rows; all-gather the sequence (in S: full_ holds S
  // rows); column-parallel QKV.
  norm_forward(ln1, a.ln1_mean, a.ln1_rstd, x_in, P.ln1_w, P.ln1_b);
  const bool sp = tp_ > 1 && seq_par_;  // Megatron sequence parallelism in the tp group
  S* full = reinterpret_cast<S*>(full_);
  const S* in = ln1;
  if (sp) {
    gather_rows_s(ln1, full, C);
    in = full;
  }
  linear_forward(qkv, in, P.qkv_w, P.qkv_b, N, C, Wt, ls);
  const int64_t* rp = b.rope_pos.empty() ? b.pos.data() : b.rope_pos.data();
  const int64_t rps = b.rope_pos.empty() ? 0 : T_;  // per-row positions (documents reset)
  rope_forward(qkv, rp, B_, T_, Ht_, d, Wt, cfg_.rope_theta, rps);
  rope_forward(qkv + Ht_ * d, rp, B_, T_, Hkvt_, d, Wt, cfg_.rope_theta, rps);
  attention_forward<S>(l, b, ctx, a);
  // Row-parallel proj: partial sums over this rank's heads, reduce-scattered to rows.
  row_parallel_forward(x_mid, att, P.proj_w, P.proj_b, HDt);
  if (p_drop > 0)
    dropout_forward(x_mid, x_mid, keys, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, uint32_t(l), RngSite::attn_out_dropout});
  residual_forward(x_mid, x_in, x_mid, R * C);
  // MLP block, same pattern with FC1 column-parallel and FC2 row-parallel.
  norm_forward(ln2, a.ln2_mean, a.ln2_rstd, x_mid, P.ln2_w, P.ln2_b);
  in = ln2;
  if (sp) {
    gather_rows_s(ln2, full, C);
    in = full;
  }
  if (cfg_.llama()) {  // SwiGLU: one product for [gate | up], then silu(gate)·up
    linear_forward(fc1, in, P.fc1_w, nullptr, N, C, 2 * Ft, ls);
    swiglu_forward(gelu, fc1, N, Ft);
  } else {
    linear_forward(fc1, in, P.fc1_w, P.fc1_b, N, C, Ft, ls);
    gelu_forward(gelu, fc1, N * Ft);
  }
  row_parallel_forward(next, gelu, P.fc2_w, P.fc2_b, Ft);
  if (p_drop > 0)
    dropout_forward(next, next, keys, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, uint32_t(l), RngSite::mlp_out_dropout});
  residual_forward(next, x_mid, next, R * C);
}

// ---- embedding and loss: replicated at tp = 1, vocabulary-parallel under tp ------------
//
// Vocabulary parallelism (Megatron): tp rank r holds vocabulary rows [v0, v0 + Vt) of the
// embedding and of the head.
//  embedding: each rank looks up the tokens it holds (0 for the others) for all N rows of
//    the shard; the partial rows are summed over tp (reduce-scattered to this rank's R rows
//    under sequence parallelism, all-reduced otherwise).
//  loss: the head sees the final norm's output for all N rows; each rank computes, over its
//    Vt logits per row, m = max, s = Σ exp(z − m) and the target logit z_t if it holds the
//    target; then over tp  M = max_r m_r,  S = Σ_r s_r·exp(m_r − M),  Z = Σ_r z_t,r, and
//    lse = M + log S, loss = lse − Z. Backward: ∂loss/∂z = softmax(z) − onehot = exp(z −
//    lse) − onehot on each rank's shard; ∂/∂x sums the shards' products over tp (reduce-
//    scattered to R rows, or all-reduced).

const float* Model::head_input() {
  if (tp_ > 1 && seq_par_) {
    gather_rows(lnf_, full_, cfg_.C);
    return full_;
  }
  return lnf_;  // R = N
}

void Model::embed_forward(const Batch& b) {
  const int64_t C = cfg_.C, V = cfg_.V;
  if (tp_ == 1) {
    if (par_.precision == Precision::bf16)
      embedding_forward(static_cast<bf16*>(la_[0].x_in), b.tokens.data(), pv_.wte, R_, C, V);
    else
      embedding_forward(static_cast<float*>(la_[0].x_in), b.tokens.data(), pv_.wte, R_, C, V);
    return;
  }
  // tp > 1: the partial rows are summed in fp32 (in x itself, or in dln_ under bf16, free
  // in forward) and stored once.
  const bool bf = par_.precision == Precision::bf16;
  float* x = bf ? dln_ : static_cast<float*>(la_[0].x_in);
  float* part = seq_par_ ? full_ : x;  // (N, C)
  for (int64_t i = 0; i < N_; ++i) {
    const int32_t tok = b.tokens[i];
    SP_CHECK(tok >= 0 && tok < V, "token at row ", i, " is ", tok, ", expected in [0, ", V, ")");
    float* o = part + i * C;
    if (tok >= v0_ && tok < v0_ + Vt_)
      std::memcpy(o, pv_.wte + (tok - v0_) * C, sizeof(float) * C);
    else
      std::memset(o, 0, sizeof(float) * C);
  }
  if (seq_par_)
    reduce_scatter_rows(full_, x, C);
  else
    allreduce_rows(x, C);
  if (bf) to_bf16(static_cast<bf16*>(la_[0].x_in), x, R_ * C);
}

template <class S>
void Model::gather_rows_s(const S* part, S* full, int64_t width) {
  if constexpr (std::is_same_v<S, float>) {
    gather_rows(part, full, width);
  } else {  // bf16 rows travel as floats holding two elements each (width is even)
    gather_rows(reinterpret_cast<const float*>(part), reinterpret_cast<float*>(full), width / 2);
  }
}

// out (R, C) = Σ_tp in (N, K)·wᵀ + bias: a row-parallel linear (proj, FC2). The partial sums
// over this rank's K columns are fp32 (in full_ under sequence parallelism, else in out, or
// in dln_ under bf16, free in forward), summed over tp in fp32 and stored once.
template <class S>
void Model::row_parallel_forward(S* out, const S* in, const float* w, const float* bias,
                                 int64_t K) {
  const int64_t N = N_, R = R_, C = cfg_.C;
  if (tp_ == 1) {
    linear_forward(out, in, w, bias, N, K, C, lin_scratch_);
    return;
  }
  float* sum = std::is_same_v<S, float> ? reinterpret_cast<float*>(out) : dln_;  // (R, C)
  if (seq_par_) {
    linear_forward(full_, in, w, nullptr, N, K, C, lin_scratch_);
    reduce_scatter_rows(full_, sum, C);
  } else {
    linear_forward(sum, in, w, nullptr, N, K, C, lin_scratch_);
    allreduce_rows(sum, C);
  }
  if (bias) bias_forward(sum, bias, R, C);
  if constexpr (!std::is_same_v<S, float>) to_bf16(out, sum, R * C);
}

void Model::embed_backward(const Batch& b, const float* dx) {
  const int64_t C = cfg_.C;
  if (tp_ == 1) {
    embedding_backward(gv_.wte, dx, b.tokens.data(), R_, C);
    return;
  }
  const float* full = dx;  // (N, C): identical on every tp rank without sequence parallelism
  if (seq_par_) {
    gather_rows(dx, dfull_, C);
    full = dfull_;
  }
  for (int64_t i = 0; i < N_; ++i) {
    const int32_t tok = b.tokens[i];
    if (tok < v0_ || tok >= v0_ + Vt_) continue;
    float* g = gv_.wte + (tok - v0_) * C;
    for (int64_t c = 0; c < C; ++c) g[c] += full[i * C + c];
  }
}

double Model::loss_forward(const Batch& b) {
  const int64_t N = N_, C = cfg_.C, Vt = Vt_;
  const int32_t* tg = b.targets.data();  // (N) the whole sp shard
  const float* x = head_input();
  if (par_.loss == LossImpl::fused) {
    fused_xent_stats(xent_m_, xent_s_, xent_zt_, x, pv_.head, tg, N, C, Vt, v0_, par_.loss_chunks,
                     xent_scratch_);
  } else {
    linear_forward(logits_, x, pv_.head, nullptr, N, C, Vt);
    for (int64_t i = 0; i < N; ++i) {
      const float* z = logits_ + i * Vt;
      const float m = *std::max_element(z, z + Vt);
      double s = 0.0;
      for (int64_t j = 0; j < Vt; ++j) s += std::exp(double(z[j]) - m);
      xent_m_[i] = m;
      xent_s_[i] = float(s);
      xent_zt_[i] = tg[i] >= v0_ && tg[i] < v0_ + Vt ? z[tg[i] - v0_] : 0.0f;
    }
  }
  if (tp_ > 1) {
    // Combine the shards' statistics (see above): M, then S rescaled to M, then Z.
    std::memcpy(dlosses_, xent_m_, sizeof(float) * N);  // dlosses_: free until backward
    par_.tp.comm->allreduce_max(xent_m_, size_t(N));
    for (int64_t i = 0; i < N; ++i) xent_s_[i] *= std::exp(dlosses_[i] - xent_m_[i]);
    par_.tp.comm->allreduce_sum(xent_s_, size_t(N));
    par_.tp.comm->allreduce_sum(xent_zt_, size_t(N));
  }
  const int64_t rb = row_begin();
  double sum = 0.0;
  for (int64_t i = 0; i < N; ++i) lse_[i] = xent_m_[i] + std::log(xent_s_[i]);
  for (int64_t i = 0; i < R_; ++i) {
    const int64_t g = rb + i;
    losses_[i] = tg[g] >= 0 ? lse_[g] - xent_zt_[g] : 0.0f;
    sum += losses_[i];
  }
  return sum;
}

void Model::loss_backward(const Batch& b, float loss_scale) {
  const int64_t N = N_, C = cfg_.C, Vt = Vt_;
  const int32_t* tg = b.targets.data();
  // Every row's loss is counted once in the global sum, so every rank takes loss_scale for
  // all N rows of its vocabulary shard.
  for (int64_t i = 0; i < N; ++i) dlosses_[i] = tg[i] >= 0 ? loss_scale : 0.0f;
  const float* x = head_input();
  const bool sp = tp_ > 1 && seq_par_;
  float* dx = sp ? dfull_ : dln_;  // (N, C)
  std::memset(dx, 0, sizeof(float) * N * C);
  if (par_.loss == LossImpl::fused) {
    fused_xent_backward(dx, gv_.head, x, pv_.head, tg, lse_, dlosses_, N, C, Vt, v0_,
                        par_.loss_chunks, xent_scratch_);
  } else {
    for (int64_t i = 0; i < N; ++i) {
      const float* z = logits_ + i * Vt;
      float* dz = dlogits_ + i * Vt;
      for (int64_t j = 0; j < Vt; ++j)
        dz[j] = (std::exp(z[j] - lse_[i]) - float(tg[i] == v0_ + j)) * dlosses_[i];
    }
    linear_backward(dx, gv_.head, nullptr, dlogits_, x, pv_.head, N, C, Vt);
  }
  if (sp)
    reduce_scatter_rows(dfull_, dln_, C);
  else if (tp_ > 1)
    allreduce_rows(dln_, C);
}

std::vector<int32_t> Model::argmax(const std::vector<int64_t>& rows) {
  std::vector<int32_t> out(rows.size(), 0);
  if (rows.empty() || arena_.dry_run()) return out;
  const int64_t C = cfg_.C, Vt = Vt_;
  const float* x = head_input();  // collective over tp: every rank calls argmax alike
  std::vector<float> best(rows.size());
  std::vector<int64_t> idx(rows.size());
  for (size_t k = 0; k < rows.size(); ++k) {
    linear_forward(row_logits_, x + rows[k] * C, pv_.head, nullptr, 1, C, Vt);
    const int64_t j = std::max_element(row_logits_, row_logits_ + Vt) - row_logits_;
    best[k] = row_logits_[j];
    idx[k] = v0_ + j;
  }
  if (tp_ > 1) {
    // The best value over the shards, then the smallest token id that attains it.
    std::vector<float> top = best;
    par_.tp.comm->allreduce_max(top.data(), top.size());
    for (size_t k = 0; k < rows.size(); ++k)
      if (best[k] < top[k]) idx[k] = INT64_MAX;
    par_.tp.comm->allreduce_min(idx.data(), idx.size());
  }
  for (size_t k = 0; k < rows.size(); ++k) out[k] = int32_t(idx[k]);
  return out;
}

std::vector<float> Model::logits() {
  const int64_t R = R_, N = N_, C = cfg_.C, V = cfg_.V, Vt = Vt_, rb = row_begin();
  std::vector<float> out(size_t(R * V));
  if (arena_.dry_run()) return out;
  if (tp_ == 1) {
    linear_forward(out.data(), lnf_, pv_.head, nullptr, R, C, V);
    return out;
  }
  // Every tp rank's vocabulary block of all N rows (they hold different rows under sequence
  // parallelism), broadcast from each owner in turn; this rank keeps its R rows.
  std::vector<float> mine(size_t(N * Vt));
  linear_forward(mine.data(), head_input(), pv_.head, nullptr, N, C, Vt);
  for (int r = 0; r < tp_; ++r) {
    const auto [v0, vt] = vocab_range(V, tp_, r);
    std::vector<float> blk(size_t(N * vt));
    if (r == tp_rank_) blk = mine;
    par_.tp.comm->bcast(blk.data(), blk.size() * sizeof(float), r);
    for (int64_t i = 0; i < R; ++i)
      std::copy_n(blk.data() + (rb + i) * vt, vt, out.data() + i * V + v0);
  }
  return out;
}

double Model::forward(const Batch& b, const StepContext& ctx) {
  SP_CHECK(b.B == B_ && b.T == T_, "batch shard is (", b.B, ", ", b.T,
           "), the model was built for (", B_, ", ", T_, ")");
  SP_CHECK(b.rope_pos.empty() || b.rope_pos.size() == size_t(B_) * T_, "batch has ",
           b.rope_pos.size(), " RoPE positions, expected none or B·T = ", int64_t(B_) * T_);
  if (!b.mask.trivial()) {
    SP_CHECK(b.mask.B == B_ && b.mask.L == b.L, "batch mask is for (B, L) = (", b.mask.B, ", ",
             b.mask.L, "), the batch is (", B_, ", ", b.L, ")");
    b.mask.check();
  }
  if (arena_.dry_run()) return 0.0;
  const int n = cfg_.n_layer;
  if (src_params_) set_unit_views(pv_, 0, src_params_->fetch(0, n > 0 ? 1 : -1));
  embed_forward(b);
  if (par_.precision == Precision::bf16)
    forward_layers<bf16>(b, ctx);
  else
    forward_layers<float>(b, ctx);
  if (par_.inference) return 0.0;  // generation reads logits() of the rows it needs
  return loss_forward(b);
}

// Embedding dropout, the layers and the final norm (which reads the stored residual and
// writes fp32 for the head).
template <class S>
void Model::forward_layers(const Batch& b, const StepContext& ctx) {
  const int64_t R = R_, C = cfg_.C, rb = row_begin();
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  S* x0 = static_cast<S*>(la_[0].x_in);
  if (p_drop > 0)
    dropout_forward(x0, x0, b.row_key.data() + rb, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, 0, RngSite::embed_dropout});
  const int n = cfg_.n_layer;
  for (int l = 0; l < n; ++l) {
    // ZeRO 3: this layer's parameters gathered, the next one's gather posted; dropped after.
    if (src_params_) set_unit_views(pv_, 1 + l, src_params_->fetch(1 + l, l + 1 < n ? 2 + l : -1));
    layer_forward<S>(l, b, ctx, la_[l], static_cast<S*>(l + 1 < n ? la_[l + 1].x_in : x_out_));
    if (src_params_) src_params_->drop(1 + l);
  }
  norm_forward(lnf_, lnf_mean_, lnf_rstd_, static_cast<const S*>(x_out_), pv_.lnf_w, pv_.lnf_b);
}

void Model::backward(const Batch& b, const StepContext& ctx, float loss_scale) {
  SP_CHECK(!par_.inference, "an inference model has no backward pass");
  if (arena_.dry_run()) return;
  const int64_t R = R_, C = cfg_.C, rb = row_begin();
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  if (src_grads_) set_unit_views(gv_, 0, src_grads_->grad(0));
  loss_backward(b, loss_scale);
  std::memset(dx_, 0, sizeof(float) * R * C);
  const bool bf = par_.precision == Precision::bf16;
  if (bf)
    norm_backward(dx_, gv_.lnf_w, gv_.lnf_b, dln_, static_cast<const bf16*>(x_out_), pv_.lnf_w,
                  lnf_mean_, lnf_rstd_);
  else
    norm_backward(dx_, gv_.lnf_w, gv_.lnf_b, dln_, static_cast<const float*>(x_out_), pv_.lnf_w,
                  lnf_mean_, lnf_rstd_);
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    // ZeRO 3: the layer's parameters gathered again (the previous layer's posted); ZeRO 2:
    // its gradient block handed out, and reduce-scattered once the layer is done.
    if (src_params_) set_unit_views(pv_, 1 + l, src_params_->fetch(1 + l, l > 0 ? l : -1));
    if (src_grads_) set_unit_views(gv_, 1 + l, src_grads_->grad(1 + l));
    if (bf)
      layer_backward<bf16>(l, b, ctx);
    else
      layer_backward<float>(l, b, ctx);
    if (src_grads_) src_grads_->grad_done(1 + l);
    if (src_params_) src_params_->drop(1 + l);
  }
  std::memset(dtmp_, 0, sizeof(float) * R * C);
  dropout_backward(dtmp_, dx_, b.row_key.data() + rb, R, C,
                   DropoutKey{p_drop, ctx.seed, ctx.step, 0, RngSite::embed_dropout});
  embed_backward(b, dtmp_);
  if (src_grads_) src_grads_->grad_done(0);
}

// One layer's backward: on entry dx_ = ∂loss/∂(layer output), on exit ∂loss/∂x_in.
// Saved S tensors are read through the kernels' storage type; every gradient is fp32.
template <class S>
void Model::layer_backward(int l, const Batch& b, const StepContext& ctx) {
  const int64_t N = N_, R = R_, C = cfg_.C, d = cfg_.d(), rb = row_begin();
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
  float* ls = lin_scratch_;
  const LayerParams& P = pv_.layers[l];
  LayerParams& G = gv_.layers[l];
  LayerActs& a = la_[l];
  if (par_.recompute == Recompute::full)
    layer_forward<S>(l, b, ctx, a, reinterpret_cast<S*>(dtmp_));
  if (par_.recompute == Recompute::selective) attention_forward<S>(l, b, ctx, a);
  const S *x_in = static_cast<S*>(a.x_in), *ln1 = static_cast<S*>(a.ln1);
  const S *att = static_cast<S*>(a.att), *x_mid = static_cast<S*>(a.x_mid);
  const S *ln2 = static_cast<S*>(a.ln2), *fc1 = static_cast<S*>(a.fc1);
  const S* gelu = static_cast<S*>(a.gelu);
  // dx_ = ∂loss/∂(layer output): into the residual (x_mid) and through dropout(fc2(·)).
  zero(dtmp_, R * C);
  dropout_backward(dtmp_, dx_, keys, R, C, key(l, RngSite::mlp_out_dropout));
  const float* dnext = dtmp_;
  if (tp) {
    if (G.fc2_b) bias_backward(G.fc2_b, dtmp_, R, C);
    gather_rows(dtmp_, dfull_, C);  // backward of the reduce-scatter
    dnext = dfull_;
  }
  zero(dgelu_, N * Ft);
  linear_backward(dgelu_, G.fc2_w, tp ? nullptr : G.fc2_b, dnext, gelu, P.fc2_w, N, Ft, C, ls);
  const int64_t F1t = cfg_.llama() ? 2 * Ft : Ft;
  if (cfg_.llama()) {
    swiglu_backward(dfc1_, dgelu_, fc1, N, Ft);
  } else {
    zero(dfc1_, N * Ft);
    gelu_backward(dfc1_, fc1, dgelu_, N * Ft);
  }
  S* full = reinterpret_cast<S*>(full_);  // gathered S rows
  if (tp) {
    gather_rows_s(ln2, full, C);  // the input was kept sharded: gather it again
    zero(dfull_, N * C);
    linear_backward(dfull_, G.fc1_w, G.fc1_b, dfc1_, full, P.fc1_w, N, C, F1t, ls);
    reduce_scatter_rows(dfull_, dln_, C);  // backward of the all-gather
  } else {
    zero(dln_, R * C);
    linear_backward(dln_, G.fc1_w, G.fc1_b, dfc1_, ln2, P.fc1_w, N, C, F1t, ls);
    if (ar) allreduce_rows(dln_, C);  // each rank holds its F/t columns' share
  }
  norm_backward(dx_, G.ln2_w, G.ln2_b, dln_, x_mid, P.ln2_w, a.ln2_mean, a.ln2_rstd);
  // dx_ = ∂loss/∂x_mid.
  zero(dtmp_, R * C);
  dropout_backward(dtmp_, dx_, keys, R, C, key(l, RngSite::attn_out_dropout));
  dnext = dtmp_;
  if (tp) {
    if (G.proj_b) bias_backward(G.proj_b, dtmp_, R, C);
    gather_rows(dtmp_, dfull_, C);
    dnext = dfull_;
  }
  zero(datt_, N * HDt);
  linear_backward(datt_, G.proj_w, tp ? nullptr : G.proj_b, dnext, att, P.proj_w, N, HDt, C, ls);
  zero(dqkv_, N * Wt);
  // The strategies read fp32 QKV and O: under bf16 widened into dfc1_ and dgelu_ (free now).
  const float* o32 = reinterpret_cast<const float*>(att);
  if constexpr (!std::is_same_v<S, float>) {
    to_float(bwd_o32_, att, N * HDt);
    o32 = bwd_o32_;
  }
  attn_[0]->backward(shard(l, b, ctx, qkv_f32<S>(a, bwd_qkv32_)), o32, a.lse, datt_, dqkv_);
  const int64_t* rp = b.rope_pos.empty() ? b.pos.data() : b.rope_pos.data();
  const int64_t rps = b.rope_pos.empty() ? 0 : T_;
  rope_backward(dqkv_, rp, B_, T_, Ht_, d, Wt, cfg_.rope_theta, rps);
  rope_backward(dqkv_ + Ht_ * d, rp, B_, T_, Hkvt_, d, Wt, cfg_.rope_theta, rps);
  if (tp) {
    gather_rows_s(ln1, full, C);
    zero(dfull_, N * C);
    linear_backward(dfull_, G.qkv_w, G.qkv_b, dqkv_, full, P.qkv_w, N, C, Wt, ls);
    reduce_scatter_rows(dfull_, dln_, C);
  } else {
    zero(dln_, R * C);
    linear_backward(dln_, G.qkv_w, G.qkv_b, dqkv_, ln1, P.qkv_w, N, C, Wt, ls);
    if (ar) allreduce_rows(dln_, C);
  }
  norm_backward(dx_, G.ln1_w, G.ln1_b, dln_, x_in, P.ln1_w, a.ln1_mean, a.ln1_rstd);
  // dx_ = ∂loss/∂x_in.
}

}  // namespace seqpar
