// The small model and short training run the tests build on, their run directories, and a
// bit-exact comparison of checkpoint tensors. Two layers of C = 32 (H = 4 heads of d = 8):
// a forward and backward take milliseconds, so every strategy, mesh and kind is tried.
#pragma once
#include <gtest/gtest.h>
#include <unistd.h>  // getppid

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "data/token_file.hpp"
#include "model/config.hpp"
#include "train/checkpoint.hpp"
#include "train/config.hpp"

namespace seqpar::test {

// What a test varies of the small model (designated initializers: {.Hkv = 2, .dropout = 0.1f}).
struct SmallModel {
  ModelKind kind = ModelKind::gpt;
  int Hkv = 4;           // kv heads: < H = 4 for grouped-query attention
  float dropout = 0.0f;  // embedding, attention-output, MLP-output and attention dropout
};

// n_layer 2, C 32, H 4, F 64 over bytes (V = 256, + [MASK] for bert); llama unties its head
// as the real ones do. A test sets what else it needs (F, V, init_std) on the result.
inline ModelConfig small_model(const SmallModel& o = {}) {
  ModelConfig m;
  m.kind = o.kind;
  m.V = o.kind == ModelKind::bert ? 257 : 256;
  m.n_layer = 2;
  m.C = 32;
  m.H = 4;
  m.Hkv = o.Hkv;
  m.F = 64;
  m.dropout = o.dropout;
  m.attn_dropout = o.dropout;
  m.tie_embeddings = o.kind != ModelKind::llama;
  return m;
}

// A short run of the small GPT with dropout 0.1 (the counter-based masks must agree across
// meshes) on the passkey task (in-process data, no file; L = 128, its shortest): batch 2,
// 20 AdamW steps at lr 3e-3 after 4 of warm-up, one thread per rank, quiet, no final
// checkpoint, writing its metrics under `out`.
inline TrainConfig small_run(const std::string& out, int Hkv = 2) {
  TrainConfig c;
  c.model = small_model({.Hkv = Hkv, .dropout = 0.1f});
  c.seq_len = 128;
  c.batch = 2;
  c.steps = 20;
  c.warmup = 4;
  c.lr = 3e-3f;
  c.data = "passkey";
  c.out = out;
  c.progress = ProgressMode::none;
  c.threads = 1;
  c.save_final = false;
  return c;
}

// $TMPDIR/seqpar_test_<tag>_<pid of mpiexec>: the same on every rank of one multi-rank test
// (the ranks' parent is mpiexec), another for every run beside it. Not created; put the
// rank in `tag` for a directory per rank.
inline std::string run_dir(const std::string& tag) {
  return (std::filesystem::temp_directory_path() /
          ("seqpar_test_" + tag + "_" + std::to_string(getppid())))
      .string();
}

// run_dir(tag_rank), emptied first by the calling rank: nothing of an earlier run whose
// mpiexec had the same pid is resumed.
inline std::string fresh_run_dir(const std::string& tag, int rank) {
  const std::string d = run_dir(tag + "_" + std::to_string(rank));
  std::filesystem::remove_all(d);
  return d;
}

// Documents of the given lengths, their tokens drawn in order from mt19937(seed), uniform
// over [0, V − 1): V − 1 is left for the EOS a token file appends.
inline std::vector<std::vector<int32_t>> random_docs(uint32_t V, uint32_t seed,
                                                     std::initializer_list<size_t> lens) {
  std::mt19937 rng(seed);
  std::vector<std::vector<int32_t>> docs;
  for (size_t len : lens) {
    std::vector<int32_t> d(len);
    for (auto& t : d) t = int32_t(rng() % (V - 1));
    docs.push_back(std::move(d));
  }
  return docs;
}

// A token file of `docs` over vocabulary V with the given tokenizer hash, `eos` appended
// after each document (−1: none).
inline void write_token_file(const std::string& path, uint32_t V, uint64_t hash, int32_t eos,
                             const std::vector<std::vector<int32_t>>& docs) {
  TokenFileWriter w(path, V, hash, eos);
  for (const auto& d : docs) w.add_document(d.data(), d.size());
  w.finish();
}

// Same names, shapes and bits (NaN payloads and -0.0 must survive a round trip).
inline void expect_same_tensors(const std::vector<NamedTensor>& a,
                                const std::vector<NamedTensor>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name);
    EXPECT_EQ(a[i].shape, b[i].shape) << a[i].name;
    ASSERT_EQ(a[i].data.size(), b[i].data.size()) << a[i].name;
    // An empty vector's data() may be null, and memcmp on null is UB even for 0 bytes.
    if (!a[i].data.empty()) {
      EXPECT_EQ(0, std::memcmp(a[i].data.data(), b[i].data.data(), a[i].data.size() * 4))
          << a[i].name;
    }
  }
}

}  // namespace seqpar::test
