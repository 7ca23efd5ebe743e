#include "train/hf_export.hpp"

#include <filesystem>

#include "core/arena.hpp"
#include "core/check.hpp"
#include "core/file.hpp"
#include "data/tokenizer.hpp"
#include "model/model.hpp"
#include "train/checkpoint.hpp"

namespace seqpar {

namespace fs = std::filesystem;

namespace {

// Rows of every head of a (heads·d, C) projection, from interleaved-pair to rotate-half
// order: new row h·d + i ← old row h·d + 2i, new row h·d + d/2 + i ← old row h·d + 2i + 1.
std::vector<float> to_rotate_half(const std::vector<float>& w, int64_t heads, int64_t d,
                                  int64_t C) {
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < d / 2; ++i)
      for (int64_t half = 0; half < 2; ++half) {
        const float* src = w.data() + (h * d + 2 * i + half) * C;
        std::copy(src, src + C, out.data() + (h * d + half * d / 2 + i) * C);
      }
  return out;
}

}  // namespace

nlohmann::json hf_rope_scaling(const ModelConfig& cfg) {
  if (cfg.rope_scaling == RopeScaling::none) return nullptr;
  nlohmann::json r = {{"rope_type", enum_name(cfg.rope_scaling)},
                      {"factor", json_float(cfg.rope_factor)}};
  if (cfg.rope_scaling != RopeScaling::linear)
    r["original_max_position_embeddings"] = cfg.rope_original_len;
  if (cfg.rope_scaling == RopeScaling::yarn) {
    r["beta_fast"] = json_float(cfg.rope_beta_fast);
    r["beta_slow"] = json_float(cfg.rope_beta_slow);
    if (cfg.rope_attention_factor > 0)
      r["attention_factor"] = json_float(cfg.rope_attention_factor);
  }
  if (cfg.rope_scaling == RopeScaling::llama3) {
    r["low_freq_factor"] = json_float(cfg.rope_low_freq_factor);
    r["high_freq_factor"] = json_float(cfg.rope_high_freq_factor);
  }
  return r;
}

std::string export_hf(const std::string& checkpoint, const std::string& out_dir,
                      const std::string& tokenizer) {
  Checkpoint ck = load_checkpoint(checkpoint);
  const ModelConfig cfg =
      ModelConfig::from_json(ck.manifest.value("model", nlohmann::json::object()));
  SP_CHECK_USAGE(cfg.llama(), "checkpoint ", ck.dir, " holds a '", model_kind_name(cfg.kind),
                 "' model; the Hugging Face export is for llama models (--arch llama)");
  // The tokenizer is read once: the bytes whose hash is checked are the bytes copied.
  std::string tokenizer_bytes;
  if (!tokenizer.empty()) {
    tokenizer_bytes = read_file(tokenizer);
    const uint64_t h = fnv1a64(tokenizer_bytes.data(), tokenizer_bytes.size());
    SP_CHECK_USAGE(h == cfg.tokenizer_hash, "tokenizer ", tokenizer, " (fnv1a64 ", hash_hex(h),
                   ") is not the one the model was trained with (", hash_hex(cfg.tokenizer_hash),
                   ")");
  }
  std::error_code ec;
  fs::create_directories(out_dir, ec);
  SP_CHECK_INPUT(!ec, "cannot create ", out_dir, ": ", ec.message());

  // Reference logits from the checkpoint's weights, on one rank, for a fixed token window.
  const int T = 32;
  Arena arena;
  Model model(cfg, 1, T, arena);
  std::vector<NamedTensor> out;
  for (const ParamSpec& s : model.specs()) {
    const NamedTensor* t = nullptr;
    for (const auto& w : ck.weights)
      if (w.name == s.name) t = &w;
    SP_CHECK_INPUT(t && t->shape == s.global_shape, "checkpoint ", ck.dir, " has no tensor '",
                   s.name, "' of the model's shape");
    std::copy(t->data.begin(), t->data.end(), model.params() + s.offset);
    NamedTensor e = *t;
    const int64_t d = cfg.d();
    if (s.name.ends_with("q_proj.weight")) e.data = to_rotate_half(t->data, cfg.H, d, cfg.C);
    if (s.name.ends_with("k_proj.weight")) e.data = to_rotate_half(t->data, cfg.Hkv, d, cfg.C);
    if (s.name.ends_with("q_proj.bias")) e.data = to_rotate_half(t->data, cfg.H, d, 1);  // Qwen2
    if (s.name.ends_with("k_proj.bias")) e.data = to_rotate_half(t->data, cfg.Hkv, d, 1);
    out.push_back(std::move(e));
  }
  if (cfg.tie_embeddings) {  // Hugging Face expects lm_head.weight even when tied
    for (const auto& w : ck.weights)
      if (w.name == "model.embed_tokens.weight") out.push_back({"lm_head.weight", w.shape, w.data});
  }
  write_safetensors((fs::path(out_dir) / "model.safetensors").string(), out,
                    {{"format", "pt"}, {"seqpar_checkpoint", ck.dir}});

  // A model trained with --window w is a Mistral-style model: the same weights and names
  // as LLaMA, with a sliding window (Hugging Face's MistralConfig.sliding_window, keys
  // i − w < j ≤ i, as seqpar's). The reference logits are computed under the window.
  const int64_t window =
      ck.manifest.value("train", nlohmann::json::object()).value("window", int64_t(0));
  Batch b;
  b.B = 1;
  b.T = T;
  b.L = T;
  if (window > 0) {
    b.mask.B = 1;
    b.mask.L = T;
    b.mask.window = window;
  }
  for (int t = 0; t < T; ++t) {
    b.pos.push_back(t);
    b.tokens.push_back(int32_t((uint64_t(t) * 2654435761u + 12345) % uint64_t(cfg.V)));
    b.targets.push_back(-1);
    b.row_key.push_back(t);
  }
  model.forward(b, StepContext{0, 0, false});
  std::vector<float> toks(b.tokens.begin(), b.tokens.end());
  write_safetensors((fs::path(out_dir) / "seqpar_reference.safetensors").string(),
                    {{"tokens", {1, T}, toks}, {"logits", {T, cfg.V}, model.logits()}});

  // q/k/v biases make it a Qwen2 model (its window, when there is one, on every layer:
  // use_sliding_window with max_window_layers 0); else LLaMA, or Mistral with a window.
  const char* arch = cfg.qkv_bias ? "Qwen2ForCausalLM"
                     : window > 0 ? "MistralForCausalLM"
                                  : "LlamaForCausalLM";
  const char* type = cfg.qkv_bias ? "qwen2" : window > 0 ? "mistral" : "llama";
  nlohmann::json hf = {
      {"architectures", {arch}},
      {"model_type", type},
      {"hidden_size", cfg.C},
      {"intermediate_size", cfg.F},
      {"num_hidden_layers", cfg.n_layer},
      {"num_attention_heads", cfg.H},
      {"num_key_value_heads", cfg.Hkv},
      {"head_dim", cfg.d()},
      {"hidden_act", "silu"},
      {"rms_norm_eps", json_float(cfg.norm_eps)},
      {"rope_theta", json_float(cfg.rope_theta)},
      {"vocab_size", cfg.V},
      {"tie_word_embeddings", cfg.tie_embeddings},
      {"attention_bias", false},
      {"mlp_bias", false},
      {"initializer_range", json_float(cfg.init_std)},
      {"torch_dtype", "float32"},
      {"max_position_embeddings",
       ck.manifest.value("train", nlohmann::json::object()).value("seq_len", int64_t(2048))},
      {"seqpar_rope", "rotate_half (q_proj, k_proj rows permuted on export)"},
      {"seqpar_tokenizer_fnv1a64", cfg.tokenizer_hash}};
  if (cfg.qkv_bias) {
    hf.erase("attention_bias");  // not Qwen2Config's: its q/k/v biases are implied
    hf.erase("mlp_bias");
    hf["use_sliding_window"] = window > 0;
    hf["max_window_layers"] = 0;
  }
  if (window > 0) hf["sliding_window"] = window;
  if (cfg.rope_scaling != RopeScaling::none) hf["rope_scaling"] = hf_rope_scaling(cfg);
  // Hugging Face's dynamic scaling takes its original length from max_position_embeddings.
  if (cfg.rope_scaling == RopeScaling::dynamic)
    hf["max_position_embeddings"] = cfg.rope_original_len;
  write_file_atomic((fs::path(out_dir) / "config.json").string(), hf.dump(2) + "\n");
  if (!tokenizer.empty())  // under the name Hugging Face gives its kind
    write_file_atomic(
        (fs::path(out_dir) /
         (Tokenizer(tokenizer).kind() == TokenizerKind::bpe ? "tokenizer.json" : "tokenizer.model"))
            .string(),
        tokenizer_bytes);
  return "exported " + ck.dir + " (step " + std::to_string(ck.step) + ") to " + out_dir;
}

}  // namespace seqpar
