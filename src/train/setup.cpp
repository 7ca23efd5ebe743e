#include "train/setup.hpp"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "core/check.hpp"
#include "core/file.hpp"
#include "core/threads.hpp"
#include "train/checkpoint.hpp"

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

std::unique_ptr<DataSource> open_data(const TrainConfig& cfg, Split split,
                                      const std::string& model_what) {
  auto src = make_source(cfg.data, cfg.seed, cfg.seq_len, split);
  check_data_matches_model(*src, cfg.model.V, cfg.model.tokenizer_hash, model_what, cfg.model.kind);
  check_packing(*src, cfg.packing());
  check_loss_on(*src, cfg.loss_on);
  return src;
}

}  // namespace seqpar
