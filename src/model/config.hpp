// Model configuration. Notation (DESIGN.md): C model width, H query heads, Hkv key/value
// heads, d = C/H head dim, F feed-forward width, V vocabulary, n_layer blocks.
#pragma once
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>

#include "core/check.hpp"

namespace seqpar {

// Reads j[key] into field if present, refusing a value of the wrong type or out of the
// field's range with the key named (no silent truncation of 2.9 → 2 or 2³²+2 → 2).
template <class T>
void json_get(const nlohmann::json& j, const char* key, T& field) {
  if (!j.contains(key)) return;
  const nlohmann::json& v = j.at(key);
  if constexpr (std::is_same_v<T, bool>) {
    SP_CHECK_USAGE(v.is_boolean(), "config '", key, "' must be true or false, got ", v.dump());
    field = v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    SP_CHECK_USAGE(v.is_number_integer(), "config '", key, "' must be an integer, got ", v.dump());
    if (v.is_number_unsigned()) {
      const uint64_t x = v.get<uint64_t>();
      SP_CHECK_USAGE(x <= uint64_t(std::numeric_limits<T>::max()), "config '", key, "' = ", x,
                     " is out of range (at most ", std::numeric_limits<T>::max(), ")");
      field = static_cast<T>(x);
    } else {
      const int64_t x = v.get<int64_t>();
      SP_CHECK_USAGE(x >= int64_t(std::numeric_limits<T>::min()) &&
                         (x < 0 || uint64_t(x) <= uint64_t(std::numeric_limits<T>::max())),
                     "config '", key, "' = ", x, " is out of range [",
                     +std::numeric_limits<T>::min(), ", ", +std::numeric_limits<T>::max(), "]");
      field = static_cast<T>(x);
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    SP_CHECK_USAGE(v.is_number(), "config '", key, "' must be a number, got ", v.dump());
    field = v.get<T>();
  } else {
    SP_CHECK_USAGE(v.is_string(), "config '", key, "' must be a string, got ", v.dump());
    field = v.get<std::string>();
  }
}

// A float as the user wrote it: the shortest decimal that reads back as the same float
// (2e-3f is shown 0.002, not 0.0020000000949949026 as its widening to double prints).
nlohmann::json json_float(float f);

// gpt: GPT-style causal LM (LayerNorm, GELU, biases, tied head); bert: the same blocks,
// bidirectional, masked-LM targets; llama: LLaMA-style causal LM (RMSNorm, SwiGLU, no
// biases, tied or untied head).
enum class ModelKind { gpt, bert, llama };
const char* model_kind_name(ModelKind k);
ModelKind parse_model_kind(const std::string& s);

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
  float init_std = 0.02f;
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
  // Throws seqpar::Error naming the offending value.
  void validate() const;
  nlohmann::json to_json() const;
  static ModelConfig from_json(const nlohmann::json& j);  // missing keys keep defaults
};

}  // namespace seqpar
