#include "model/config.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>

#include "core/check.hpp"

namespace seqpar {

nlohmann::json json_float(float f) {
  if (!std::isfinite(f)) return f;
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, f);  // shortest round-trip form of the float
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

const char* model_kind_name(ModelKind k) {
  return k == ModelKind::gpt ? "gpt" : k == ModelKind::bert ? "bert" : "llama";
}

ModelKind parse_model_kind(const std::string& s) {
  if (s == "gpt") return ModelKind::gpt;
  if (s == "bert") return ModelKind::bert;
  if (s == "llama") return ModelKind::llama;
  SP_FAIL_USAGE("unknown model '", s, "' (expected gpt, bert or llama)");
}

void ModelConfig::validate() const {
  SP_CHECK_USAGE(n_layer >= 1, "layers must be >= 1, got ", n_layer);
  SP_CHECK_USAGE(C >= 2, "model width C must be >= 2, got ", C);
  SP_CHECK_USAGE(H >= 1, "heads H must be >= 1, got ", H);
  SP_CHECK_USAGE(C % H == 0, "model width C=", C, " is not divisible by heads H=", H);
  SP_CHECK_USAGE(d() % 2 == 0, "head dim d=C/H=", d(), " must be even for rotary embeddings");
  SP_CHECK_USAGE(Hkv >= 1 && H % Hkv == 0, "kv heads Hkv=", Hkv, " must divide heads H=", H);
  SP_CHECK_USAGE(F >= 1, "ffn width F must be >= 1, got ", F);
  if (tokenizer_hash == 0) {
    int min_v = kind == ModelKind::bert ? 257 : 256;
    SP_CHECK_USAGE(V >= min_v, "vocab V=", V, " too small: byte tokens need ", min_v,
                   kind == ModelKind::bert ? " (256 bytes + [MASK])" : "");
  }
  SP_CHECK_USAGE(V >= 2, "vocab V=", V, " must be >= 2");
  SP_CHECK_USAGE(norm_eps > 0.0f, "norm eps must be > 0, got ", norm_eps);
  SP_CHECK_USAGE(dropout >= 0.0f && dropout < 1.0f, "dropout must be in [0, 1), got ", dropout);
  SP_CHECK_USAGE(attn_dropout >= 0.0f && attn_dropout < 1.0f,
                 "attn dropout must be in [0, 1), got ", attn_dropout);
  SP_CHECK_USAGE(rope_theta > 1.0f, "rope theta must be > 1, got ", rope_theta);
  SP_CHECK_USAGE(init_std > 0.0f, "init std must be > 0, got ", init_std);
}

nlohmann::json ModelConfig::to_json() const {
  return {{"model", model_kind_name(kind)},
          {"layers", n_layer},
          {"dim", C},
          {"heads", H},
          {"kv_heads", Hkv},
          {"ffn", F},
          {"vocab", V},
          {"dropout", json_float(dropout)},
          {"attn_dropout", json_float(attn_dropout)},
          {"rope_theta", json_float(rope_theta)},
          {"init_std", json_float(init_std)},
          {"tie_embeddings", tie_embeddings},
          {"norm_eps", json_float(norm_eps)},
          {"tokenizer_hash", tokenizer_hash}};
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  ModelConfig c;
  std::string kind;
  json_get(j, "model", kind);
  if (!kind.empty()) c.kind = parse_model_kind(kind);
  if (c.kind == ModelKind::bert) c.V = 257;
  json_get(j, "layers", c.n_layer);
  json_get(j, "dim", c.C);
  json_get(j, "heads", c.H);
  c.Hkv = c.H;
  json_get(j, "kv_heads", c.Hkv);
  // LLaMA's SwiGLU has three matrices where GELU has two: F = 8·C/3 (rounded up to a
  // multiple of 32) keeps the parameter count of a 4·C GELU MLP.
  c.F = c.kind == ModelKind::llama ? (8 * c.C / 3 + 31) / 32 * 32 : 4 * c.C;
  json_get(j, "ffn", c.F);
  c.tie_embeddings = c.kind != ModelKind::llama;
  json_get(j, "tie_embeddings", c.tie_embeddings);
  json_get(j, "norm_eps", c.norm_eps);
  json_get(j, "tokenizer_hash", c.tokenizer_hash);
  json_get(j, "vocab", c.V);
  json_get(j, "dropout", c.dropout);
  json_get(j, "attn_dropout", c.attn_dropout);
  json_get(j, "rope_theta", c.rope_theta);
  json_get(j, "init_std", c.init_std);
  return c;
}

}  // namespace seqpar
