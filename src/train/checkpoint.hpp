// Checkpoints. A checkpoint is a directory  <root>/step_<NNNNNNNN>/  holding
//   model.safetensors      weights (F32, full unsharded tensors, names from the model)
//   optimizer.safetensors  AdamW first/second moments ("m.<name>", "v.<name>")
//   state.json             training state: step, RNG seed, data position, lr schedule...
//   manifest.json          written LAST: format version, model config, parallel layout,
//                          and for every file its size and FNV-1a 64 hash
// The step directory is built as <root>/step_<N>.tmp.<pid>/ (each file written to a temp
// name, fsync'ed, renamed), then renamed into place; an existing step directory is never
// written over. <root>/latest names the newest save, as a hint for people and scripts:
// loading a root reads the step directories themselves and takes the newest complete one
// (with a manifest), so a crash between installing a step and writing `latest` loses
// nothing. A directory without a manifest, or whose files disagree with it, is incomplete
// or corrupt and is refused with a message that names the file and what is wrong.
// Nothing is deleted but unfinished temporaries (remove_checkpoint_temporaries, called by
// the run that holds the run directory's lock): old checkpoints stay.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/file.hpp"  // fnv1a64, fnv1a64_file (manifest hashes)

namespace seqpar {

constexpr int kCheckpointFormatVersion = 1;

struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;  // row-major, numel(shape) floats
};

// ---- safetensors (https://github.com/huggingface/safetensors format, F32 only) -------
// 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype":"F32","shape":[...],"data_offsets":[begin,end]}, "__metadata__": {...}},
// then the raw data. Written atomically (temp + fsync + rename + dir fsync).
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Validates header length, JSON, dtype, shapes against offsets, offsets within the file,
// and no overlap; throws seqpar::Error naming the file and the problem.
// Tensors come back in data-offset order (the order write_safetensors was given them).
// The data section must be covered exactly: no gaps, no overlap, no trailing bytes.
std::vector<NamedTensor> read_safetensors(const std::string& path);
// As above, and also returns the "__metadata__" string map (empty if absent).
std::vector<NamedTensor> read_safetensors(const std::string& path,
                                          std::map<std::string, std::string>* metadata);

struct Checkpoint {
  int64_t step = 0;
  std::vector<NamedTensor> weights;
  std::vector<NamedTensor> optimizer;
  nlohmann::json state;     // contents of state.json
  nlohmann::json manifest;  // contents of manifest.json (model config, parallel layout, ...)
  std::string dir;          // the step directory it was read from / written to
};

// Writes <root>/step_<step>/ and updates <root>/latest; refuses if the step exists.
// `manifest_extra` (model config, parallel layout) is merged into the manifest; its
// "format_version", "step" and "files" keys, if any, are replaced by the ones save computes (so a
// loaded manifest can be passed back). Returns the step directory. The step directory is built
// under a temp name and renamed into place (RENAME_NOREPLACE), so it appears complete or not at
// all.
std::string save_checkpoint(const std::string& root, int64_t step,
                            const std::vector<NamedTensor>& weights,
                            const std::vector<NamedTensor>& optimizer, const nlohmann::json& state,
                            const nlohmann::json& manifest_extra);

// `path` is either a root (its newest complete step directory) or a step directory.
// Verifies the manifest (format version, sizes, hashes) before returning anything.
Checkpoint load_checkpoint(const std::string& path);

struct CheckpointEntry {
  int64_t step = 0;
  std::string dir;
  bool complete = false;  // has manifest.json (written last); contents not yet verified
};
// The step directories of `root` (step_<N>, temporaries excluded), by increasing step.
std::vector<CheckpointEntry> list_checkpoints(const std::string& root);

// True if `root` holds any step directory or a `latest` file: an earlier run saved here.
bool has_checkpoint(const std::string& root);

// Removes the step_<N>.tmp.<pid> directories a killed save left behind; returns them.
// Only for the holder of the run directory's lock: no live writer then owns one.
std::vector<std::string> remove_checkpoint_temporaries(const std::string& root);

// Atomic small-file write: temp + fsync + rename + fsync(dir).
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace seqpar
