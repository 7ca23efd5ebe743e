#include "train/hf_import.hpp"

#include <fcntl.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "core/bf16.hpp"
#include "core/check.hpp"
#include "core/file.hpp"
#include "core/hash.hpp"
#include "data/tokenizer.hpp"
#include "model/param_specs.hpp"
#include "train/checkpoint.hpp"

namespace seqpar {

namespace fs = std::filesystem;

namespace {

// config.json fields that carry no meaning for the weights or the computation.
const std::set<std::string> kInert = {"architectures",
                                      "model_type",
                                      "torch_dtype",
                                      "transformers_version",
                                      "_name_or_path",
                                      "bos_token_id",
                                      "eos_token_id",
                                      "pad_token_id",
                                      "use_cache",
                                      "initializer_range",
                                      "max_position_embeddings",
                                      "seqpar_rope",
                                      "seqpar_tokenizer_fnv1a64"};

// Half precision (IEEE binary16) to float, exact.
float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return std::bit_cast<float>(sign);
    // Subnormal: normalise.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    return std::bit_cast<float>(sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ff) << 13);
  }
  return std::bit_cast<float>(sign | (exp + 127 - 15) << 23 | mant << 13);
}

// One tensor of a Hugging Face safetensors file: dtype F32, BF16 or F16.
struct HfTensor {
  std::string file, dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // absolute byte offsets in the file
};

int dtype_bytes(const std::string& dt) { return dt == "F32" ? 4 : 2; }

// The tensors of one file, header checked: bounded length, JSON, dtypes seqpar reads,
// shapes against offsets, offsets inside the file.
std::map<std::string, HfTensor> read_hf_header(const std::string& path) {
  Fd fd = open_checked(path, O_RDONLY, 0, Symlinks::follow);
  const uint64_t size = file_size(fd.get(), path);
  SP_CHECK_INPUT(size >= 8, "weights file ", path, " is shorter than a safetensors header");
  uint64_t n = 0;
  pread_all(fd.get(), &n, 8, 0, path);
  SP_CHECK_INPUT(n <= std::min<uint64_t>(size - 8, uint64_t(100) << 20), "weights file ", path,
                 ": header length ", n, " is beyond the file or 100 MiB");
  std::string text(n, '\0');
  pread_all(fd.get(), text.data(), n, 8, path);
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    SP_FAIL_INPUT("weights file ", path, ": header is not JSON: ", e.what());
  }
  SP_CHECK_INPUT(h.is_object(), "weights file ", path, ": header is not a JSON object");
  std::map<std::string, HfTensor> out;
  for (const auto& [name, e] : h.items()) {
    if (name == "__metadata__") continue;
    HfTensor t;
    t.file = path;
    bool ok = e.is_object() && e.contains("dtype") && e["dtype"].is_string() &&
              e.contains("shape") && e["shape"].is_array() && e.contains("data_offsets") &&
              e["data_offsets"].is_array() && e["data_offsets"].size() == 2;
    SP_CHECK_INPUT(ok, "weights file ", path, ": tensor '", name, "' has a malformed entry");
    t.dtype = e["dtype"].get<std::string>();
    SP_CHECK_INPUT(t.dtype == "F32" || t.dtype == "BF16" || t.dtype == "F16", "weights file ", path,
                   ": tensor '", name, "' is ", t.dtype, "; seqpar imports F32, BF16 and F16");
    uint64_t numel = 1;
    for (const auto& d : e["shape"]) {
      SP_CHECK_INPUT(d.is_number_unsigned() && d.get<uint64_t>() <= (uint64_t(1) << 40),
                     "weights file ", path, ": tensor '", name, "' has a bad shape");
      t.shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
      SP_CHECK_INPUT(numel <= (uint64_t(1) << 40), "weights file ", path, ": tensor '", name,
                     "' is beyond 2^40 elements");
    }
    const auto& off = e["data_offsets"];
    SP_CHECK_INPUT(off[0].is_number_unsigned() && off[1].is_number_unsigned(), "weights file ",
                   path, ": tensor '", name, "' has bad data_offsets");
    t.begin = 8 + n + off[0].get<uint64_t>();
    t.end = 8 + n + off[1].get<uint64_t>();
    SP_CHECK_INPUT(
        t.begin <= t.end && t.end <= size && t.end - t.begin == numel * dtype_bytes(t.dtype),
        "weights file ", path, ": tensor '", name,
        "' has data_offsets that do not match its shape or the file");
    out[name] = std::move(t);
  }
  return out;
}

// Every tensor of the model directory: one file, or the shards of the index.
std::map<std::string, HfTensor> hf_tensors(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (path_exists(single.string(), "weights file")) return read_hf_header(single.string());
  SP_CHECK_INPUT(path_exists(index.string(), "weights index"), "model directory ", dir,
                 " has neither model.safetensors nor model.safetensors.index.json");
  nlohmann::json idx;
  try {
    idx = nlohmann::json::parse(read_regular_file(index.string(), "weights index"));
  } catch (const nlohmann::json::exception& e) {
    SP_FAIL_INPUT("weights index ", index.string(), " is not JSON: ", e.what());
  }
  SP_CHECK_INPUT(idx.is_object() && idx.contains("weight_map") && idx["weight_map"].is_object(),
                 "weights index ", index.string(), " has no 'weight_map' object");
  std::map<std::string, std::map<std::string, HfTensor>> shards;
  std::map<std::string, HfTensor> out;
  for (const auto& [name, file] : idx["weight_map"].items()) {
    SP_CHECK_INPUT(file.is_string() && file.get<std::string>().find('/') == std::string::npos,
                   "weights index ", index.string(), ": tensor '", name,
                   "' maps to no plain file name");
    const std::string f = file.get<std::string>();
    if (!shards.count(f)) shards[f] = read_hf_header((fs::path(dir) / f).string());
    auto it = shards[f].find(name);
    SP_CHECK_INPUT(it != shards[f].end(), "weights index ", index.string(), " puts '", name,
                   "' in ", f, ", which does not hold it");
    out[name] = it->second;
  }
  for (const auto& [f, tensors] : shards)
    for (const auto& [name, t] : tensors)
      SP_CHECK_INPUT(out.count(name), "shard ", f, " holds '", name,
                     "', which the index does not list");
  return out;
}

// Rows of every head from rotate-half order back to interleaved pairs (the inverse of
// hf_export's): row h·d + 2i + half ← row h·d + half·d/2 + i.
void from_rotate_half(std::vector<float>& w, int64_t heads, int64_t d, int64_t C) {
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < d / 2; ++i)
      for (int64_t half = 0; half < 2; ++half) {
        const float* src = w.data() + (h * d + half * d / 2 + i) * C;
        std::copy(src, src + C, out.data() + (h * d + 2 * i + half) * C);
      }
  w.swap(out);
}

std::vector<float> read_tensor(const HfTensor& t) {
  const uint64_t numel = (t.end - t.begin) / dtype_bytes(t.dtype);
  std::vector<float> out(numel);
  Fd fd = open_checked(t.file, O_RDONLY, 0, Symlinks::follow);
  if (t.dtype == "F32") {
    pread_all(fd.get(), out.data(), numel * 4, t.begin, t.file);
    return out;
  }
  std::vector<uint16_t> half(std::min<uint64_t>(numel, uint64_t(1) << 22));
  for (uint64_t at = 0; at < numel; at += half.size()) {
    const uint64_t n = std::min<uint64_t>(half.size(), numel - at);
    pread_all(fd.get(), half.data(), n * 2, t.begin + at * 2, t.file);
    for (uint64_t i = 0; i < n; ++i)
      out[at + i] = t.dtype == "BF16" ? to_float(bf16{half[i]}) : f16_to_float(half[i]);
  }
  return out;
}

}  // namespace

std::string hf_tokenizer_path(const std::string& hf_dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.json"}) {
    const std::string p = (fs::path(hf_dir) / name).string();
    if (path_exists(p, "tokenizer")) return p;
  }
  SP_FAIL_INPUT(
      "model directory ", hf_dir,
      " has neither tokenizer.model (SentencePiece) nor tokenizer.json (byte-level BPE): "
      "seqpar needs the tokenizer the vocabulary comes from to check the data against it");
}

nlohmann::json hf_model_settings(const std::string& hf_dir) {
  const std::string path = (fs::path(hf_dir) / "config.json").string();
  nlohmann::json c;
  try {
    c = nlohmann::json::parse(read_regular_file(path, "model config"));
  } catch (const nlohmann::json::exception& e) {
    SP_FAIL_INPUT("model config ", path, " is not JSON: ", e.what());
  }
  SP_CHECK_INPUT(c.is_object(), "model config ", path, " is not a JSON object");
  auto arch = c.value("architectures", nlohmann::json::array());
  const std::string a = arch.is_array() && arch.size() == 1 && arch[0].is_string()
                            ? arch[0].get<std::string>()
                            : std::string("(none)");
  SP_CHECK_INPUT(a == "LlamaForCausalLM" || a == "MistralForCausalLM" || a == "Qwen2ForCausalLM",
                 path, ": architecture ", a,
                 " is not one seqpar imports (LlamaForCausalLM, MistralForCausalLM, "
                 "Qwen2ForCausalLM)");
  const bool qwen2 = a == "Qwen2ForCausalLM";
  std::set<std::string> used = kInert;
  auto num = [&](const char* key, bool required) -> nlohmann::json {
    used.insert(key);
    if (!c.contains(key) || c[key].is_null()) {
      SP_CHECK_INPUT(!required, path, " has no '", key, "'");
      return nullptr;
    }
    SP_CHECK_INPUT(c[key].is_number(), path, ": '", key, "' is not a number: ", c[key].dump());
    return c[key];
  };
  auto must = [&](const char* key, const nlohmann::json& want) {
    used.insert(key);
    SP_CHECK_INPUT(!c.contains(key) || c[key] == want || c[key].is_null(), path, ": '", key,
                   "' is ", c.contains(key) ? c[key].dump() : "", "; seqpar implements ",
                   want.dump(), " only");
  };
  nlohmann::json m = {{"model", "llama"}};
  m["dim"] = num("hidden_size", true);
  m["ffn"] = num("intermediate_size", true);
  m["layers"] = num("num_hidden_layers", true);
  m["heads"] = num("num_attention_heads", true);
  m["vocab"] = num("vocab_size", true);
  const nlohmann::json kv = num("num_key_value_heads", false);
  m["kv_heads"] = kv.is_null() ? m["heads"] : kv;
  if (const nlohmann::json e = num("rms_norm_eps", false); !e.is_null()) m["norm_eps"] = e;
  if (const nlohmann::json t = num("rope_theta", false); !t.is_null()) m["rope_theta"] = t;
  used.insert("tie_word_embeddings");
  m["tie_embeddings"] = c.value("tie_word_embeddings", false);
  if (const nlohmann::json hd = num("head_dim", false); !hd.is_null())
    SP_CHECK_INPUT(hd.get<int64_t>() * m["heads"].get<int64_t>() == m["dim"].get<int64_t>(), path,
                   ": head_dim ", hd.dump(), " is not hidden_size / num_attention_heads ",
                   "(seqpar's heads split the width)");
  must("hidden_act", "silu");
  must("attention_bias", false);
  must("mlp_bias", false);
  must("attention_dropout", 0.0);
  must("pretraining_tp", 1);
  used.insert("rope_scaling");
  if (c.contains("rope_scaling") && !c["rope_scaling"].is_null()) {
    // Hugging Face's rope_scaling, key by key onto the model's rope rows (the inverse of
    // hf_export's hf_rope_scaling); a key seqpar does not map is refused.
    const nlohmann::json& r = c["rope_scaling"];
    SP_CHECK_INPUT(r.is_object(), path, ": 'rope_scaling' is not an object");
    const std::string type = r.contains("rope_type") ? r.value("rope_type", std::string())
                                                     : r.value("type", std::string());
    m["rope_scaling"] = type;  // the option table refuses a type it does not know
    const std::map<std::string, std::string> keys = {
        {"factor", "rope_factor"},
        {"original_max_position_embeddings", "rope_original_len"},
        {"beta_fast", "rope_beta_fast"},
        {"beta_slow", "rope_beta_slow"},
        {"attention_factor", "rope_attention_factor"},
        {"low_freq_factor", "rope_low_freq_factor"},
        {"high_freq_factor", "rope_high_freq_factor"}};
    for (const auto& [k, v] : r.items()) {
      if (k == "rope_type" || k == "type") continue;
      SP_CHECK_INPUT(keys.count(k) && v.is_number(), path, ": rope_scaling's '", k, "' (", v.dump(),
                     ") is not a setting seqpar maps; refused rather than ignored");
      m[keys.at(k)] = v;
    }
    // Dynamic scaling's original length is max_position_embeddings in Hugging Face.
    if (type == "dynamic" && !m.contains("rope_original_len") &&
        c.contains("max_position_embeddings"))
      m["rope_original_len"] = c["max_position_embeddings"];
  }
  used.insert("sliding_window");
  if (qwen2) {
    // Qwen2: q/k/v biases; its window applies only with use_sliding_window, and then to
    // the layers from max_window_layers on: seqpar's one window for every layer is
    // max_window_layers 0, anything else is refused. Without use_sliding_window,
    // sliding_window is an unused number.
    m["qkv_bias"] = true;
    used.insert("use_sliding_window");
    const bool windowed = c.value("use_sliding_window", false) == true;
    if (windowed) must("max_window_layers", 0);
    used.insert("max_window_layers");
    if (!windowed) c.erase("sliding_window");
  }
  if (c.contains("sliding_window") && !c["sliding_window"].is_null()) {
    SP_CHECK_INPUT(c["sliding_window"].is_number_unsigned(), path,
                   ": 'sliding_window' is not a count: ", c["sliding_window"].dump());
    m["window"] = c["sliding_window"];
  }
  for (const auto& [key, v] : c.items())
    SP_CHECK_INPUT(used.count(key), path, ": field '", key, "' (", v.dump(),
                   ") is not one seqpar maps or knows to be inert; refused rather than ignored");
  // The tokenizer the vocabulary comes from: loaded (a corrupt one is refused by its own
  // reader) and checked against vocab_size (a model may pad its vocabulary, not shrink it).
  const std::string tpath = hf_tokenizer_path(hf_dir);
  const Tokenizer tok(tpath);
  SP_CHECK_INPUT(m.contains("vocab") && tok.vocab_size() <= m["vocab"].get<int64_t>(),
                 "model directory ", hf_dir, ": its tokenizer ", tpath, " has ", tok.vocab_size(),
                 " pieces, more than config.json's vocab_size ",
                 m.value("vocab", nlohmann::json()).dump(),
                 ": ids beyond it would have no embedding row");
  m["tokenizer_hash"] = tok.hash();
  return m;
}

std::string import_hf(const std::string& hf_dir, const std::string& checkpoints_root,
                      const TrainConfig& cfg, const nlohmann::json& data_id) {
  const ModelConfig& mc = cfg.model;
  SP_CHECK_USAGE(mc.llama(), "import: the model must be llama, got ", model_kind_name(mc.kind));
  // The tokenizer goes beside the run's checkpoints/, where generate looks for it. A file of
  // that name the user put there is kept: refused (before anything is written) if it holds
  // other bytes.
  const std::string tsrc = hf_tokenizer_path(hf_dir);
  const fs::path tdst = fs::path(checkpoints_root).parent_path() / fs::path(tsrc).filename();
  const std::string tok_bytes = read_regular_file(tsrc, "tokenizer");
  const bool tok_there = path_exists(tdst.string(), "tokenizer");
  SP_CHECK_INPUT(!tok_there || read_regular_file(tdst.string(), "tokenizer") == tok_bytes,
                 "run directory ", tdst.parent_path().string(), " already holds a ",
                 tdst.filename().string(), " other than ", tsrc,
                 "; it is left as it is (move it away and import again)");
  const std::map<std::string, HfTensor> tensors = hf_tensors(hf_dir);
  const std::vector<ParamSpec> specs = param_specs(mc, 1, 0);
  // Every tensor of the directory is used (lm_head of a tied model and rotary buffers
  // excepted) before anything is written.
  std::set<std::string> wanted;
  for (const ParamSpec& s : specs) wanted.insert(s.name);
  for (const auto& [name, t] : tensors) {
    const bool spare =
        (name == "lm_head.weight" && mc.tie_embeddings) || name.ends_with("rotary_emb.inv_freq");
    SP_CHECK_INPUT(wanted.count(name) || spare, "model directory ", hf_dir, ": tensor '", name,
                   "' is not part of the model seqpar builds; refused rather than ignored");
  }
  for (const ParamSpec& s : specs) {
    auto it = tensors.find(s.name);
    SP_CHECK_INPUT(it != tensors.end(), "model directory ", hf_dir, " has no tensor '", s.name,
                   "'");
    SP_CHECK_INPUT(it->second.shape == s.global_shape, "model directory ", hf_dir, ": tensor '",
                   s.name, "' has shape ", nlohmann::json(it->second.shape).dump(),
                   ", the model needs ", nlohmann::json(s.global_shape).dump());
  }
  std::vector<TensorInfo> infos, opt_infos;
  for (const ParamSpec& s : specs) infos.push_back({s.name, s.global_shape});
  for (const char* p : {"m.", "v."})
    for (const ParamSpec& s : specs) opt_infos.push_back({p + s.name, s.global_shape});
  CheckpointWriter w(checkpoints_root, 0);
  w.open_file("model.safetensors", infos);
  for (const ParamSpec& s : specs) {
    std::vector<float> data = read_tensor(tensors.at(s.name));  // one tensor at a time
    const int64_t d = mc.d();
    if (s.name.ends_with("q_proj.weight")) from_rotate_half(data, mc.H, d, mc.C);
    if (s.name.ends_with("k_proj.weight")) from_rotate_half(data, mc.Hkv, d, mc.C);
    if (s.name.ends_with("q_proj.bias")) from_rotate_half(data, mc.H, d, 1);  // Qwen2
    if (s.name.ends_with("k_proj.bias")) from_rotate_half(data, mc.Hkv, d, 1);
    w.append(data.data(), data.size());
  }
  w.close_file();
  w.open_file("optimizer.safetensors", opt_infos);  // AdamW moments start at zero
  const std::vector<float> zeros(size_t(1) << 20, 0.0f);
  for (const TensorInfo& t : opt_infos) {
    int64_t n = 1;
    for (int64_t x : t.shape) n *= x;
    for (int64_t at = 0; at < n; at += int64_t(zeros.size()))
      w.append(zeros.data(), size_t(std::min<int64_t>(int64_t(zeros.size()), n - at)));
  }
  w.close_file();
  const nlohmann::json state = {{"step", 0},
                                {"seed", cfg.seed},
                                {"next_sample", 0},
                                {"batch", cfg.batch},
                                {"dp", 1},
                                {"lr", 0.0},
                                {"imported_from", fs::absolute(hf_dir).string()}};
  const nlohmann::json extra = {{"model", mc.to_json()},
                                {"parallel", {{"dp", 1}, {"tp", 1}, {"sp", 1}}},
                                {"train", cfg.to_json()},
                                {"data", data_id},
                                {"imported_from", fs::absolute(hf_dir).string()}};
  const std::string dir = w.finish(state, extra);
  if (!tok_there) write_file_atomic(tdst.string(), tok_bytes);
  return dir;
}

}  // namespace seqpar
