#include "train/config.hpp"

#include <algorithm>
#include <cmath>

#include "core/check.hpp"
#include "core/memory.hpp"
#include "parallel/attention.hpp"

namespace seqpar {

const char* progress_name(ProgressMode p) {
  switch (p) {
    case ProgressMode::automatic:
      return "auto";
    case ProgressMode::bar:
      return "bar";
    case ProgressMode::lines:
      return "lines";
    case ProgressMode::none:
      return "none";
  }
  return "?";
}

ProgressMode parse_progress(const std::string& s) {
  for (ProgressMode p :
       {ProgressMode::automatic, ProgressMode::bar, ProgressMode::lines, ProgressMode::none})
    if (s == progress_name(p)) return p;
  SP_FAIL_USAGE("progress must be auto, bar, lines or none, got '", s, "'");
}

void TrainConfig::validate() const {
  model.validate();
  SP_CHECK_USAGE(seq_len >= 2, "seq_len must be >= 2, got ", seq_len);
  SP_CHECK_USAGE(batch >= 1, "batch must be >= 1, got ", batch);
  SP_CHECK_USAGE(steps >= 0, "steps must be >= 0, got ", steps);
  SP_CHECK_USAGE(lr > 0 && std::isfinite(lr), "lr must be > 0, got ", lr);
  SP_CHECK_USAGE(min_lr >= 0 && min_lr <= lr, "min_lr must be in [0, lr=", lr, "], got ", min_lr);
  SP_CHECK_USAGE(warmup >= 0, "warmup must be >= 0, got ", warmup);
  SP_CHECK_USAGE(weight_decay >= 0, "weight_decay must be >= 0, got ", weight_decay);
  SP_CHECK_USAGE(beta1 >= 0 && beta1 < 1, "beta1 must be in [0, 1), got ", beta1);
  SP_CHECK_USAGE(beta2 >= 0 && beta2 < 1, "beta2 must be in [0, 1), got ", beta2);
  SP_CHECK_USAGE(eps > 0, "eps must be > 0, got ", eps);
  SP_CHECK_USAGE(grad_clip >= 0, "grad_clip must be >= 0 (0 = off), got ", grad_clip);
  SP_CHECK_USAGE(ckpt_every >= 0, "ckpt_every must be >= 0, got ", ckpt_every);
  SP_CHECK_USAGE(log_every >= 1, "log_every must be >= 1, got ", log_every);
  SP_CHECK_USAGE(stop_after >= 0, "stop_after must be >= 0, got ", stop_after);
  if (max_memory != "available") parse_bytes(max_memory, "max_memory");
  SP_CHECK_USAGE(threads >= 0, "threads must be >= 0, got ", threads);
  SP_CHECK_USAGE(sp >= 1, "sp must be >= 1, got ", sp);
  SP_CHECK_USAGE(seq_len / sp <= (int64_t(1) << 30), "seq_len/sp = ", seq_len / sp,
                 " tokens per rank is beyond what this engine indexes (2^30); use more ranks");
  SP_CHECK_USAGE(tp >= 1, "tp must be >= 1, got ", tp);
  SP_CHECK_USAGE(zero >= 0 && zero <= 3, "zero must be 0, 1, 2 or 3, got ", zero);
  SP_CHECK_USAGE(mqsp_micro >= 0, "mqsp_micro must be >= 0 (0 = sp), got ", mqsp_micro);
  SP_CHECK_USAGE(usp_ulysses >= 0, "usp_ulysses must be >= 0 (0 = automatic), got ", usp_ulysses);
  SP_CHECK_USAGE(!out.empty(), "out directory must not be empty");
  SP_CHECK_USAGE(loss_chunk >= 0, "loss_chunk must be >= 0 (0 = default), got ", loss_chunk);
  const auto& names = attention_strategies();
  if (std::find(names.begin(), names.end(), strategy) == names.end()) {
    std::string all;
    for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
    SP_FAIL_USAGE("unknown attention strategy '", strategy, "' (available: ", all, ")");
  }
  SP_CHECK_USAGE(window >= 0, "window must be >= 0 (0 = off), got ", window);
  SP_CHECK_USAGE(eval_every >= 0, "eval_every must be >= 0 (0 = off), got ", eval_every);
  SP_CHECK_USAGE(eval_batches >= 1, "eval_batches must be >= 1, got ", eval_batches);
  SP_CHECK_USAGE(doc_positions == DocPositions::global || pack_documents, "doc_positions ",
                 doc_positions_name(doc_positions),
                 " needs --pack-documents: without documents every row is one document that "
                 "starts at position 0, so its positions are the global ones");
  if (pack_documents || window > 0) {
    const auto ms = mask_strategies();
    if (std::find(ms.begin(), ms.end(), strategy) == ms.end()) {
      std::string all;
      for (const auto& n : ms) all += (all.empty() ? "" : ", ") + n;
      SP_FAIL_USAGE("attention strategy '", strategy, "' does not support ",
                    pack_documents ? "document masks (--pack-documents)" : "",
                    pack_documents && window > 0 ? " or " : "",
                    window > 0 ? "a sliding window (--window " + std::to_string(window) + ")" : "",
                    " yet; strategies that do: ", all);
    }
  }
  for (const std::string& k : overrides)
    SP_CHECK_USAGE(std::find(resume_keys().begin(), resume_keys().end(), k) != resume_keys().end(),
                   "--override ", k,
                   ": not a setting resume checks (those are: ", resume_keys_list(), ")");
}

void TrainConfig::validate_for_world(int world) const {
  SP_CHECK_USAGE(world % (sp * tp) == 0, "world size ", world, " is not divisible by tp·sp = ", tp,
                 "·", sp, " (world = dp · tp · sp)");
  check_shardable(seq_len, sp, layout);
  // Megatron sequence parallelism gives each tp rank at least one of the B·T rows of the
  // shortest shard.
  const int64_t rows = int64_t(batch) * (seq_len / sp);
  SP_CHECK_USAGE(!tp_sp || tp == 1 || rows >= tp, "batch·⌊seq_len/sp⌋ = ", batch, "·", seq_len / sp,
                 " = ", rows, " rows per sequence shard are fewer than tp=", tp,
                 ": raise --batch or --seq-len");
  SP_CHECK_USAGE(strategy != "mqsp" || mqsp_micro <= seq_len,
                 "mqsp: micro-query count m=", mqsp_micro, " must be at most L=", seq_len);
  param_specs(model, tp, 0);  // heads, kv heads and ffn width divide over tp
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j = model.to_json();
  j.update({{"seq_len", seq_len},
            {"batch", batch},
            {"steps", steps},
            {"lr", json_float(lr)},
            {"min_lr", json_float(min_lr)},
            {"warmup", warmup},
            {"weight_decay", json_float(weight_decay)},
            {"beta1", json_float(beta1)},
            {"beta2", json_float(beta2)},
            {"eps", json_float(eps)},
            {"grad_clip", json_float(grad_clip)},
            {"seed", seed},
            {"data", data},
            {"out", out},
            {"ckpt_every", ckpt_every},
            {"threads", threads},
            {"log_every", log_every},
            {"progress", progress_name(progress)},
            {"sp_strategy", strategy},
            {"sp", sp},
            {"layout", layout_name(layout)},
            {"mqsp_micro", mqsp_micro},
            {"usp_ulysses", usp_ulysses},
            {"tp", tp},
            {"recompute", recompute_name(recompute)},
            {"tp_sp", tp_sp},
            {"zero", zero},
            {"loss", loss_name(loss)},
            {"loss_chunk", loss_chunk},
            {"precision", precision_name(precision)},
            {"pack_documents", pack_documents},
            {"doc_positions", doc_positions_name(doc_positions)},
            {"window", window},
            {"loss_on", loss_on_name(loss_on)},
            {"eval_every", eval_every},
            {"eval_batches", eval_batches}});
  return j;
}

void TrainConfig::merge_json(const nlohmann::json& j) {
  SP_CHECK_USAGE(j.is_object(), "config must be a JSON object");
  static const char* known[] = {"model",
                                "layers",
                                "dim",
                                "heads",
                                "kv_heads",
                                "ffn",
                                "vocab",
                                "dropout",
                                "attn_dropout",
                                "rope_theta",
                                "init_std",
                                "seq_len",
                                "batch",
                                "steps",
                                "lr",
                                "min_lr",
                                "warmup",
                                "weight_decay",
                                "beta1",
                                "beta2",
                                "eps",
                                "grad_clip",
                                "seed",
                                "data",
                                "out",
                                "ckpt_every",
                                "threads",
                                "log_every",
                                "progress",
                                "sp_strategy",
                                "sp",
                                "layout",
                                "resume",
                                "stop_after",
                                "max_memory",
                                "mqsp_micro",
                                "usp_ulysses",
                                "tp",
                                "recompute",
                                "tp_sp",
                                "zero",
                                "overrides",
                                "tie_embeddings",
                                "norm_eps",
                                "tokenizer_hash",
                                "loss",
                                "loss_chunk",
                                "precision",
                                "pack_documents",
                                "doc_positions",
                                "window",
                                "loss_on",
                                "eval_every",
                                "eval_batches"};
  for (auto& [k, v] : j.items()) {
    bool ok = false;
    for (const char* n : known) ok |= k == n;
    SP_CHECK_USAGE(ok, "unknown config key '", k, "'");
  }
  nlohmann::json m = model.to_json();
  for (auto& [k, v] : j.items())
    if (m.contains(k)) m[k] = v;
  // Width-dependent defaults (ffn = 4·dim, kv_heads = heads) follow the new values unless set.
  if (!j.contains("ffn") && (j.contains("dim") || j.contains("model"))) m.erase("ffn");
  if (!j.contains("tie_embeddings") && j.contains("model")) m.erase("tie_embeddings");
  if (!j.contains("kv_heads") && j.contains("heads")) m.erase("kv_heads");
  if (!j.contains("vocab") && j.contains("model")) m.erase("vocab");
  try {
    model = ModelConfig::from_json(m);
    auto get = [&](const char* key, auto& field) { json_get(j, key, field); };
    get("seq_len", seq_len);
    get("batch", batch);
    get("steps", steps);
    get("lr", lr);
    get("min_lr", min_lr);
    get("warmup", warmup);
    get("weight_decay", weight_decay);
    get("beta1", beta1);
    get("beta2", beta2);
    get("eps", eps);
    get("grad_clip", grad_clip);
    get("seed", seed);
    get("data", data);
    get("out", out);
    get("ckpt_every", ckpt_every);
    get("threads", threads);
    get("log_every", log_every);
    get("sp_strategy", strategy);
    get("sp", sp);
    get("resume", resume);
    get("stop_after", stop_after);
    get("max_memory", max_memory);
    get("mqsp_micro", mqsp_micro);
    get("usp_ulysses", usp_ulysses);
    get("tp", tp);
    get("tp_sp", tp_sp);
    get("zero", zero);
    std::string s;
    if (j.contains("progress")) get("progress", s), progress = parse_progress(s);
    if (j.contains("layout")) get("layout", s), layout = parse_layout(s);
    if (j.contains("recompute")) get("recompute", s), recompute = parse_recompute(s);
    if (j.contains("loss")) get("loss", s), loss = parse_loss(s);
    get("loss_chunk", loss_chunk);
    if (j.contains("precision")) get("precision", s), precision = parse_precision(s);
    get("pack_documents", pack_documents);
    if (j.contains("doc_positions"))
      get("doc_positions", s), doc_positions = parse_doc_positions(s);
    get("window", window);
    if (j.contains("loss_on")) get("loss_on", s), loss_on = parse_loss_on(s);
    get("eval_every", eval_every);
    get("eval_batches", eval_batches);
    if (j.contains("overrides")) {
      const auto& o = j.at("overrides");
      SP_CHECK_USAGE(o.is_array(), "config 'overrides' must be a list of setting names");
      overrides.clear();
      for (const auto& k : o) {
        SP_CHECK_USAGE(k.is_string(), "config 'overrides' must hold strings, got ", k.dump());
        std::string name = k.get<std::string>();
        std::replace(name.begin(), name.end(), '-', '_');  // --override seq-len = seq_len
        overrides.push_back(name);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    SP_FAIL_USAGE("config value of the wrong type: ", e.what());
  }
}

const std::vector<std::string>& resume_keys() {
  static const std::vector<std::string> keys = {
      "data",           "seq_len",       "seed",   "steps",  "lr",  "min_lr",
      "warmup",         "weight_decay",  "beta1",  "beta2",  "eps", "grad_clip",
      "pack_documents", "doc_positions", "window", "loss_on"};
  return keys;
}

std::string resume_keys_list() {
  std::string all;
  for (const auto& k : resume_keys()) all += (all.empty() ? "" : ", ") + k;
  return all;
}

float lr_at(const TrainConfig& c, int64_t s) {
  if (s < c.warmup) return c.lr * float(s + 1) / float(c.warmup);
  const int64_t decay_steps = std::max<int64_t>(1, c.steps - c.warmup);
  const double progress = std::min(1.0, double(s - c.warmup) / double(decay_steps));
  return float(c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace seqpar
