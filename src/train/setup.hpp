// The set-up every subcommand shares. train, check, plan, eval, generate and export resolve
// their threads, checkpoint, configuration and data here, so the same bad input gets the
// same message and the same exit code from each of them (UsageError: 2, any other Error: 1).
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "train/config.hpp"
#include "train/data.hpp"

namespace seqpar {

// Threads per rank: `requested`, or (0) OMP_NUM_THREADS, or the node's cores shared by
// `ranks` ranks; at least 1. Sets OpenMP's and OpenBLAS's counts and returns it.
int resolve_threads(int requested, int ranks);
int apply_threads(const TrainConfig& cfg, int world_size);

// The step directory `path` stands for: a step directory (it has manifest.json), a
// checkpoints/ root or a run directory (their newest complete step). A path that does not
// exist or holds no complete checkpoint is an InputError naming it.
std::string resolve_checkpoint(const std::string& path);
// A checkpoint's manifest.json as a JSON object (InputError naming the file otherwise).
nlohmann::json read_manifest(const std::string& step_dir);
// The training configuration a checkpoint's manifest records (its "train" block).
nlohmann::json checkpoint_train_config(const std::string& step_dir, int64_t* step = nullptr);

// train, check and plan: defaults < the config file (`config_path`, may be empty) < the
// flags (config keys), then validated for `world` ranks. Without --out, a fresh run never
// lands on an earlier run's checkpoints: runs/default, then runs/default-2, -3, ...
TrainConfig configure_run(const std::string& config_path, const nlohmann::json& flags, int world);
// eval: the checkpoint's run, with this launch's mesh (the per_launch rows: 1 rank unless
// given) and the flags over it.
TrainConfig configure_from_checkpoint(const std::string& step_dir, const nlohmann::json& flags);

// Readers never write into what they read. Refuses (UsageError, before anything is
// written) an output path `out` (given as `flag`) that lies inside a checkpoint (a step
// directory, or a checkpoints/ root: a directory holding step_<N> directories)
// or is one of `inputs` ({flag, path}) under any name (the same inode: "./x", a symbolic
// or hard link). An output that does not exist yet is no input.
void check_output_path(const std::string& out, const std::string& flag,
                       const std::vector<std::pair<std::string, std::string>>& inputs = {});
// export: a directory to create or fill. Besides check_output_path, a directory that
// already holds anything is refused unless `force` (its files would be replaced).
void check_output_dir(const std::string& dir, const std::string& flag, bool force);

// Refuses (InputError) data that is not what the checkpoint in `step_dir` was trained on:
// the identity its manifest records ("data": data_identity at training time) against
// `now` (data_identity of the data this launch reads). Equal size and content hash pass,
// wherever the file now lives; a manifest without an identity (written before seqpar
// recorded one) passes.
void check_same_data(const nlohmann::json& manifest, const std::string& step_dir,
                     const nlohmann::json& now);

// The data source of `cfg` for `split`, checked against the model (vocabulary, tokenizer),
// the packing and the loss targets. `model_what` names the model in messages.
std::unique_ptr<DataSource> open_data(const TrainConfig& cfg, Split split,
                                      const std::string& model_what = "the model (--vocab)");

}  // namespace seqpar
