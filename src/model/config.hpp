// Model configuration. Notation (DESIGN.md): C model width, H query heads, Hkv key/value
// heads, d = C/H head dim, F feed-forward width, V vocabulary, n_layer blocks.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>

#include "core/check.hpp"
#include "core/options.hpp"
#include "kernels/rope.hpp"

namespace seqpar {

// gpt: GPT-style causal LM (LayerNorm, GELU, biases, tied head); bert: the same blocks,
// bidirectional, masked-LM targets; llama: LLaMA-style causal LM (RMSNorm, SwiGLU, no
// biases, tied or untied head).
enum class ModelKind { gpt, bert, llama };
template <>
struct EnumNames<ModelKind> {
  static constexpr const char* what = "model";
  static constexpr std::pair<ModelKind, const char*> table[] = {
      {ModelKind::gpt, "gpt"}, {ModelKind::bert, "bert"}, {ModelKind::llama, "llama"}};
};
inline const char* model_kind_name(ModelKind k) { return enum_name(k); }
inline ModelKind parse_model_kind(const std::string& s) { return parse_enum<ModelKind>(s); }

// Bounds no real model approaches (the largest published ones have ~10^2 layers, C ~ 2·10^4,
// V ~ 2.6·10^5, ~10^12 parameters): beyond them a size is a typo or an attack, refused
// before anything is allocated.
constexpr int kMaxLayers = 1 << 16;
constexpr int kMaxWidth = 1 << 20;
constexpr int kMaxVocab = 1 << 30;
constexpr long double kMaxParams = 1099511627776.0L;  // 2^40

struct ModelConfig {
  ModelKind kind = ModelKind::gpt;  // gpt: causal LM; bert: bidirectional masked LM
  int n_layer = 2;
  int C = 256;
  int H = 4;
  int Hkv = 4;                // grouped-query attention when Hkv < H (H % Hkv == 0)
  int F = 1024;               // feed-forward width
  int V = 256;                // byte vocabulary (+1 for [MASK] when kind == bert)
  float dropout = 0.0f;       // embedding, attention-output and MLP-output dropout
  float attn_dropout = 0.0f;  // attention-probability dropout
  float rope_theta = 10000.0f;
  // RoPE scaling (kernels/rope.hpp; Hugging Face's rope_scaling): type, factor s, original
  // context length L0, and the type's own parameters. Defaults are Hugging Face's.
  RopeScaling rope_scaling = RopeScaling::none;
  float rope_factor = 1.0f;
  int64_t rope_original_len = 0;  // 0: not set
  float rope_beta_fast = 32.0f;
  float rope_beta_slow = 1.0f;
  float rope_attention_factor = 0.0f;  // yarn's temperature m; 0: 0.1·ln s + 1
  float rope_low_freq_factor = 1.0f;
  float rope_high_freq_factor = 4.0f;
  float init_std = 0.02f;
  bool qkv_bias = false;       // llama: q/k/v projection biases (Qwen2)
  bool tie_embeddings = true;  // output head = input embedding (default: gpt/bert yes, llama no)
  float norm_eps = 1e-5f;      // RMSNorm epsilon (llama; LayerNorm uses 1e-5)
  // FNV-1a 64 of the SentencePiece model the vocabulary comes from; 0 = byte tokens.
  uint64_t tokenizer_hash = 0;

  int d() const { return C / H; }
  int qkv_width() const { return (H + 2 * Hkv) * d(); }
  bool causal() const { return kind != ModelKind::bert; }
  bool llama() const { return kind == ModelKind::llama; }
  // Floats of one row of the first feed-forward product: [gate | up] for SwiGLU.
  int fc1_width() const { return llama() ? 2 * F : F; }
  RopeScalingParams rope_params() const;
  // layers·(4·C² + 3·C·F + 8·C) + 2·V·C: at least the parameter count of every kind, in
  // long double so that no input overflows it.
  long double approx_params() const;
  // Throws seqpar::UsageError naming the offending value.
  void validate() const;
  void validate_rope_scaling() const;  // the RoPE rows together (part of validate)
  nlohmann::json to_json() const;
  // to_json without the rows that are resume keys (the RoPE scaling): what the weights
  // were built for. Two configurations with equal weights_json load each other's tensors.
  nlohmann::json weights_json() const;
  static ModelConfig from_json(const nlohmann::json& j);  // missing keys keep defaults
};

// The model's settings, one row each (core/options.hpp): the training config projects them
// into its own table, so `--dim` and the config key `dim` are declared here only.
const OptionTable<ModelConfig>& model_options();

}  // namespace seqpar
