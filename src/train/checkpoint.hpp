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
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/file.hpp"  // AtomicFileWriter, Fd; fnv1a64 and hash_hex (manifest hashes)

namespace seqpar {

// 2: the manifest holds its own hash (kManifestHashKey). Version 1 checkpoints still load.
constexpr int kCheckpointFormatVersion = 2;
// FNV-1a 64 (hex) of manifest.json as written without this key (docs/checkpoints.md).
constexpr const char* kManifestHashKey = "manifest_fnv1a64";

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
// and no overlap; throws seqpar::InputError naming the file and the problem.
// Tensors come back in data-offset order (the order write_safetensors was given them).
// The data section must be covered exactly: no gaps, no overlap, no trailing bytes.
std::vector<NamedTensor> read_safetensors(const std::string& path);
// As above, and also returns the "__metadata__" string map (empty if absent).
std::vector<NamedTensor> read_safetensors(const std::string& path,
                                          std::map<std::string, std::string>* metadata);

// Streaming: a file written or read tensor by tensor, in pieces, through the caller's
// buffer, so that no process holds a whole model. The bytes are those of write_safetensors
// / read_safetensors (which are built on these two classes).
struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
};
struct FileDigest {
  uint64_t bytes = 0;
  uint64_t fnv1a64 = 0;  // of the whole file, as fnv1a64_file computes it
};
class SafetensorsWriter {
 public:
  // The header is computed up front from the names and shapes (F32, data offsets in the
  // order given) and written at once; the data follows through append().
  SafetensorsWriter(const std::string& path, const std::vector<TensorInfo>& tensors,
                    const std::map<std::string, std::string>& metadata = {});
  // The next n floats of the data section (the tensors in order, each row-major).
  void append(const float* data, size_t n);
  // Every float appended (checked): fsync, rename into place. Size and FNV-1a 64 of the
  // file, hashed as the bytes went out (no second read).
  FileDigest commit();
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  AtomicFileWriter file_;
  uint64_t data_bytes_ = 0, written_ = 0;
  Fnv1a64 hash_;
};
class SafetensorsReader {
 public:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    uint64_t begin = 0, end = 0;  // byte offsets in the data section
    int64_t numel() const { return int64_t((end - begin) / sizeof(float)); }
  };
  // Opens and validates the header as read_safetensors does (the same errors).
  explicit SafetensorsReader(const std::string& path);
  const std::vector<Entry>& entries() const { return entries_; }  // by data offset
  const Entry* find(const std::string& name) const;               // null if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Floats [off, off + n) of entry e (pread; a short file is an error naming it).
  void read(const Entry& e, int64_t off, int64_t n, float* out) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::shared_ptr<Fd> fd_;  // shared by copies of the reader
  uint64_t data_start_ = 0;
  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

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

// A step directory's manifest.json, verified without reading the files it lists: a JSON
// object of a supported format_version, its own hash, an integer step equal to the
// directory's name, and its "model" and "train" settings passing the command line's
// checks. InputError ("checkpoint <dir> is corrupt: ...") otherwise.
nlohmann::json read_step_manifest(const std::string& step_dir);
// Sets m's kManifestHashKey to the hash of m without it, and returns the text to write:
// what a CheckpointWriter writes as manifest.json (tests use it to forge consistent ones).
std::string sealed_manifest_text(nlohmann::json& m);

// `path` is either a root (its newest complete step directory) or a step directory.
// Verifies the manifest (format version, sizes, hashes) before returning anything.
Checkpoint load_checkpoint(const std::string& path);
// As load_checkpoint, verified the same way, but without the tensors (weights and optimizer
// stay empty): the caller streams them from <dir>/model.safetensors and
// <dir>/optimizer.safetensors with a SafetensorsReader.
Checkpoint open_checkpoint(const std::string& path);

// A checkpoint written as a stream: open_file / append / close_file for model.safetensors
// and then optimizer.safetensors, then finish() with the state and the manifest. Files go
// to <root>/step_<N>.tmp.<pid>/; finish() writes state.json, the manifest last (with the
// sizes and hashes taken while the files were written), installs the step directory and
// updates `latest`. Destroyed unfinished (an error on the way), the temp directory is
// removed. save_checkpoint is this with whole tensors.
class CheckpointWriter {
 public:
  CheckpointWriter(const std::string& root, int64_t step);
  ~CheckpointWriter();
  CheckpointWriter(const CheckpointWriter&) = delete;
  CheckpointWriter& operator=(const CheckpointWriter&) = delete;
  // file: "model.safetensors" or "optimizer.safetensors".
  void open_file(const std::string& file, const std::vector<TensorInfo>& tensors);
  void append(const float* data, size_t n);
  void close_file();
  // Returns the step directory.
  std::string finish(const nlohmann::json& state, const nlohmann::json& manifest_extra);

 private:
  std::string root_, name_, final_dir_, tmp_dir_, open_name_;
  int64_t step_;
  std::unique_ptr<SafetensorsWriter> open_;
  std::map<std::string, FileDigest> digests_;
  bool finished_ = false;
};

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

}  // namespace seqpar
