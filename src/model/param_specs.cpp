// The parameter block's layout: one ParamSpec per tensor (name, this rank's shard of the
// global shape under tensor parallelism), views into the block, copies between a shard and
// the global tensor (checkpoints, export), and the initial values, all keyed by global
// element index so every layout holds the same model.
#include "model/param_specs.hpp"

#include <algorithm>
#include <cmath>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/rng.hpp"
#include "model/model.hpp"

namespace seqpar {

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
      if (c.qkv_bias) {  // adjacent, as the weights: one q|k|v bias view
        add(lp(l) + "self_attn.q_proj.bias", {H * d}, false, 0, q_rows);
        add(lp(l) + "self_attn.k_proj.bias", {Hkv * d}, false, 0, k_rows);
        add(lp(l) + "self_attn.v_proj.bias", {Hkv * d}, false, 0, k_rows);
      }
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
          {"self_attn.q_proj.bias", &L.qkv_b},
          {"self_attn.o_proj.weight", &L.proj_w},
          {"post_attention_layernorm.weight", &L.ln2_w},
          {"mlp.gate_proj.weight", &L.fc1_w},
          {"mlp.down_proj.weight", &L.fc2_w}};
      bool found = f == "self_attn.k_proj.weight" || f == "self_attn.v_proj.weight" ||
                   f == "self_attn.k_proj.bias" || f == "self_attn.v_proj.bias" ||
                   f == "mlp.up_proj.weight";  // inside the q|k|v and gate|up views
      for (auto [name, view] : fields)
        if (f == name) *view = p, found = true;
      SP_CHECK(found, "unknown parameter ", n);
    }
  }
  if (!v.head) v.head = v.wte;  // tied
  return v;
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
    if (s.name.ends_with("self_attn.k_proj.weight") ||
        s.name.ends_with("self_attn.v_proj.weight") || s.name.ends_with("self_attn.k_proj.bias") ||
        s.name.ends_with("self_attn.v_proj.bias"))
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

}  // namespace seqpar
