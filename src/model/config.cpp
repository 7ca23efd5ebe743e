#include "model/config.hpp"

#include "core/check.hpp"

namespace seqpar {

const OptionTable<ModelConfig>& model_options() {
  using M = ModelConfig;
  constexpr unsigned kRope = kTrainLike | kEval | kGenerate;
  static const OptionTable<M> rows = [] {
    OptionTable<M> t;
    auto add = [&](Option<M> o) -> Option<M>& { return t.emplace_back(std::move(o)); };
    add(option<M>(
        "model", [](M & c) -> auto& { return c.kind; }, "--model,--arch",
        "architecture: gpt (causal LM), bert (masked LM, 15% masking) or llama "
        "(causal LM: RMSNorm, SwiGLU, no biases, untied head)",
        kTrainLike));
    add(option<M>(
            "layers", [](M & c) -> auto& { return c.n_layer; }, "--layers", "Transformer blocks",
            kTrainLike))
        .within(1, kMaxLayers);
    add(option<M>(
            "dim", [](M & c) -> auto& { return c.C; }, "--dim", "model width C", kTrainLike))
        .within(2, kMaxWidth);
    add(option<M>(
            "heads", [](M & c) -> auto& { return c.H; }, "--heads",
            "query heads H (head dim d = C/H)", kTrainLike))
        .within(1, kMaxWidth);
    add(option<M>(
            "kv_heads", [](M & c) -> auto& { return c.Hkv; }, "--kv-heads",
            "key/value heads Hkv (grouped-query attention)", kTrainLike))
        .shows_default("H")
        .follow({"heads"}, [](M& c) { c.Hkv = c.H; });
    // LLaMA's SwiGLU has three matrices where GELU has two: F = 8·C/3 (rounded up to a
    // multiple of 32) keeps the parameter count of a 4·C GELU MLP.
    add(option<M>(
            "ffn", [](M & c) -> auto& { return c.F; }, "--ffn", "feed-forward width F", kTrainLike))
        .within(1, 4 * kMaxWidth)
        .shows_default("4·C; llama: 8·C/3 rounded up to 32")
        .follow({"dim", "model"}, [](M& c) {
          c.F = c.kind == ModelKind::llama ? (8 * c.C / 3 + 31) / 32 * 32 : 4 * c.C;
        });
    add(option<M>(
            "vocab", [](M & c) -> auto& { return c.V; }, "--vocab", "vocabulary size V",
            kTrainLike))
        .within(2, kMaxVocab)
        .shows_default("256 bytes, 257 for bert; a token file's vocabulary, +1 for bert")
        .follow({"model"}, [](M& c) { c.V = c.kind == ModelKind::bert ? 257 : 256; });
    add(option<M>(
            "dropout", [](M & c) -> auto& { return c.dropout; }, "--dropout",
            "dropout on embeddings and residual branches", kTrainLike))
        .within(0, 1, /*open_hi=*/true);
    add(option<M>(
            "attn_dropout", [](M & c) -> auto& { return c.attn_dropout; }, "--attn-dropout",
            "attention-probability dropout", kTrainLike))
        .within(0, 1, /*open_hi=*/true);
    add(option<M>(
            "rope_theta", [](M & c) -> auto& { return c.rope_theta; }, "--rope-theta",
            "RoPE base θ", kTrainLike))
        .above(1);
    // RoPE scaling: a resume must keep it (it changes what every position means). It is not
    // a weight: eval and generate may apply one to a model trained without it (the
    // no-training baselines of a context extension, docs/extend.md).
    add(option<M>(
            "rope_scaling", [](M & c) -> auto& { return c.rope_scaling; }, "--rope-scaling",
            "RoPE scaling for a context longer than the trained one (Hugging Face's "
            "rope_scaling): none, linear (position interpolation), dynamic (NTK-aware base, "
            "from the processed length), yarn or llama3",
            kRope))
        .resume();
    add(option<M>(
            "rope_factor", [](M & c) -> auto& { return c.rope_factor; }, "--rope-factor",
            "RoPE scaling factor s (new context / original context)", kRope))
        .resume()
        .within(1, 1e6);
    add(option<M>(
            "rope_original_len", [](M & c) -> auto& { return c.rope_original_len; },
            "--rope-original-len",
            "original context length L0 of the RoPE scaling (Hugging Face's "
            "original_max_position_embeddings; dynamic, yarn, llama3); 0: not set",
            kRope))
        .resume()
        .within(0, double(int64_t(1) << 40));
    add(option<M>(
            "rope_beta_fast", [](M & c) -> auto& { return c.rope_beta_fast; }, "--rope-beta-fast",
            "yarn: rotations over L0 below which pairs are interpolated", kRope))
        .resume()
        .above(0);
    add(option<M>(
            "rope_beta_slow", [](M & c) -> auto& { return c.rope_beta_slow; }, "--rope-beta-slow",
            "yarn: rotations over L0 above which pairs keep their frequency", kRope))
        .resume()
        .above(0);
    add(option<M>(
            "rope_attention_factor", [](M & c) -> auto& { return c.rope_attention_factor; },
            "--rope-attention-factor",
            "yarn: attention temperature m multiplying cos and sin (0: 0.1·ln s + 1)", kRope))
        .resume()
        .at_least(0);
    add(option<M>(
            "rope_low_freq_factor", [](M & c) -> auto& { return c.rope_low_freq_factor; },
            "--rope-low-freq-factor", "llama3: wavelengths above L0/low are interpolated by s",
            kRope))
        .resume()
        .above(0);
    add(option<M>(
            "rope_high_freq_factor", [](M & c) -> auto& { return c.rope_high_freq_factor; },
            "--rope-high-freq-factor", "llama3: wavelengths below L0/high keep their frequency",
            kRope))
        .resume()
        .above(0);
    add(option<M>(
            "init_std", [](M & c) -> auto& { return c.init_std; }, "",
            "standard deviation of the initial weights", kTrainLike))
        .above(0);
    add(option<M>(
            "tie_embeddings", [](M & c) -> auto& { return c.tie_embeddings; },
            "--tie-embeddings,!--untie-embeddings",
            "the output head shares the input embedding; --untie-embeddings gives it its "
            "own matrix",
            kTrainLike))
        .shows_default("tied for gpt and bert, untied for llama")
        .follow({"model"}, [](M& c) { c.tie_embeddings = c.kind != ModelKind::llama; });
    // Qwen2's attention: biases on q, k and v (not on o_proj, nor in the MLP).
    add(option<M>(
        "qkv_bias", [](M & c) -> auto& { return c.qkv_bias; }, "--qkv-bias,!--no-qkv-bias",
        "llama: biases on the q, k and v projections (Qwen2; gpt and bert always have them)",
        kTrainLike));
    add(option<M>(
            "norm_eps", [](M & c) -> auto& { return c.norm_eps; }, "--norm-eps",
            "RMSNorm epsilon (llama)", kTrainLike))
        .above(0);
    // FNV-1a 64 of the tokenizer the vocabulary comes from: set from the data, kept in
    // config.json and manifests; a config file may name it.
    add(option<M>(
        "tokenizer_hash", [](M & c) -> auto& { return c.tokenizer_hash; }, "",
        "tokenizer hash (0: byte tokens)", kTrainLike));
    return t;
  }();
  return rows;
}

void ModelConfig::validate() const {
  check_options(model_options(), *this);
  // Every size the engine computes from the model is a product of these; bounding the
  // total bounds each product far below 2^63 (checked in long double: no overflow here).
  const long double params = approx_params();
  SP_CHECK_USAGE(params <= kMaxParams, "the model has about ", double(params),
                 " parameters (layers·(4·C² + 3·C·F) + 2·V·C with layers=", n_layer, ", C=", C,
                 ", F=", F, ", V=", V, "), beyond this engine's limit of 2^40 (",
                 double(kMaxParams), ": 4 TiB per fp32 copy)");
  SP_CHECK_USAGE(C % H == 0, "model width C=", C, " is not divisible by heads H=", H);
  SP_CHECK_USAGE(d() % 2 == 0, "head dim d=C/H=", d(), " must be even for rotary embeddings");
  SP_CHECK_USAGE(Hkv >= 1 && H % Hkv == 0, "kv heads Hkv=", Hkv, " must divide heads H=", H);
  validate_rope_scaling();
  SP_CHECK_USAGE(!qkv_bias || llama(), "--qkv-bias is a llama setting (", model_kind_name(kind),
                 " has its q/k/v biases already)");
  if (tokenizer_hash == 0) {
    int min_v = kind == ModelKind::bert ? 257 : 256;
    SP_CHECK_USAGE(V >= min_v, "vocab V=", V, " too small: byte tokens need ", min_v,
                   kind == ModelKind::bert ? " (256 bytes + [MASK])" : "");
  }
}

// A parameter the chosen type does not use is refused rather than ignored: the user who
// wrote --rope-factor without --rope-scaling expects a scaled model.
void ModelConfig::validate_rope_scaling() const {
  const ModelConfig def;
  const RopeScaling t = rope_scaling;
  const bool yarn = t == RopeScaling::yarn, llama3 = t == RopeScaling::llama3;
  const char* type = enum_name(t);
  auto unused = [&](bool set, bool used, const char* flag) {
    SP_CHECK_USAGE(
        !set || used, flag, " does not apply to --rope-scaling ", type,
        t == RopeScaling::none ? ": choose a scaling (linear, dynamic, yarn, llama3)" : "");
  };
  unused(rope_factor != def.rope_factor, t != RopeScaling::none, "--rope-factor");
  unused(rope_original_len != def.rope_original_len,
         t != RopeScaling::none && t != RopeScaling::linear, "--rope-original-len");
  unused(rope_beta_fast != def.rope_beta_fast, yarn, "--rope-beta-fast");
  unused(rope_beta_slow != def.rope_beta_slow, yarn, "--rope-beta-slow");
  unused(rope_attention_factor != def.rope_attention_factor, yarn, "--rope-attention-factor");
  unused(rope_low_freq_factor != def.rope_low_freq_factor, llama3, "--rope-low-freq-factor");
  unused(rope_high_freq_factor != def.rope_high_freq_factor, llama3, "--rope-high-freq-factor");
  if (t == RopeScaling::none) return;
  SP_CHECK_USAGE(t == RopeScaling::linear || rope_original_len > 0, "--rope-scaling ", type,
                 " needs the original context length: give --rope-original-len L0");
  SP_CHECK_USAGE(t != RopeScaling::dynamic || d() > 2,
                 "--rope-scaling dynamic needs head dim "
                 "d > 2 (its base is raised to d/(d−2)), got d=",
                 d());
  SP_CHECK_USAGE(!yarn || rope_beta_fast > rope_beta_slow, "--rope-beta-fast ", rope_beta_fast,
                 " must be greater than --rope-beta-slow ", rope_beta_slow);
  SP_CHECK_USAGE(!llama3 || rope_low_freq_factor < rope_high_freq_factor, "--rope-low-freq-factor ",
                 rope_low_freq_factor, " must be less than --rope-high-freq-factor ",
                 rope_high_freq_factor);
}

RopeScalingParams ModelConfig::rope_params() const {
  RopeScalingParams p;
  p.type = rope_scaling;
  p.factor = rope_factor;
  p.original_len = rope_original_len;
  p.beta_fast = rope_beta_fast;
  p.beta_slow = rope_beta_slow;
  p.attention_factor = rope_attention_factor;
  p.low_freq_factor = rope_low_freq_factor;
  p.high_freq_factor = rope_high_freq_factor;
  return p;
}

long double ModelConfig::approx_params() const {
  const long double c = C, f = F, v = V;
  return (long double)n_layer * (4 * c * c + 3 * c * f + 8 * c) + 2 * v * c;
}

nlohmann::json ModelConfig::to_json() const { return options_to_json(model_options(), *this); }

nlohmann::json ModelConfig::weights_json() const {
  nlohmann::json j = to_json();
  for (const auto& o : model_options())
    if (o.resume_key) j.erase(o.key);
  return j;
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  ModelConfig c;
  // Keys of the enclosing config (a manifest's "train" block, a config file) are not the
  // model's: take only the model's own.
  nlohmann::json own = nlohmann::json::object();
  for (const auto& o : model_options())
    if (j.contains(o.key)) own[o.key] = j.at(o.key);
  merge_options(model_options(), c, own, "model config");
  return c;
}

}  // namespace seqpar
