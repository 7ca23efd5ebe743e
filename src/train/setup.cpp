#include "train/setup.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/check.hpp"
#include "core/file.hpp"
#include "core/threads.hpp"
#include "train/checkpoint.hpp"
#include "train/hf_import.hpp"

namespace seqpar {

namespace fs = std::filesystem;

int resolve_threads(int requested, int ranks) {
  int threads = requested;
  if (threads <= 0) {
    threads = std::max(1, std::max(1, omp_get_num_procs()) / std::max(1, ranks));
    if (const char* e = std::getenv("OMP_NUM_THREADS")) {
      const long v = std::strtol(e, nullptr, 10);
      SP_CHECK_USAGE(v <= kMaxThreads, "OMP_NUM_THREADS=", e, " is beyond ", kMaxThreads,
                     " threads per rank");
      threads = int(std::max(1L, v));
    }
  }
  SP_CHECK_USAGE(threads <= kMaxThreads, "threads ", threads, " is beyond ", kMaxThreads,
                 " per rank");
  set_num_threads(threads);
  return threads;
}

int apply_threads(const TrainConfig& cfg, int world_size) {
  return resolve_threads(cfg.threads, world_size);
}

namespace {

// The newest complete step directory of a checkpoints root.
std::string newest_in_root(const std::string& root) {
  const std::vector<CheckpointEntry> all = list_checkpoints(root);
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (it->complete) return it->dir;
  SP_CHECK_INPUT(all.empty(), "checkpoint ", all.empty() ? "" : all.back().dir,
                 " is incomplete: manifest.json missing (and no complete step directory in ", root,
                 ")");
  SP_FAIL_INPUT("no checkpoint in ", root, ": no step_<N> directory with a manifest.json");
}

}  // namespace

std::string resolve_checkpoint(const std::string& path) {
  std::error_code ec;
  SP_CHECK_USAGE(!path.empty(),
                 "no checkpoint given: --checkpoint PATH (a step directory, a checkpoints/ root "
                 "or a run directory)");
  SP_CHECK_INPUT(path_exists(path, "checkpoint"), "no checkpoint at '", path,
                 "': path does not exist");
  SP_CHECK_INPUT(fs::is_directory(path, ec), "no checkpoint at '", path, "': not a directory");
  if (path_exists((fs::path(path) / "manifest.json").string(), "checkpoint manifest")) return path;
  if (fs::is_directory(fs::path(path) / "checkpoints", ec))
    return newest_in_root((fs::path(path) / "checkpoints").string());
  return newest_in_root(path);
}

nlohmann::json read_manifest(const std::string& step_dir) { return read_step_manifest(step_dir); }

nlohmann::json checkpoint_train_config(const std::string& step_dir, int64_t* step) {
  const nlohmann::json m = read_manifest(step_dir);
  SP_CHECK_INPUT(m.contains("train") && m["train"].is_object(), "checkpoint ", step_dir,
                 ": its manifest records no training configuration ('train'), so the data and "
                 "the sequence length are unknown");
  if (step) *step = m.value("step", int64_t(-1));
  return m["train"];
}

TrainConfig configure_run(const std::string& config_path, const nlohmann::json& flags, int world) {
  nlohmann::json merged = nlohmann::json::object();
  if (!config_path.empty()) {
    std::string text;
    try {
      text = read_regular_file(config_path, "config file");
    } catch (const InputError& e) {  // the user named it: a usage error, like a bad flag
      throw UsageError(e.what());
    }
    try {
      merged = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      SP_FAIL_USAGE("config file '", config_path, "' is not valid JSON: ", e.what());
    }
    SP_CHECK_USAGE(merged.is_object(), "config file '", config_path, "' must hold a JSON object");
  }
  // One merge of (file, then flags over it), so defaults that follow other keys (ffn =
  // 4·dim, kv_heads = heads, vocab by model) see both sources.
  merged.update(flags);
  // --init-from: the model is the Hugging Face directory's; a model flag that says
  // otherwise is refused, not silently overridden.
  const std::string hf = merged.value("init_from", std::string());
  if (!hf.empty()) {
    const nlohmann::json model = hf_model_settings(hf);
    for (const auto& [key, v] : model.items()) {
      SP_CHECK_USAGE(!flags.contains(key) || flags[key] == v, "--init-from ", hf,
                     " is a model with ", key, " = ", v.dump(), "; the command line says ",
                     flags[key].dump());
      merged[key] = v;
    }
  }
  const bool resume = merged.value("resume", false);
  // Every rank scans before anything is written, so all pick the same name.
  if (!merged.contains("out") && !resume) {
    std::string out = "runs/default";
    for (int k = 2; has_checkpoint(out + "/checkpoints"); ++k)
      out = "runs/default-" + std::to_string(k);
    merged["out"] = out;
  }
  TrainConfig cfg;
  cfg.merge_json(merged);
  fit_model_to_data(cfg.model, cfg.data, merged.contains("vocab"),
                    merged.contains("tokenizer_hash"));
  SP_CHECK_USAGE(cfg.overrides.empty() || cfg.resume, "--override only applies with --resume");
  cfg.validate();
  cfg.validate_for_world(world);
  return cfg;
}

TrainConfig configure_from_checkpoint(const std::string& step_dir, const nlohmann::json& flags) {
  nlohmann::json merged = checkpoint_train_config(step_dir);
  // The mesh is this launch's (1 rank unless given); threads stay the run's unless given
  // (their count changes fp32 sum orders: the same count reproduces the logged loss).
  for (const auto& o : train_options())
    if (o.per_launch) merged.erase(o.key);
  merged.update(flags);
  TrainConfig cfg;
  cfg.merge_json(merged);
  cfg.validate();
  return cfg;
}

namespace {

// True if `dir` is a checkpoint step directory (its manifest) or a checkpoints/ root (a
// step_<N> directory in it: list_checkpoints' rule). An unlistable directory is neither.
bool is_checkpoint_dir(const fs::path& dir) {
  std::error_code ec;
  if (fs::exists(dir / "manifest.json", ec)) return true;
  try {
    return !list_checkpoints(dir.string()).empty();
  } catch (const InputError&) {
    return false;
  }
}

}  // namespace

void check_output_path(const std::string& out, const std::string& flag,
                       const std::vector<std::pair<std::string, std::string>>& inputs) {
  std::error_code ec, ec_dir;
  // Every existing directory on the way to `out` (itself included), symbolic links resolved.
  const fs::path full = fs::weakly_canonical(fs::absolute(out, ec), ec);
  for (fs::path p = full; !ec && !p.empty(); p = p.parent_path()) {
    if (fs::is_directory(p, ec_dir) && is_checkpoint_dir(p))
      SP_FAIL_USAGE(flag, " '", out, "' is inside the checkpoint ", p.string(),
                    ": a command that reads checkpoints never writes into one (choose a path "
                    "outside the run's checkpoints/)");
    if (p == p.root_path()) break;
  }
  for (const auto& [in_flag, in] : inputs) {
    const bool same = !in.empty() && fs::equivalent(out, in, ec) && !ec;
    SP_CHECK_USAGE(!same, flag, " '", out, "' is the same file as ", in_flag, " '", in,
                   "': writing it would replace what the command reads (choose another output "
                   "path)");
  }
}

void check_output_dir(const std::string& dir, const std::string& flag, bool force) {
  check_output_path(dir, flag);
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  SP_CHECK_USAGE(fs::is_directory(dir, ec), flag, " '", dir, "' exists and is not a directory");
  SP_CHECK_USAGE(force || fs::is_empty(dir, ec), flag, " '", dir,
                 "' already holds files, which this command would replace; choose an empty or "
                 "new directory, or pass --force to overwrite them");
}

void check_same_data(const nlohmann::json& manifest, const std::string& step_dir,
                     const nlohmann::json& now) {
  const nlohmann::json was = manifest.value("data", nlohmann::json());
  if (!was.is_object() || !was.contains("xxh64")) return;
  if (now.value("bytes", nlohmann::json()) == was.value("bytes", nlohmann::json()) &&
      now.value("xxh64", nlohmann::json()) == was.value("xxh64", nlohmann::json()))
    return;
  auto describe = [](const nlohmann::json& id) {
    std::ostringstream os;
    if (!id.contains("path"))
      os << "'" << id.value("spec", std::string()) << "' (no file)";
    else
      os << "'" << id.value("path", std::string()) << "' (" << id.value("bytes", uint64_t(0))
         << " bytes, xxh64 " << id.value("xxh64", std::string()) << ")";
    return os.str();
  };
  SP_FAIL_INPUT("the data is not what checkpoint ", step_dir, " was trained on: it was ",
                describe(was), ", this launch reads ", describe(now),
                ". Run from the directory the run was started in, restore the file, or (train) "
                "accept other data with --override data");
}

std::unique_ptr<DataSource> open_data(const TrainConfig& cfg, Split split,
                                      const std::string& model_what) {
  auto src = make_source(cfg.data, cfg.seed, cfg.seq_len, split);
  check_data_matches_model(*src, cfg.model.V, cfg.model.tokenizer_hash, model_what, cfg.model.kind);
  check_packing(*src, cfg.packing());
  check_loss_on(*src, cfg.loss_on);
  return src;
}

}  // namespace seqpar
