// Checkpoints. A checkpoint is a directory  <root>/step_<NNNNNNNN>/  holding
//   model.safetensors      weights (F32, full unsharded tensors, names from the model)
//   optimizer.safetensors  AdamW first/second moments ("m.<name>", "v.<name>")
//   state.json             training state: step, RNG seed, data position, lr schedule...
//   manifest.json          written LAST: format version, model config, parallel layout,
//                          and for every file its size and FNV-1a 64 hash
// Each file is written to a temp name, fsync'ed, renamed, and the directory fsync'ed;
// then <root>/latest (a one-line file naming the step directory) is replaced the same
// way. A directory without a manifest, or whose files disagree with it, is incomplete
// or corrupt and is refused with a message that names the file and what is wrong.
// Nothing is ever deleted: old checkpoints stay (saving the same step again replaces it).
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

// Writes <root>/step_<step>/ and updates <root>/latest. `manifest_extra` (model config,
// parallel layout) is merged into the manifest; its "format_version", "step" and "files"
// keys, if any, are replaced by the ones save computes (so a loaded manifest can be passed
// back). Returns the step directory. The step directory is built under a temp name and
// renamed into place, so saving a step that already exists replaces it atomically
// (RENAME_EXCHANGE) and `latest` always names a complete checkpoint.
std::string save_checkpoint(const std::string& root, int64_t step,
                            const std::vector<NamedTensor>& weights,
                            const std::vector<NamedTensor>& optimizer, const nlohmann::json& state,
                            const nlohmann::json& manifest_extra);

// `path` is either a root (uses <root>/latest) or a step directory. Verifies the
// manifest (format version, sizes, hashes) before returning anything.
Checkpoint load_checkpoint(const std::string& path);

// True if `root` holds a `latest` pointer (a run can resume from it).
bool has_checkpoint(const std::string& root);

// Atomic small-file write: temp + fsync + rename + fsync(dir).
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace seqpar
