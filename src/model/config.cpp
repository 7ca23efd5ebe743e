#include "model/config.hpp"

#include "core/check.hpp"

namespace seqpar {

const OptionTable<ModelConfig>& model_options() {
  using M = ModelConfig;
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
  if (tokenizer_hash == 0) {
    int min_v = kind == ModelKind::bert ? 257 : 256;
    SP_CHECK_USAGE(V >= min_v, "vocab V=", V, " too small: byte tokens need ", min_v,
                   kind == ModelKind::bert ? " (256 bytes + [MASK])" : "");
  }
}

long double ModelConfig::approx_params() const {
  const long double c = C, f = F, v = V;
  return (long double)n_layer * (4 * c * c + 3 * c * f + 8 * c) + 2 * v * c;
}

nlohmann::json ModelConfig::to_json() const { return options_to_json(model_options(), *this); }

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
