#include "model/config.hpp"

#include "core/check.hpp"

namespace seqpar {

const char* model_kind_name(ModelKind k) { return k == ModelKind::gpt ? "gpt" : "bert"; }

ModelKind parse_model_kind(const std::string& s) {
  if (s == "gpt") return ModelKind::gpt;
  if (s == "bert") return ModelKind::bert;
  SP_FAIL("unknown model '", s, "' (expected gpt or bert)");
}

void ModelConfig::validate() const {
  SP_CHECK(n_layer >= 1, "layers must be >= 1, got ", n_layer);
  SP_CHECK(C >= 2, "model width C must be >= 2, got ", C);
  SP_CHECK(H >= 1, "heads H must be >= 1, got ", H);
  SP_CHECK(C % H == 0, "model width C=", C, " is not divisible by heads H=", H);
  SP_CHECK(d() % 2 == 0, "head dim d=C/H=", d(), " must be even for rotary embeddings");
  SP_CHECK(Hkv >= 1 && H % Hkv == 0, "kv heads Hkv=", Hkv, " must divide heads H=", H);
  SP_CHECK(F >= 1, "ffn width F must be >= 1, got ", F);
  int min_v = kind == ModelKind::bert ? 257 : 256;
  SP_CHECK(V >= min_v, "vocab V=", V, " too small: byte tokens need ", min_v,
           kind == ModelKind::bert ? " (256 bytes + [MASK])" : "");
  SP_CHECK(dropout >= 0.0f && dropout < 1.0f, "dropout must be in [0, 1), got ", dropout);
  SP_CHECK(attn_dropout >= 0.0f && attn_dropout < 1.0f, "attn dropout must be in [0, 1), got ",
           attn_dropout);
  SP_CHECK(rope_theta > 1.0f, "rope theta must be > 1, got ", rope_theta);
  SP_CHECK(init_std > 0.0f, "init std must be > 0, got ", init_std);
}

nlohmann::json ModelConfig::to_json() const {
  return {{"model", model_kind_name(kind)},
          {"layers", n_layer},
          {"dim", C},
          {"heads", H},
          {"kv_heads", Hkv},
          {"ffn", F},
          {"vocab", V},
          {"dropout", dropout},
          {"attn_dropout", attn_dropout},
          {"rope_theta", rope_theta},
          {"init_std", init_std}};
}

ModelConfig ModelConfig::from_json(const nlohmann::json& j) {
  ModelConfig c;
  if (j.contains("model")) c.kind = parse_model_kind(j.at("model").get<std::string>());
  if (c.kind == ModelKind::bert) c.V = 257;
  auto get = [&](const char* key, auto& field) {
    if (j.contains(key)) field = j.at(key).get<std::decay_t<decltype(field)>>();
  };
  get("layers", c.n_layer);
  get("dim", c.C);
  get("heads", c.H);
  c.Hkv = c.H;
  get("kv_heads", c.Hkv);
  c.F = 4 * c.C;
  get("ffn", c.F);
  get("vocab", c.V);
  get("dropout", c.dropout);
  get("attn_dropout", c.attn_dropout);
  get("rope_theta", c.rope_theta);
  get("init_std", c.init_std);
  return c;
}

}  // namespace seqpar
