// Checkpoint files: safetensors (F32) reader/writer and step directories with a manifest
// of sizes and FNV-1a 64 hashes. See checkpoint.hpp for the on-disk layout; the file I/O
// (atomic writes, checked reads, fsync) is core/file.hpp's.
#include "train/checkpoint.hpp"

#include <fcntl.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <system_error>

#include "core/check.hpp"
#include "model/config.hpp"
#include "train/config.hpp"

namespace seqpar {
namespace fs = std::filesystem;

// Tensor data is copied straight between float vectors and the file.
static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; this reader/writer assumes a little-endian host");

namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// numel(shape) * sizeof(float) with overflow and sign checks; false if not representable.
bool f32_bytes(const std::vector<int64_t>& shape, uint64_t* bytes) {
  uint64_t n = sizeof(float);
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  *bytes = n;
  return true;
}

// A JSON integer >= 0 (nlohmann stores it as signed or unsigned depending on the text).
bool json_u64(const nlohmann::json& j, uint64_t* out) {
  if (j.is_number_unsigned()) {
    *out = j.get<uint64_t>();
    return true;
  }
  if (j.is_number_integer() && j.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(j.get<int64_t>());
    return true;
  }
  return false;
}

template <class Json>
std::string dump_json(const Json& j, int indent, const std::string& what) {
  try {
    return j.dump(indent);
  } catch (const nlohmann::json::exception& e) {
    SP_FAIL("cannot serialise ", what, " as JSON: ", e.what());
  }
}

// ---- safetensors ---------------------------------------------------------------------

// The header of a safetensors file of these tensors: 8-byte length, then the JSON (in data
// order, padded with spaces so the data starts 8-byte aligned). Sets *data_bytes.
std::string safetensors_header(const std::string& path, const std::vector<TensorInfo>& tensors,
                               const std::map<std::string, std::string>& metadata,
                               uint64_t* data_bytes) {
  // ordered_json keeps the header in data order, which is easier to read in a hex dump.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const TensorInfo& t : tensors) {
    SP_CHECK(t.name != "__metadata__", "write_safetensors(", path,
             "): '__metadata__' is reserved and cannot name a tensor");
    SP_CHECK(names.insert(t.name).second, "write_safetensors(", path, "): duplicate tensor name '",
             t.name, "'");
    uint64_t bytes = 0;
    SP_CHECK(f32_bytes(t.shape, &bytes), "write_safetensors(", path, "): tensor '", t.name,
             "' has invalid shape ", shape_str(t.shape));
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = dump_json(header, -1, "safetensors header for " + path);
  h.append((8 - h.size() % 8) % 8, ' ');  // data section starts 8-byte aligned
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(uint64_t(h.size()) >> (8 * i));
  *data_bytes = offset;
  return out + h;
}

}  // namespace

SafetensorsWriter::SafetensorsWriter(const std::string& path,
                                     const std::vector<TensorInfo>& tensors,
                                     const std::map<std::string, std::string>& metadata)
    : file_(path) {
  const std::string header = safetensors_header(path, tensors, metadata, &data_bytes_);
  file_.write(header.data(), header.size());
  hash_.update(header.data(), header.size());
}

void SafetensorsWriter::append(const float* data, size_t n) {
  const uint64_t bytes = uint64_t(n) * sizeof(float);
  SP_CHECK(written_ + bytes <= data_bytes_, "write_safetensors(", file_.path(),
           "): ", written_ + bytes, " data bytes appended, the header declares ", data_bytes_);
  if (n == 0) return;
  file_.write(data, bytes);
  hash_.update(data, bytes);
  written_ += bytes;
}

FileDigest SafetensorsWriter::commit() {
  SP_CHECK(written_ == data_bytes_, "write_safetensors(", file_.path(), "): ", written_,
           " data bytes appended, the header declares ", data_bytes_);
  const FileDigest d{file_.bytes_written(), hash_.value()};
  file_.commit();
  return d;
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<TensorInfo> infos;
  for (const NamedTensor& t : tensors) {
    uint64_t bytes = 0;
    SP_CHECK(f32_bytes(t.shape, &bytes), "write_safetensors(", path, "): tensor '", t.name,
             "' has invalid shape ", shape_str(t.shape));
    SP_CHECK(t.data.size() * sizeof(float) == bytes, "write_safetensors(", path, "): tensor '",
             t.name, "' has ", t.data.size(), " floats, shape ", shape_str(t.shape), " needs ",
             bytes / sizeof(float));
    infos.push_back({t.name, t.shape});
  }
  SafetensorsWriter w(path, infos, metadata);
  for (const NamedTensor& t : tensors) w.append(t.data.data(), t.data.size());
  w.commit();
}

std::vector<NamedTensor> read_safetensors(const std::string& path) {
  return read_safetensors(path, nullptr);
}

std::vector<NamedTensor> read_safetensors(const std::string& path,
                                          std::map<std::string, std::string>* metadata) {
  SafetensorsReader r(path);
  if (metadata) *metadata = r.metadata();
  std::vector<NamedTensor> out;
  out.reserve(r.entries().size());
  for (const SafetensorsReader::Entry& e : r.entries()) {
    NamedTensor t{e.name, e.shape, {}};
    t.data.resize(size_t(e.numel()));
    r.read(e, 0, e.numel(), t.data.data());
    out.push_back(std::move(t));
  }
  return out;
}

// A damaged or foreign file: an input error naming the file.
#define SP_ST_FAIL(...) SP_FAIL_INPUT("safetensors file ", path, ": ", __VA_ARGS__)
#define SP_ST_CHECK(cond, ...) SP_CHECK_INPUT(cond, "safetensors file ", path, ": ", __VA_ARGS__)

SafetensorsReader::SafetensorsReader(const std::string& path)
    : path_(path), fd_(std::make_shared<Fd>(open_checked(path, O_RDONLY))) {
  const int fd = fd_->get();
  const uint64_t size = file_size(fd, path);
  SP_ST_CHECK(size >= 8, "too short: ", size, " bytes, need at least 8 for the header length");

  unsigned char len[8];
  pread_all(fd, len, sizeof len, 0, path);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(len[i]) << (8 * i);
  SP_ST_CHECK(n <= size - 8, "header length ", n, " is larger than the file (", size, " bytes)");
  SP_ST_CHECK(n >= 2, "header length ", n, " is too small to hold a JSON object");
  std::string text(n, '\0');
  pread_all(fd, text.data(), n, 8, path);
  SP_ST_CHECK(text[0] == '{', "invalid JSON header: it must begin with '{'");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    SP_ST_FAIL("invalid JSON header: ", e.what());
  }
  SP_ST_CHECK(header.is_object(), "invalid JSON header: not an object");

  data_start_ = 8 + n;
  const uint64_t data_size = size - data_start_;
  std::vector<Entry>& entries = entries_;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      SP_ST_CHECK(info.is_object(), "__metadata__ is not an object");
      for (const auto& [k, v] : info.items()) {
        SP_ST_CHECK(v.is_string(), "__metadata__ value for '", k, "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    SP_ST_CHECK(info.is_object(), "header entry '", name, "' is not an object");
    auto dtype = info.find("dtype");
    SP_ST_CHECK(dtype != info.end() && dtype->is_string(), "tensor '", name,
                "' has no string dtype");
    SP_ST_CHECK(*dtype == "F32", "tensor '", name, "' has unsupported dtype '",
                dtype->get<std::string>(), "' (only F32 is supported)");

    auto shape_it = info.find("shape");
    SP_ST_CHECK(shape_it != info.end() && shape_it->is_array(), "tensor '", name,
                "' has no shape array");
    Entry e{name, {}, 0, 0};
    for (const auto& d : *shape_it) {
      uint64_t v = 0;
      SP_ST_CHECK(json_u64(d, &v) && v <= uint64_t(INT64_MAX), "tensor '", name, "' shape ",
                  shape_it->dump(), " is not a list of non-negative integers");
      e.shape.push_back(static_cast<int64_t>(v));
    }

    auto offs = info.find("data_offsets");
    SP_ST_CHECK(offs != info.end() && offs->is_array() && offs->size() == 2 &&
                    json_u64((*offs)[0], &e.begin) && json_u64((*offs)[1], &e.end),
                "tensor '", name, "' data_offsets must be two non-negative integers");
    SP_ST_CHECK(e.begin <= e.end && e.end <= data_size, "tensor '", name, "' data_offsets [",
                e.begin, ", ", e.end, "] out of range: the data section has ", data_size, " bytes");
    uint64_t bytes = 0;
    SP_ST_CHECK(f32_bytes(e.shape, &bytes) && bytes == e.end - e.begin, "tensor '", name,
                "' data_offsets [", e.begin, ", ", e.end, "] span ", e.end - e.begin,
                " bytes, inconsistent with F32 shape ", shape_str(e.shape));
    entries.push_back(std::move(e));
  }

  // The data section must be tiled exactly by the tensors (as the format requires, so a
  // file cannot hide extra bytes): sorted by offset, each begins where the previous ended.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    SP_ST_CHECK(e.begin >= pos, "overlapping tensors '", entries[i - 1].name, "' and '", e.name,
                "' (data_offsets [", e.begin, ", ", e.end, "] start before byte ", pos, ")");
    SP_ST_CHECK(e.begin == pos, "data bytes [", pos, ", ", e.begin,
                ") belong to no tensor (gap before '", e.name, "')");
    pos = e.end;
  }
  SP_ST_CHECK(pos == data_size, "trailing garbage: ", data_size - pos,
              " bytes after the last tensor (data section has ", data_size,
              " bytes, tensors cover ", pos, ")");
}

const SafetensorsReader::Entry* SafetensorsReader::find(const std::string& name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

void SafetensorsReader::read(const Entry& e, int64_t off, int64_t n, float* out) const {
  SP_CHECK(off >= 0 && n >= 0 && off + n <= e.numel(), "safetensors file ", path_,
           ": read of floats [", off, ", ", off + n, ") of tensor '", e.name, "', which has ",
           e.numel());
  if (n == 0) return;
  pread_all(fd_->get(), out, size_t(n) * sizeof(float), data_start_ + e.begin + uint64_t(off) * 4,
            path_);
}

#undef SP_ST_CHECK
#undef SP_ST_FAIL

// ---- checkpoints ---------------------------------------------------------------------

namespace {

const char* const kCheckpointFiles[] = {"model.safetensors", "optimizer.safetensors", "state.json"};

std::string step_dir_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

bool is_plain_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

// Moves the finished temp directory to `final_dir`, which must not exist: a step directory
// that exists is never written over (one atomic step, so two writers cannot both install
// the same step; on a filesystem without RENAME_NOREPLACE the run's lock keeps other
// writers of this run directory out).
void install_dir(const std::string& tmp_dir, const std::string& final_dir) {
  SP_CHECK_INPUT(rename_no_replace(tmp_dir, final_dir), "checkpoint ", final_dir,
                 " already exists; a saved checkpoint is never written over");
}

// "step_00000042" → 42; -1 for any other name (temporaries "step_N.tmp.PID" included).
int64_t step_of_name(const std::string& name) {
  if (name.size() <= 5 || name.rfind("step_", 0) != 0) return -1;
  int64_t step = 0;
  auto r = std::from_chars(name.data() + 5, name.data() + name.size(), step);
  return r.ec == std::errc() && r.ptr == name.data() + name.size() ? step : -1;
}

nlohmann::json parse_json_file(const std::string& path, const std::string& what_if_bad) {
  std::string text = read_file(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    SP_FAIL_INPUT(what_if_bad, ": ", e.what());
  }
}

// FNV-1a 64 of the manifest as written, without its own hash: what kManifestHashKey holds.
uint64_t manifest_hash(nlohmann::json m) {
  m.erase(kManifestHashKey);
  const std::string text = dump_json(m, 2, "checkpoint manifest") + "\n";
  return fnv1a64(text.data(), text.size());
}

// Error messages of nested checks carry "[rank N] "; the wrapper adds its own.
std::string without_rank(const std::string& msg) {
  if (msg.rfind("[rank ", 0) != 0) return msg;
  const size_t end = msg.find("] ");
  return end == std::string::npos ? msg : msg.substr(end + 2);
}

// The settings a manifest records pass the command line's checks (the option tables), or
// the checkpoint is refused as corrupt: nothing read from disk reaches the engine unchecked
// ("heads": 0 divided by zero, "eval_batches": 2^40 exhausted memory).
void validate_manifest_settings(const nlohmann::json& m, const std::string& d) {
  try {
    if (m.contains("model")) {
      SP_CHECK_USAGE(m["model"].is_object(), "'model' is not an object");
      ModelConfig::from_json(m["model"]).validate();
    }
    if (m.contains("train")) {
      SP_CHECK_USAGE(m["train"].is_object(), "'train' is not an object");
      TrainConfig cfg;
      cfg.merge_json(m["train"]);
      cfg.validate();
      SP_CHECK_USAGE(!m.contains("model") ||
                         ModelConfig::from_json(m["model"]).to_json() == cfg.model.to_json(),
                     "its 'model' and 'train' blocks describe different models");
    }
  } catch (const Error& e) {
    SP_FAIL_INPUT("checkpoint ", d, " is corrupt: manifest.json: ", without_rank(e.what()));
  }
}

}  // namespace

std::string sealed_manifest_text(nlohmann::json& m) {
  m[kManifestHashKey] = hash_hex(manifest_hash(m));
  return dump_json(m, 2, "checkpoint manifest") + "\n";
}

nlohmann::json read_step_manifest(const std::string& d) {
  const std::string manifest_path = (fs::path(d) / "manifest.json").string();
  SP_CHECK_INPUT(path_exists(manifest_path, "checkpoint manifest"), "checkpoint ", d,
                 " is incomplete: manifest.json missing");
  nlohmann::json m = parse_json_file(
      manifest_path, "checkpoint " + d + " is corrupt: manifest.json is not valid JSON");
  SP_CHECK_INPUT(m.is_object(), "checkpoint ", d,
                 " is corrupt: manifest.json is not a JSON object");

  auto fv = m.find("format_version");
  SP_CHECK_INPUT(
      fv != m.end() && fv->is_number_integer(), "checkpoint ", d,
      ": manifest.json has no integer format_version (this build supports format_version ",
      kCheckpointFormatVersion, ")");
  const int64_t version = fv->get<int64_t>();
  SP_CHECK_INPUT(version == kCheckpointFormatVersion || version == 1, "checkpoint ", d,
                 " has unsupported format_version ", version,
                 "; this build supports format_version 1 and ", kCheckpointFormatVersion);
  // Version 2 manifests carry their own hash; version 1 (written before) are validated
  // below but cannot be hash-checked.
  if (version >= 2) {
    auto h = m.find(kManifestHashKey);
    uint64_t want = 0;
    SP_CHECK_INPUT(
        h != m.end() && h->is_string() && parse_hash_hex(h->get_ref<const std::string&>(), &want),
        "checkpoint ", d, " is corrupt: manifest.json has no '", kManifestHashKey, "' hex string");
    const uint64_t got = manifest_hash(m);
    SP_CHECK_INPUT(got == want, "checkpoint ", d,
                   " is corrupt: manifest.json fails its hash check (fnv1a64 ", hash_hex(got),
                   ", the manifest says ", hash_hex(want),
                   "): it was edited or damaged after it was written");
  }
  auto step = m.find("step");
  SP_CHECK_INPUT(step != m.end() && step->is_number_integer(), "checkpoint ", d,
                 " is corrupt: manifest.json has no integer step");
  const int64_t at = step->get<int64_t>();
  // The step a directory is named for is the step it holds: "step": 3 inside step_00000004
  // would resume at the wrong step, silently.
  fs::path dir_path(d);
  if (dir_path.filename().empty()) dir_path = dir_path.parent_path();
  const int64_t named = step_of_name(dir_path.filename().string());
  SP_CHECK_INPUT(at >= 0 && (named < 0 || named == at), "checkpoint ", d,
                 " is corrupt: manifest.json says step ", at, " but the directory is ",
                 named < 0 ? std::string("for a step >= 0") : step_dir_name(named));
  validate_manifest_settings(m, d);
  return m;
}

namespace {

Checkpoint load_step_dir(const std::string& d) {
  Checkpoint ck;
  ck.dir = d;
  ck.manifest = read_step_manifest(d);
  ck.step = ck.manifest["step"].get<int64_t>();
  const nlohmann::json& m = ck.manifest;

  auto files = m.find("files");
  SP_CHECK_INPUT(files != m.end() && files->is_object(), "checkpoint ", d,
                 " is corrupt: manifest.json has no 'files' object");
  for (const char* f : kCheckpointFiles)
    SP_CHECK_INPUT(files->contains(f), "checkpoint ", d,
                   " is corrupt: manifest.json does not list ", f);

  // Verify every listed file before reading any of them.
  for (const auto& [name, info] : files->items()) {
    SP_CHECK_INPUT(is_plain_name(name), "checkpoint ", d, " is corrupt: manifest.json lists '",
                   name, "', which is not a plain file name");
    uint64_t want_bytes = 0, want_hash = 0;
    auto b = info.find("bytes");
    auto h = info.find("fnv1a64");
    bool ok = info.is_object() && b != info.end() && json_u64(*b, &want_bytes) && h != info.end() &&
              h->is_string();
    ok = ok && parse_hash_hex(h->get_ref<const std::string&>(), &want_hash);
    SP_CHECK_INPUT(ok, "checkpoint ", d, " is corrupt: manifest.json entry for ", name,
                   " needs integer 'bytes' and hex string 'fnv1a64', got ", info.dump());

    const std::string p = (fs::path(d) / name).string();
    std::error_code ec;
    uint64_t got_bytes = fs::file_size(p, ec);
    SP_CHECK_INPUT(!ec, "checkpoint ", d, " is corrupt: ", name,
                   " listed in manifest.json: ", ec.message());
    SP_CHECK_INPUT(got_bytes == want_bytes, "checkpoint ", d, " is corrupt: ", name, " has ",
                   got_bytes, " bytes, manifest says ", want_bytes);
    uint64_t got_hash = fnv1a64_file(p);
    SP_CHECK_INPUT(got_hash == want_hash, "checkpoint ", d, " is corrupt: ", name,
                   " fails its hash check (fnv1a64 ", hash_hex(got_hash), ", manifest says ",
                   hash_hex(want_hash), ")");
  }

  ck.state = parse_json_file((fs::path(d) / "state.json").string(),
                             "checkpoint " + d + " is corrupt: state.json is not valid JSON");
  return ck;
}

}  // namespace

CheckpointWriter::CheckpointWriter(const std::string& root, int64_t step)
    : root_(root), name_(step_dir_name(step)), step_(step) {
  SP_CHECK(step >= 0, "save_checkpoint(", root, "): step ", step, " is negative");
  std::error_code ec;
  fs::create_directories(root, ec);
  SP_CHECK_INPUT(!ec, "save_checkpoint: cannot create directory ", root, ": ", ec.message());
  final_dir_ = (fs::path(root) / name_).string();
  SP_CHECK_INPUT(!fs::exists(final_dir_, ec), "checkpoint ", final_dir_,
                 " already exists; a saved checkpoint is never written over");
  const std::string tmp = temp_path(final_dir_);
  fs::remove_all(tmp, ec);  // left by an earlier crashed process that had our pid
  SP_CHECK_INPUT(!ec, "save_checkpoint: cannot remove stale ", tmp, ": ", ec.message());
  fs::create_directory(tmp, ec);
  SP_CHECK_INPUT(!ec, "save_checkpoint: cannot create ", tmp, ": ", ec.message());
  tmp_dir_ = tmp;  // ours from here: removed if the save does not finish
}

CheckpointWriter::~CheckpointWriter() {
  open_.reset();  // removes its temp file
  std::error_code ec;
  if (!finished_ && !tmp_dir_.empty()) fs::remove_all(tmp_dir_, ec);  // best effort
}

void CheckpointWriter::open_file(const std::string& file, const std::vector<TensorInfo>& tensors) {
  SP_CHECK(!open_ && !finished_, "checkpoint ", final_dir_, ": open_file(", file, ") while ",
           finished_ ? "finished" : open_name_ + " is open");
  SP_CHECK(file == kCheckpointFiles[0] || file == kCheckpointFiles[1], "checkpoint ", final_dir_,
           ": '", file, "' is not a tensor file of a checkpoint");
  open_ = std::make_unique<SafetensorsWriter>((fs::path(tmp_dir_) / file).string(), tensors);
  open_name_ = file;
}

void CheckpointWriter::append(const float* data, size_t n) {
  SP_CHECK(open_, "checkpoint ", final_dir_, ": append with no file open");
  open_->append(data, n);
}

void CheckpointWriter::close_file() {
  SP_CHECK(open_, "checkpoint ", final_dir_, ": close_file with no file open");
  digests_[open_name_] = open_->commit();
  open_.reset();
}

std::string CheckpointWriter::finish(const nlohmann::json& state,
                                     const nlohmann::json& manifest_extra) {
  SP_CHECK(!open_ && !finished_, "checkpoint ", final_dir_, ": finish() while ",
           finished_ ? "finished" : open_name_ + " is open");
  SP_CHECK(manifest_extra.is_object() || manifest_extra.is_null(), "save_checkpoint(", root_,
           "): manifest_extra must be a JSON object, got ", manifest_extra.type_name());
  for (const char* f : {kCheckpointFiles[0], kCheckpointFiles[1]})
    SP_CHECK(digests_.count(f), "checkpoint ", final_dir_, ": ", f, " was not written");
  auto in_tmp = [&](const char* f) { return (fs::path(tmp_dir_) / f).string(); };
  const std::string st = dump_json(state, 2, "checkpoint state") + "\n";
  write_file_atomic(in_tmp("state.json"), st);
  digests_["state.json"] = {st.size(), fnv1a64(st.data(), st.size())};

  nlohmann::json manifest = manifest_extra.is_object() ? manifest_extra : nlohmann::json::object();
  manifest["format_version"] = kCheckpointFormatVersion;
  manifest["step"] = step_;
  nlohmann::json files = nlohmann::json::object();
  for (const char* f : kCheckpointFiles)
    files[f] = {{"bytes", digests_[f].bytes}, {"fnv1a64", hash_hex(digests_[f].fnv1a64)}};
  manifest["files"] = files;
  // Last: a step directory with a manifest is complete.
  write_file_atomic(in_tmp("manifest.json"), sealed_manifest_text(manifest));

  install_dir(tmp_dir_, final_dir_);
  finished_ = true;
  fsync_dir(root_);
  // A hint for people and scripts; discovery reads the step directories themselves.
  write_file_atomic((fs::path(root_) / "latest").string(), name_ + "\n");
  return final_dir_;
}

std::string save_checkpoint(const std::string& root, int64_t step,
                            const std::vector<NamedTensor>& weights,
                            const std::vector<NamedTensor>& optimizer, const nlohmann::json& state,
                            const nlohmann::json& manifest_extra) {
  SP_CHECK(manifest_extra.is_object() || manifest_extra.is_null(), "save_checkpoint(", root,
           "): manifest_extra must be a JSON object, got ", manifest_extra.type_name());
  CheckpointWriter w(root, step);
  auto write = [&](const char* file, const std::vector<NamedTensor>& tensors) {
    std::vector<TensorInfo> infos;
    for (const NamedTensor& t : tensors) {
      uint64_t bytes = 0;
      SP_CHECK(f32_bytes(t.shape, &bytes) && t.data.size() * sizeof(float) == bytes,
               "save_checkpoint(", root, "): tensor '", t.name, "' has ", t.data.size(),
               " floats, shape ", shape_str(t.shape));
      infos.push_back({t.name, t.shape});
    }
    w.open_file(file, infos);
    for (const NamedTensor& t : tensors) w.append(t.data.data(), t.data.size());
    w.close_file();
  };
  write(kCheckpointFiles[0], weights);
  write(kCheckpointFiles[1], optimizer);
  return w.finish(state, manifest_extra);
}

Checkpoint load_checkpoint(const std::string& path) {
  Checkpoint ck = open_checkpoint(path);
  ck.weights = read_safetensors((fs::path(ck.dir) / "model.safetensors").string());
  ck.optimizer = read_safetensors((fs::path(ck.dir) / "optimizer.safetensors").string());
  return ck;
}

Checkpoint open_checkpoint(const std::string& path) {
  std::error_code ec;
  bool exists = fs::exists(path, ec);
  SP_CHECK_INPUT(!ec, "cannot look for a checkpoint at ", path, ": ", ec.message());
  SP_CHECK_INPUT(exists, "no checkpoint at ", path, ": path does not exist");
  SP_CHECK_INPUT(fs::is_directory(path, ec), "no checkpoint at ", path, ": not a directory");
  const fs::path p(path);
  if (fs::exists(p / "manifest.json", ec)) return load_step_dir(path);
  // A root: the newest complete step directory (one with a manifest, which is written
  // last). `latest` is only a hint, consulted when there are no step directories at all.
  std::vector<CheckpointEntry> all = list_checkpoints(path);
  if (!all.empty()) {
    for (auto it = all.rbegin(); it != all.rend(); ++it)
      if (it->complete) return load_step_dir(it->dir);
    SP_FAIL_INPUT("checkpoint ", all.back().dir,
                  " is incomplete: manifest.json missing (and no "
                  "complete step directory in ",
                  path, ")");
  }
  if (fs::exists(p / "latest", ec)) {
    std::string name = read_file((p / "latest").string());
    while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
    SP_CHECK_INPUT(is_plain_name(name), "checkpoint root ", path, ": 'latest' holds '", name,
                   "', not a step directory name");
    SP_FAIL_INPUT("checkpoint root ", path, ": 'latest' names ", name, ", which does not exist");
  }
  // A step directory that lost (or never got) its manifest says so, rather than "nothing".
  const fs::path base = p.has_filename() ? p.filename() : p.parent_path().filename();
  bool step_like = base.string().rfind("step_", 0) == 0;
  for (const char* f : kCheckpointFiles) step_like = step_like || fs::exists(p / f, ec);
  SP_CHECK_INPUT(!step_like, "checkpoint ", path, " is incomplete: manifest.json missing");
  SP_FAIL_INPUT("no checkpoint at ", path, " (no 'latest' file and no manifest.json)");
}

std::vector<CheckpointEntry> list_checkpoints(const std::string& root) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (!path_exists(root, "checkpoints directory") || !fs::is_directory(root, ec)) return out;
  fs::directory_iterator it(root, ec), end;
  SP_CHECK_INPUT(!ec, "checkpoints directory '", root, "' cannot be listed: ", ec.message());
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const int64_t step = step_of_name(name);
    if (step < 0 || !it->is_directory(ec)) continue;
    out.push_back({step, it->path().string(), fs::exists(it->path() / "manifest.json", ec)});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointEntry& a, const CheckpointEntry& b) { return a.step < b.step; });
  return out;
}

bool has_checkpoint(const std::string& root) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(root) / "latest", ec) || !list_checkpoints(root).empty();
}

std::vector<std::string> remove_checkpoint_temporaries(const std::string& root) {
  std::vector<std::string> removed;
  std::error_code ec;
  fs::directory_iterator it(root, ec), end;
  std::vector<fs::path> tmps;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("step_", 0) == 0 && name.find(".tmp.") != std::string::npos)
      tmps.push_back(it->path());
  }
  for (const fs::path& t : tmps) {
    fs::remove_all(t, ec);
    SP_CHECK_INPUT(!ec, "cannot remove the unfinished checkpoint ", t.string(), ": ", ec.message());
    removed.push_back(t.string());
  }
  return removed;
}

}  // namespace seqpar
