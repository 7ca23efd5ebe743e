// Model configuration. Notation (DESIGN.md): C model width, H query heads, Hkv key/value
// heads, d = C/H head dim, F feed-forward width, V vocabulary, n_layer blocks.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace seqpar {

enum class ModelKind { gpt, bert };
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

  int d() const { return C / H; }
  int qkv_width() const { return (H + 2 * Hkv) * d(); }
  bool causal() const { return kind == ModelKind::gpt; }
  // Throws seqpar::Error naming the offending value.
  void validate() const;
  nlohmann::json to_json() const;
  static ModelConfig from_json(const nlohmann::json& j);  // missing keys keep defaults
};

}  // namespace seqpar
