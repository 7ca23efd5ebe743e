// Checkpoints: safetensors format (cross-checked against bytes assembled by hand), atomic
// writes, step directories with manifests, and refusal of every kind of damage with a
// message that says what is wrong.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>

#include "core/check.hpp"
#include "test_models.hpp"
#include "test_util.hpp"
#include "train/checkpoint.hpp"
#include "train/config.hpp"

using namespace seqpar;
using namespace seqpar::test;
namespace fs = std::filesystem;

namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

std::string f32_bytes(std::initializer_list<float> xs) {
  std::string s;
  for (float x : xs) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    for (int i = 0; i < 4; ++i) s += static_cast<char>(u >> (8 * i));  // little-endian
  }
  return s;
}

// A safetensors file from a header text and data bytes, header padded per the spec.
std::string safetensors_bytes(std::string header, const std::string& data) {
  header.append((8 - header.size() % 8) % 8, ' ');
  return le64(header.size()) + header + data;
}

NamedTensor make_tensor(std::string name, std::vector<int64_t> shape, uint32_t seed) {
  NamedTensor t{std::move(name), std::move(shape), {}};
  size_t n = 1;
  for (int64_t d : t.shape) n *= static_cast<size_t>(d);
  t.data.resize(n);
  uint32_t x = seed * 2654435761u + 1;
  for (float& v : t.data) {  // arbitrary bit patterns, finite and not
    x = x * 1664525u + 1013904223u;
    v = static_cast<float>(static_cast<int32_t>(x)) * 1e-9f;
  }
  return t;
}

class CheckpointTest : public ::testing::Test {
 protected:
  std::vector<NamedTensor> weights(uint32_t seed) {
    NamedTensor s = make_tensor("scalar", {}, seed);  // 0-d: one element
    std::vector<NamedTensor> w = {
        make_tensor("wte", {71, 29}, seed + 1), s, make_tensor("h.0.attn.qkv", {3, 1, 5}, seed + 2),
        make_tensor("one", {1}, seed + 3), make_tensor("empty", {0, 4}, seed + 4)};
    w[0].data[0] = -0.0f;
    w[0].data[1] = std::numeric_limits<float>::infinity();
    uint32_t nan_bits = 0x7fc01234u;  // quiet NaN with a payload
    std::memcpy(&w[0].data[2], &nan_bits, 4);
    w[0].data[3] = std::numeric_limits<float>::denorm_min();
    return w;
  }
  std::vector<NamedTensor> moments(const std::vector<NamedTensor>& w, uint32_t seed) {
    std::vector<NamedTensor> out;
    for (const NamedTensor& t : w) {
      out.push_back(make_tensor("m." + t.name, t.shape, seed++));
      out.push_back(make_tensor("v." + t.name, t.shape, seed++));
    }
    return out;
  }
  std::string save(int64_t step, uint32_t seed) {
    auto w = weights(seed);
    return save_checkpoint(dir_.string(), step, w, moments(w, seed + 100),
                           {{"step", step}, {"seed", seed}, {"data_pos", 12345}},
                           {{"model", {{"L", 2}, {"C", 64}}}, {"parallel", "ring"}});
  }

  TempDir dir_{"ckpt"};
};

// ---- FNV-1a, atomic writes ------------------------------------------------------------

TEST(Fnv1a64, KnownVectors) {
  // Reference values of the 64-bit FNV-1a function.
  EXPECT_EQ(fnv1a64("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar", 6), 0x85944171f73967e8ull);
  EXPECT_EQ(fnv1a64("bar", 3, fnv1a64("foo", 3)), 0x85944171f73967e8ull);  // streamed
}

TEST_F(CheckpointTest, FileHashMatchesInMemoryHashAcrossChunks) {
  std::string big(3 * (1 << 20) + 17, '\0');  // spans several 1 MiB read chunks
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 + (i >> 11));
  spit(dir_ / "big.bin", big);
  EXPECT_EQ(fnv1a64_file((dir_ / "big.bin").string()), fnv1a64(big.data(), big.size()));
  expect_error<InputError>([&] { fnv1a64_file((dir_ / "nope").string()); },
                           {"nope", "No such file"});
}

TEST_F(CheckpointTest, WriteFileAtomicReplacesAndLeavesNoTemp) {
  std::string p = (dir_ / "f.txt").string();
  write_file_atomic(p, "first");
  write_file_atomic(p, "second\n");
  EXPECT_EQ(slurp(p), "second\n");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  expect_error<InputError>([&] { write_file_atomic((dir_ / "no_dir" / "f").string(), "x"); },
                           {"no_dir", "No such file or directory"});
}

// ---- safetensors ----------------------------------------------------------------------

TEST_F(CheckpointTest, SafetensorsRoundTripIsBitExact) {
  auto w = weights(7);
  std::string p = (dir_ / "w.safetensors").string();
  write_safetensors(p, w, {{"format", "pt"}, {"note", "hi"}});
  std::map<std::string, std::string> meta;
  expect_same_tensors(read_safetensors(p, &meta), w);
  EXPECT_EQ(meta, (std::map<std::string, std::string>{{"format", "pt"}, {"note", "hi"}}));
  expect_same_tensors(read_safetensors(p), w);
  write_safetensors(p, {});  // no tensors at all is a valid file
  EXPECT_TRUE(read_safetensors(p).empty());
}

TEST_F(CheckpointTest, WriterLayoutFollowsTheSpec) {
  NamedTensor a{"a", {2}, {1.5f, -2.0f}}, b{"b", {}, {3.25f}};
  std::string p = (dir_ / "x.safetensors").string();
  write_safetensors(p, {b, a}, {{"k", "v"}});
  std::string bytes = slurp(p);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + n + 12);
  auto h = nlohmann::json::parse(bytes.substr(8, n));  // trailing padding is spaces
  EXPECT_EQ(h["b"]["dtype"], "F32");
  EXPECT_EQ(h["b"]["shape"], nlohmann::json::array());
  EXPECT_EQ(h["b"]["data_offsets"], nlohmann::json({0, 4}));
  EXPECT_EQ(h["a"]["shape"], nlohmann::json({2}));
  EXPECT_EQ(h["a"]["data_offsets"], nlohmann::json({4, 12}));
  EXPECT_EQ(h["__metadata__"], nlohmann::json({{"k", "v"}}));
  EXPECT_EQ(bytes.substr(8 + n), f32_bytes({3.25f, 1.5f, -2.0f}));
  EXPECT_EQ(fs::directory_iterator(dir_)->path().filename(), "x.safetensors");
}

TEST_F(CheckpointTest, ReadsHandAssembledFile) {
  // Header keys deliberately not in data order; "x" is stored after "y" in the data.
  std::string header = R"({"__metadata__":{"format":"pt"},)"
                       R"("x":{"dtype":"F32","shape":[2,3],"data_offsets":[4,28]},)"
                       R"("y":{"dtype":"F32","shape":[],"data_offsets":[0,4]}})";
  std::string data = f32_bytes({-1.0f, 0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f});
  std::string p = (dir_ / "hand.safetensors").string();
  spit(p, safetensors_bytes(header, data));
  std::map<std::string, std::string> meta;
  auto t = read_safetensors(p, &meta);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].name, "y");
  EXPECT_EQ(t[0].shape, std::vector<int64_t>{});
  EXPECT_EQ(t[0].data, std::vector<float>{-1.0f});
  EXPECT_EQ(t[1].name, "x");
  EXPECT_EQ(t[1].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(t[1].data, (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(meta.at("format"), "pt");
}

TEST_F(CheckpointTest, SafetensorsReaderRefusesDamage) {
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data8 = f32_bytes({1.0f, 2.0f});
  std::string p = (dir_ / "bad.safetensors").string();
  auto refuse = [&](const std::string& bytes, std::initializer_list<std::string> words) {
    spit(p, bytes);
    expect_error<InputError>([&] { read_safetensors(p); }, words);
  };
  // Sanity: the well-formed variant the damaged ones are made from is accepted.
  spit(p, safetensors_bytes("{" + ok_entry + "}", data8));
  ASSERT_EQ(read_safetensors(p).size(), 1u);

  expect_error<InputError>([&] { read_safetensors((dir_ / "missing.safetensors").string()); },
                           {"missing.safetensors", "No such file"});
  refuse("abc", {"bad.safetensors", "too short", "3 bytes"});
  refuse(le64(~0ull) + "{}      ", {"bad.safetensors", "header length", "larger than the file"});
  refuse(le64(1000) + "{}      ", {"header length 1000", "larger than the file"});
  refuse(safetensors_bytes("{\"t\": [1, 2", data8), {"bad.safetensors", "invalid JSON"});
  refuse(safetensors_bytes("[1,2]", ""), {"invalid JSON"});
  refuse(safetensors_bytes(R"({"t":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}})", data8),
         {"bad.safetensors", "unsupported dtype", "F16", "'t'"});
  refuse(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", data8),
         {"'t'", "out of range"});
  refuse(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data8),
         {"'t'", "inconsistent with F32 shape [3]"});
  refuse(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data8),
         {"'t'", "non-negative integers"});
  refuse(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", data8),
         {"'t'", "data_offsets"});
  refuse(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           data8),
         {"overlapping tensors", "'a'", "'b'"});
  refuse(safetensors_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data8),
         {"belong to no tensor"});
  refuse(safetensors_bytes("{" + ok_entry + "}", data8 + "junk"), {"trailing garbage", "4 bytes"});
  refuse(safetensors_bytes(R"({"__metadata__":{"a":1}})", ""), {"__metadata__", "not a string"});
}

TEST_F(CheckpointTest, SafetensorsWriterRefusesBadTensors) {
  std::string p = (dir_ / "w.safetensors").string();
  expect_error(
      [&] {
        write_safetensors(p, {{"t", {2, 2}, {1, 2, 3}}});
      },
      {"'t'", "3 floats", "[2, 2]", "needs 4"});
  expect_error(
      [&] {
        write_safetensors(p, {{"t", {1}, {1}}, {"t", {1}, {2}}});
      },
      {"duplicate tensor name 't'"});
  expect_error([&] { write_safetensors(p, {{"__metadata__", {1}, {1}}}); }, {"reserved"});
  EXPECT_TRUE(fs::is_empty(dir_));  // nothing, not even a temp file, left behind
}

// ---- checkpoints ----------------------------------------------------------------------

TEST_F(CheckpointTest, RoundTripThroughRoot) {
  EXPECT_FALSE(has_checkpoint(dir_.string()));
  auto w = weights(1);
  auto o = moments(w, 101);
  std::string step_dir = save(42, 1);
  EXPECT_EQ(step_dir, (dir_ / "step_00000042").string());
  EXPECT_TRUE(has_checkpoint(dir_.string()));
  EXPECT_EQ(slurp(dir_ / "latest"), "step_00000042\n");

  Checkpoint ck = load_checkpoint(dir_.string());
  EXPECT_EQ(ck.step, 42);
  EXPECT_EQ(ck.dir, step_dir);
  expect_same_tensors(ck.weights, w);
  expect_same_tensors(ck.optimizer, o);
  EXPECT_EQ(ck.state, nlohmann::json({{"step", 42}, {"seed", 1}, {"data_pos", 12345}}));
  EXPECT_EQ(ck.manifest["format_version"], kCheckpointFormatVersion);
  EXPECT_EQ(ck.manifest["step"], 42);
  EXPECT_EQ(ck.manifest["model"]["C"], 64);
  EXPECT_EQ(ck.manifest["parallel"], "ring");
  ASSERT_EQ(ck.manifest["files"].size(), 3u);
  for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json"}) {
    fs::path p = fs::path(step_dir) / f;
    EXPECT_EQ(ck.manifest["files"][f]["bytes"], fs::file_size(p)) << f;
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx",
                  static_cast<unsigned long long>(fnv1a64_file(p.string())));
    EXPECT_EQ(ck.manifest["files"][f]["fnv1a64"], hex) << f;
  }
  // Exactly the four files, nothing temporary.
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(step_dir)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"model.safetensors", "optimizer.safetensors",
                                          "state.json", "manifest.json"}));
}

TEST_F(CheckpointTest, LatestPointsAtNewestSaveAndOldOnesStay) {
  save(10, 1);
  save(20, 2);
  EXPECT_EQ(slurp(dir_ / "latest"), "step_00000020\n");
  Checkpoint ck = load_checkpoint(dir_.string());
  EXPECT_EQ(ck.step, 20);
  expect_same_tensors(ck.weights, weights(2));
  Checkpoint old = load_checkpoint((dir_ / "step_00000010").string());  // step dir directly
  EXPECT_EQ(old.step, 10);
  EXPECT_EQ(old.dir, (dir_ / "step_00000010").string());
  expect_same_tensors(old.weights, weights(1));
  expect_same_tensors(old.optimizer, moments(weights(1), 101));
  EXPECT_EQ(old.state["seed"], 1);
}

TEST_F(CheckpointTest, SaveOverExistingStepIsRefusedAndLeavesItIntact) {
  save(5, 1);
  const std::string before = slurp(dir_ / "step_00000005" / "model.safetensors");
  expect_error<InputError>([&] { save(5, 2); },
                           {"step_00000005", "already exists", "never written over"});
  EXPECT_EQ(slurp(dir_ / "step_00000005" / "model.safetensors"), before);
  Checkpoint ck = load_checkpoint(dir_.string());
  expect_same_tensors(ck.weights, weights(1));
  std::set<std::string> names;
  for (auto& e : fs::directory_iterator(dir_)) names.insert(e.path().filename().string());
  EXPECT_EQ(names, (std::set<std::string>{"latest", "step_00000005"}));  // no temporaries
}

// `latest` is a hint: a crash between installing a step directory and writing `latest`
// (or a user deleting it) still finds the newest complete checkpoint.
TEST_F(CheckpointTest, DiscoveryReadsStepDirectoriesNotLatest) {
  save(4, 1);
  save(8, 2);
  fs::remove(dir_ / "latest");
  EXPECT_TRUE(has_checkpoint(dir_.string()));
  EXPECT_EQ(load_checkpoint(dir_.string()).step, 8);
  spit(dir_ / "latest", "step_00000004\n");  // a stale hint
  EXPECT_EQ(load_checkpoint(dir_.string()).step, 8);
  // A step directory without a manifest is not complete: the newest complete one is used.
  fs::create_directories(dir_ / "step_00000012");
  spit(dir_ / "step_00000012" / "model.safetensors", "half");
  EXPECT_EQ(load_checkpoint(dir_.string()).step, 8);
  auto all = list_checkpoints(dir_.string());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].step, 4);
  EXPECT_TRUE(all[1].complete);
  EXPECT_FALSE(all[2].complete);
}

TEST_F(CheckpointTest, TemporariesAreNotCheckpointsAndAreRemovedOnRequest) {
  fs::create_directories(dir_ / "step_00000003.tmp.4242");
  spit(dir_ / "step_00000003.tmp.4242" / "model.safetensors", "partial");
  EXPECT_FALSE(has_checkpoint(dir_.string()));
  EXPECT_TRUE(list_checkpoints(dir_.string()).empty());
  save(2, 1);
  auto removed = remove_checkpoint_temporaries(dir_.string());
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_FALSE(fs::exists(dir_ / "step_00000003.tmp.4242"));
  EXPECT_EQ(load_checkpoint(dir_.string()).step, 2);
}

TEST_F(CheckpointTest, ManifestExtraCannotOverrideReservedKeys) {
  auto w = weights(3);
  save_checkpoint(dir_.string(), 7, w, {}, {}, {{"step", 999}, {"format_version", 99}, {"x", 1}});
  Checkpoint ck = load_checkpoint(dir_.string());
  EXPECT_EQ(ck.step, 7);
  EXPECT_EQ(ck.manifest["format_version"], kCheckpointFormatVersion);
  EXPECT_EQ(ck.manifest["x"], 1);
  EXPECT_TRUE(ck.optimizer.empty());
  // A loaded manifest passed back on the next save (the resume pattern) is accepted.
  save_checkpoint(dir_.string(), 8, w, {}, ck.state, ck.manifest);
  EXPECT_EQ(load_checkpoint(dir_.string()).step, 8);
}

TEST_F(CheckpointTest, TruncatedModelIsCorrupt) {
  std::string d = save(3, 1);
  fs::path m = fs::path(d) / "model.safetensors";
  uintmax_t size = fs::file_size(m);
  fs::resize_file(m, size - 5);
  std::string want = "model.safetensors has " + std::to_string(size - 5) +
                     " bytes, manifest says " + std::to_string(size);
  expect_error<InputError>([&] { load_checkpoint(dir_.string()); }, {"corrupt", d, want});
  expect_error<InputError>([&] { load_checkpoint(d); }, {"corrupt", want});
}

TEST_F(CheckpointTest, FlippedByteFailsHashCheck) {
  std::string d = save(3, 1);
  fs::path m = fs::path(d) / "optimizer.safetensors";
  std::string bytes = slurp(m);
  bytes[bytes.size() - 3] ^= 0x10;  // inside the data, size unchanged
  spit(m, bytes);
  expect_error<InputError>([&] { load_checkpoint(dir_.string()); },
                           {"corrupt", "optimizer.safetensors", "hash", "manifest says"});
}

TEST_F(CheckpointTest, MissingManifestIsIncomplete) {
  std::string d = save(3, 1);
  fs::remove(fs::path(d) / "manifest.json");
  expect_error<InputError>([&] { load_checkpoint(d); }, {d, "incomplete", "manifest.json missing"});
  expect_error<InputError>([&] { load_checkpoint(dir_.string()); },
                           {"incomplete", "manifest.json missing"});
}

TEST_F(CheckpointTest, MissingListedFileIsCorrupt) {
  std::string d = save(3, 1);
  fs::remove(fs::path(d) / "state.json");
  expect_error<InputError>([&] { load_checkpoint(d); }, {"corrupt", "state.json"});
}

TEST_F(CheckpointTest, UnsupportedFormatVersionSaysWhichIsSupported) {
  std::string d = save(3, 1);
  fs::path mp = fs::path(d) / "manifest.json";
  auto m = nlohmann::json::parse(slurp(mp));
  m["format_version"] = kCheckpointFormatVersion + 1;
  spit(mp, sealed_manifest_text(m));
  const std::string next = std::to_string(kCheckpointFormatVersion + 1);
  expect_error<InputError>(
      [&] { load_checkpoint(d); },
      {"format_version " + next,
       "supports format_version 1 and " + std::to_string(kCheckpointFormatVersion)});
}

TEST_F(CheckpointTest, AnEditedManifestFailsItsOwnHash) {
  std::string d = save(3, 1);
  fs::path mp = fs::path(d) / "manifest.json";
  auto m = nlohmann::json::parse(slurp(mp));
  m["state_note"] = "edited";
  spit(mp, m.dump(2) + "\n");
  expect_error<InputError>([&] { load_checkpoint(d); },
                           {"is corrupt", "manifest.json fails its hash check", "edited"});
  // The same edit with the hash recomputed is a consistent manifest again.
  spit(mp, sealed_manifest_text(m));
  EXPECT_EQ(load_checkpoint(d).step, 3);
}

TEST_F(CheckpointTest, AVersionOneManifestLoadsWithoutItsHash) {
  // Checkpoints written before manifests were hashed still resume.
  std::string d = save(3, 1);
  fs::path mp = fs::path(d) / "manifest.json";
  auto m = nlohmann::json::parse(slurp(mp));
  m.erase(kManifestHashKey);
  m["format_version"] = 1;
  spit(mp, m.dump(2));
  EXPECT_EQ(load_checkpoint(d).step, 3);
  m["format_version"] = 2;  // a version-2 manifest must carry it
  spit(mp, m.dump(2));
  expect_error<InputError>([&] { load_checkpoint(d); }, {"has no 'manifest_fnv1a64'"});
}

TEST_F(CheckpointTest, ManifestSettingsPassTheCommandLinesChecks) {
  // A consistent (resealed) manifest whose settings the command line would refuse is
  // refused as corrupt, by the option tables' own messages.
  std::string d = save(3, 1);
  fs::path mp = fs::path(d) / "manifest.json";
  const auto base = nlohmann::json::parse(slurp(mp));
  auto forged = [&](auto edit, const std::string& why) {
    nlohmann::json m = base;
    m["model"] = ModelConfig{}.to_json();
    m["train"] = TrainConfig{}.to_json();
    edit(m);
    spit(mp, sealed_manifest_text(m));
    expect_error<InputError>([&] { load_checkpoint(d); }, {"is corrupt: manifest.json: ", why});
  };
  forged([](nlohmann::json& m) { m["model"]["heads"] = 0; },
         "heads must be in [1, 1048576], got 0");
  forged([](nlohmann::json& m) { m["model"]["kv_heads"] = -4; }, "kv heads Hkv=-4");
  forged([](nlohmann::json& m) { m["train"]["eval_batches"] = int64_t(1) << 40; },
         "eval_batches must be in [1, 16777216], got 1099511627776");
  forged([](nlohmann::json& m) { m["model"]["vocab"] = 2147483647; },
         "vocab must be in [2, 1073741824]");
  forged([](nlohmann::json& m) { m["train"]["dim"] = 512; },
         "'model' and 'train' blocks describe different models");
  nlohmann::json m = base;
  m["step"] = -5;
  spit(mp, sealed_manifest_text(m));
  expect_error<InputError>([&] { load_checkpoint(d); },
                           {"is corrupt: manifest.json says step -5", "step_00000003"});
}

TEST_F(CheckpointTest, BadSafetensorsWithConsistentManifestIsStillRefused) {
  // A file whose manifest entry matches but whose content is not valid safetensors
  // (a writer bug, not bit rot): the format checks still catch it.
  std::string d = save(3, 1);
  fs::path mp = fs::path(d) / "manifest.json";
  fs::path model = fs::path(d) / "model.safetensors";
  std::string bad = safetensors_bytes(R"({"t":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})",
                                      std::string(4, '\0'));
  spit(model, bad);
  auto m = nlohmann::json::parse(slurp(mp));
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a64(bad.data(), bad.size())));
  m["files"]["model.safetensors"] = {{"bytes", bad.size()}, {"fnv1a64", hex}};
  spit(mp, sealed_manifest_text(m));
  expect_error<InputError>([&] { load_checkpoint(dir_.string()); },
                           {"model.safetensors", "unsupported dtype", "BF16"});
}

TEST_F(CheckpointTest, MissingOrEmptyPathsSayThereIsNoCheckpoint) {
  expect_error<InputError>([&] { load_checkpoint((dir_ / "nowhere").string()); },
                           {"no checkpoint at", "nowhere", "does not exist"});
  expect_error<InputError>([&] { load_checkpoint(dir_.string()); },
                           {"no checkpoint at", "no 'latest' file and no manifest.json"});
  EXPECT_FALSE(has_checkpoint((dir_ / "nowhere").string()));
  spit(dir_ / "latest", "step_00000099\n");
  EXPECT_TRUE(has_checkpoint(dir_.string()));
  expect_error<InputError>([&] { load_checkpoint(dir_.string()); },
                           {"'latest' names step_00000099", "does not exist"});
  spit(dir_ / "latest", "../../etc\n");
  expect_error<InputError>([&] { load_checkpoint(dir_.string()); }, {"not a step directory name"});
}

}  // namespace
