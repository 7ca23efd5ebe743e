// Training data (train/data.hpp): token-file samples are windows of the file at offsets
// drawn from (seed, s); `--data` dispatch (token file, text file, kjv, kjv-bpe8k); damaged
// token files refused with the file named; the data-vs-model check; BERT masking on token
// ids; byte-source batches bit-identical to the formulas used before token files; packed
// documents (masks, −1 targets at document ends, reset positions) and their settings.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/check.hpp"
#include "core/rng.hpp"
#include "data/token_file.hpp"
#include "parallel/attention.hpp"
#include "test_models.hpp"
#include "test_util.hpp"
#include "train/config.hpp"
#include "train/data.hpp"

using namespace seqpar;
using namespace seqpar::test;
namespace fs = std::filesystem;

namespace {

constexpr uint32_t kV = 1000;  // not a power of two: u % V differs from any bit mask
constexpr uint64_t kHash = 0xfeedfacecafef00dull;

// The draw of train/data.cpp, written out: the sample's start is part of the data's
// meaning (a resumed run must see the same windows), so the test pins the formula.
uint64_t old_draw(uint64_t seed, uint64_t s, uint32_t what) {
  u32x4 r = philox4x32({uint32_t(s), uint32_t(s >> 32), what, uint32_t(RngSite::data)}, seed);
  return (uint64_t(r[0]) << 32) | r[1];
}

// make_batch as it was before token files (kind == gpt causal, random byte u & 0xFF,
// [MASK] = 256) when `mask` = 256 and `rand_token` = u & 0xFF; the token-file variant
// takes [MASK] = V and u % V.
template <class RandToken>
Batch reference_batch(const DataSource& src, ModelKind kind, uint64_t seed, uint64_t first, int B,
                      int64_t L, const std::vector<int64_t>& pos, int32_t mask,
                      RandToken rand_token) {
  Batch b;
  b.B = B;
  b.T = int(pos.size());
  b.L = L;
  b.pos = pos;
  const int64_t T = b.T;
  std::vector<int32_t> seq(L + 1);
  for (int i = 0; i < B; ++i) {
    const uint64_t s = first + i;
    src.sample(s, L, seq.data());
    for (int64_t t = 0; t < T; ++t) {
      const int64_t p = pos[t];
      b.row_key.push_back(int64_t(s) * L + p);
      if (kind == ModelKind::gpt) {
        b.tokens.push_back(seq[p]);
        b.targets.push_back(seq[p + 1]);
        continue;
      }
      u32x4 u = philox4x32(
          rng_counter(uint32_t(p), uint32_t(s), uint32_t(s >> 32), 0, 0, RngSite::mlm_mask), seed);
      const float pick = u32_to_unit(u[0]), how = u32_to_unit(u[1]);
      const bool forced = p == int64_t(old_draw(seed, s, 3) % uint64_t(L));
      if (pick < 0.15f || forced) {
        b.targets.push_back(seq[p]);
        b.tokens.push_back(how < 0.8f ? mask : how < 0.9f ? rand_token(u[2]) : seq[p]);
      } else {
        b.targets.push_back(-1);
        b.tokens.push_back(seq[p]);
      }
    }
  }
  return b;
}

void expect_same_batch(const Batch& got, const Batch& want) {
  EXPECT_EQ(got.B, want.B);
  EXPECT_EQ(got.T, want.T);
  EXPECT_EQ(got.L, want.L);
  EXPECT_EQ(got.pos, want.pos);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.targets, want.targets);
  EXPECT_EQ(got.row_key, want.row_key);
}

// An uneven shard: every third position and the last one (L = 71).
std::vector<int64_t> odd_positions(int64_t L) {
  std::vector<int64_t> pos;
  for (int64_t p = 1; p < L; p += 3) pos.push_back(p);
  if (pos.back() != L - 1) pos.push_back(L - 1);
  return pos;
}

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Documents of awkward lengths, tokens in [0, V − 1), EOS = V − 1 after each.
    write_token_file(tok_path(), kV, kHash, int32_t(kV - 1),
                     random_docs(kV, 7, {1, 2, 300, 7, 1500, 41, 999}));
    text_ = "In the beginning God created the heaven and the earth.\n";
    while (text_.size() < 3000) text_ += text_;
    spit(dir_ / "corpus.txt", text_);
  }
  std::string tok_path() const { return (dir_ / "data.tok").string(); }
  std::string text_path() const { return (dir_ / "corpus.txt").string(); }

  TempDir dir_{"data"};
  std::string text_;
};

TEST_F(DataTest, TokenSamplesAreTheFilesWindowAtTheDrawnOffset) {
  const int64_t L = 71;
  TokenFile file(tok_path());
  const uint64_t n = file.num_tokens();
  std::vector<int32_t> all(n);
  file.read(0, n, all.data());
  TokenSource a(tok_path(), "'a'", 42, L), b(tok_path(), "'b'", 42, L), c(tok_path(), "'c'", 43, L);
  EXPECT_EQ(a.vocab(), kV);
  EXPECT_EQ(a.tokenizer_hash(), kHash);
  EXPECT_EQ(a.eos(), int32_t(kV - 1));
  const uint64_t cut = validation_begin(n, L, &file, "f");
  EXPECT_EQ(a.begin(), 0u);
  EXPECT_EQ(a.end(), cut);
  std::vector<int32_t> x(L + 1), y(L + 1), z(L + 1);
  int differ_by_seed = 0;
  for (uint64_t s : {0ull, 1ull, 2ull, 17ull, 1ull << 33, ~0ull}) {
    const uint64_t start = a.window_start(s, L);
    // Training windows: the file's tokens before the validation split, [0, cut).
    EXPECT_EQ(start, old_draw(42, s, 0) % (cut - L)) << "sample " << s;
    ASSERT_LE(start + L + 1, cut);
    a.sample(s, L, x.data());
    b.sample(s, L, y.data());  // another source over the same file: same tokens
    c.sample(s, L, z.data());
    EXPECT_EQ(x, y) << "sample " << s;
    EXPECT_TRUE(std::equal(x.begin(), x.end(), all.begin() + int64_t(start))) << "sample " << s;
    differ_by_seed += x != z;
    // Document ids of the window (for the next issue's masks) follow the file's table.
    std::vector<int64_t> ids(L + 1);
    a.doc_ids(s, L, ids.data());
    for (int64_t i = 0; i <= L; ++i) EXPECT_EQ(ids[i], file.doc_of(start + i));
  }
  EXPECT_GT(differ_by_seed, 0) << "the seed must change the windows";
}

TEST_F(DataTest, TokenFileShorterThanASampleIsRefused) {
  const uint64_t n = TokenFile(tok_path()).num_tokens();
  expect_error(
      [&] { make_source(tok_path(), 1, int64_t(n)); },
      {tok_path(), std::to_string(n) + " tokens", "seq_len + 1 = " + std::to_string(n + 1)});
}

TEST_F(DataTest, DispatchTokenFileTextFileAndKjv) {
  const int64_t L = 64;
  auto tok = make_source(tok_path(), 3, L);
  EXPECT_EQ(tok->vocab(), kV);
  EXPECT_EQ(tok->tokenizer_hash(), kHash);
  EXPECT_EQ(tok->eos(), int32_t(kV - 1));
  EXPECT_NE(tok->describe().find(tok_path()), std::string::npos) << tok->describe();
  EXPECT_EQ(mask_token(*tok), int32_t(kV));

  auto text = make_source(text_path(), 3, L);
  EXPECT_EQ(text->vocab(), 256);
  EXPECT_EQ(text->tokenizer_hash(), 0u);
  EXPECT_EQ(text->eos(), -1);
  EXPECT_EQ(mask_token(*text), kMaskToken);
  std::vector<int32_t> x(L + 1);
  text->sample(9, L, x.data());
  const uint64_t start = old_draw(3, 9, 0) % (validation_begin(text_.size(), L, nullptr, "t") - L);
  for (int64_t i = 0; i <= L; ++i) EXPECT_EQ(x[i], uint8_t(text_[start + i]));

  // A file whose first bytes are within 2 of the magic is a damaged token file, refused
  // (never read as text); 3 bytes off, it is text, read byte for byte.
  spit(dir_ / "near.txt", "SEQPTOKZ" + text_);
  expect_error<InputError>([&] { make_source((dir_ / "near.txt").string(), 3, L); },
                           {"near.txt", "damaged magic", "SEQPTOKZ"});
  spit(dir_ / "far.txt", "SEQXXOKZ" + text_);
  EXPECT_EQ(make_source((dir_ / "far.txt").string(), 3, L)->vocab(), 256);

  auto pk = make_source("passkey", 3, 128);
  EXPECT_EQ(pk->vocab(), 256);
  EXPECT_EQ(pk->tokenizer_hash(), 0u);
  EXPECT_EQ(pk->eos(), -1);

  const std::string kjv_txt = std::string(SEQPAR_SOURCE_DIR) + "/data/kjv.txt";
  if (fs::exists(kjv_txt)) {
    setenv("SEQPAR_DATA_DIR", (std::string(SEQPAR_SOURCE_DIR) + "/data").c_str(), 1);
    auto kjv = make_source("kjv", 3, L);
    unsetenv("SEQPAR_DATA_DIR");
    EXPECT_EQ(kjv->vocab(), 256);
    EXPECT_EQ(kjv->tokenizer_hash(), 0u);
    EXPECT_NE(kjv->describe().find("kjv"), std::string::npos) << kjv->describe();
  }
}

TEST_F(DataTest, KjvBpe8kIsTheBundledTokenFile) {
  const std::string dir = std::string(SEQPAR_SOURCE_DIR) + "/data";
  const std::string path = dir + "/kjv-bpe8k.tok";
  if (!fs::exists(path))
    GTEST_SKIP() << path << " is absent (built by `bash scripts/setup.sh`): --data kjv-bpe8k "
                 << "not tested";
  setenv("SEQPAR_DATA_DIR", dir.c_str(), 1);
  auto src = make_source("kjv-bpe8k", 5, 512);
  unsetenv("SEQPAR_DATA_DIR");
  TokenFile file(path);
  EXPECT_EQ(src->vocab(), 8192);
  EXPECT_EQ(src->tokenizer_hash(), file.tokenizer_hash());
  EXPECT_NE(src->tokenizer_hash(), 0u);
  EXPECT_EQ(src->eos(), file.eos());
  EXPECT_NE(src->describe().find("kjv-bpe8k"), std::string::npos) << src->describe();
  std::vector<int32_t> x(513), want(513);
  src->sample(11, 512, x.data());
  file.read(old_draw(5, 11, 0) % (validation_begin(file.num_tokens(), 512, &file, "f") - 512), 513,
            want.data());
  EXPECT_EQ(x, want);
}

TEST_F(DataTest, DamagedTokenFileIsRefusedNotReadAsText) {
  const std::string good = slurp(tok_path());
  // Truncated body: the magic says token file, so TokenFile's error, naming the file.
  const std::string cut = (dir_ / "cut.tok").string();
  spit(cut, good.substr(0, good.size() - 100));
  expect_error([&] { make_source(cut, 1, 16); }, {cut, "truncated"});
  // A changed token in the body, >= V or not: the body checksum refuses it.
  const std::string badp = (dir_ / "bad.tok").string();
  uint16_t was;
  std::memcpy(&was, good.data() + 64 + 2 * 5, 2);
  for (const uint16_t t : {uint16_t(kV), uint16_t(was == 7 ? 8 : 7)}) {
    std::string bad = good;
    std::memcpy(bad.data() + 64 + 2 * 5, &t, 2);
    spit(badp, bad);
    expect_error<InputError>([&] { make_source(badp, 1, 16); }, {badp, "body checksum"});
  }
  // Text under a *.tok name is refused too, never read as text.
  const std::string text_tok = (dir_ / "text.tok").string();
  spit(text_tok, text_);
  expect_error<InputError>([&] { make_source(text_tok, 1, 16); },
                           {text_tok, "not a seqpar token file", "never read as text"});
  // A header shorter than 64 bytes but with the magic.
  const std::string tiny = (dir_ / "tiny.tok").string();
  spit(tiny, good.substr(0, 40));
  expect_error([&] { make_source(tiny, 1, 16); }, {tiny, "truncated"});
}

TEST(DataKjvBpe8k, MissingFileSaysToRunSetup) {
  // make_source looks for kjv-bpe8k.tok in $SEQPAR_DATA_DIR, in data/ under the working
  // directory and in <executable>/../data (train/data.cpp). The first two are pointed into
  // an empty directory, so the message is reached whether or not setup built the file;
  // the third is the build tree's (build/data), which holds no data.
  TempDir empty("nodata");
  const fs::path beside_exe =
      fs::read_symlink("/proc/self/exe").parent_path() / ".." / "data" / "kjv-bpe8k.tok";
  if (fs::exists(beside_exe))
    GTEST_SKIP() << beside_exe << " exists: the missing-file message is not reachable";
  struct Restore {  // the working directory and environment, even when a check fails
    fs::path cwd = fs::current_path();
    ~Restore() {
      std::error_code ec;  // a destructor must not throw
      fs::current_path(cwd, ec);
      unsetenv("SEQPAR_DATA_DIR");
    }
  } restore;
  fs::current_path(empty);
  setenv("SEQPAR_DATA_DIR", (empty / "data").c_str(), 1);
  expect_error([&] { make_source("kjv-bpe8k", 1, 16); },
               {"kjv-bpe8k.tok", (empty / "data" / "kjv-bpe8k.tok").string(), "scripts/setup.sh"});
}

TEST_F(DataTest, ModelMustMatchTheData) {
  auto tok = make_source(tok_path(), 1, 16);
  auto text = make_source(text_path(), 1, 16);
  // Matching: no error (a padded vocabulary is fine).
  check_data_matches_model(*tok, kV, kHash, "the model");
  check_data_matches_model(*tok, 1024, kHash, "the model");
  check_data_matches_model(*tok, kV + 1, kHash, "the model", ModelKind::bert);
  check_data_matches_model(*text, 256, 0, "the model");
  check_data_matches_model(*text, 257, 0, "the model", ModelKind::bert);

  expect_error<UsageError>([&] { check_data_matches_model(*tok, 999, kHash, "model M"); },
                           {"model M", "999", "V=1000"});
  expect_error<UsageError>(
      [&] { check_data_matches_model(*tok, kV, kHash, "model M", ModelKind::bert); },
      {"model M", "1000", "[MASK]"});
  expect_error<UsageError>(
      [&] { check_data_matches_model(*text, 256, 0, "model M", ModelKind::bert); },
      {"256", "[MASK]"});
  expect_error<UsageError>([&] { check_data_matches_model(*tok, kV, 0xabcull, "model M"); },
                           {"model M", hash_hex(kHash), hash_hex(0xabc)});
  // A byte model on a token file, and a token model on bytes.
  expect_error<UsageError>([&] { check_data_matches_model(*tok, 8192, 0, "model M"); },
                           {"model M", hash_hex(kHash), "byte model"});
  expect_error<UsageError>([&] { check_data_matches_model(*text, 8192, kHash, "model M"); },
                           {"model M", hash_hex(kHash), "bytes"});
}

TEST_F(DataTest, BertOnTokensMasksWithVAndReplacesBelowV) {
  const int64_t L = 71;
  auto tok = make_source(tok_path(), 8, L);
  const std::vector<int64_t> pos = odd_positions(L);
  const int B = 40;
  Batch b = make_batch(*tok, ModelKind::bert, 8, 100, B, L, pos);
  expect_same_batch(b, reference_batch(*tok, ModelKind::bert, 8, 100, B, L, pos, int32_t(kV),
                                       [](uint32_t u) { return int32_t(u % kV); }));
  int masks = 0, high = 0;
  for (size_t k = 0; k < b.tokens.size(); ++k) {
    ASSERT_GE(b.tokens[k], 0);
    ASSERT_LE(b.tokens[k], int32_t(kV));
    ASSERT_LT(b.targets[k], int32_t(kV));
    if (b.tokens[k] == int32_t(kV)) {
      ++masks;
      EXPECT_GE(b.targets[k], 0) << "[MASK] only where a target counts";
    }
    // A replacement above 255 shows it is not a random byte (the data's tokens are too).
    high += b.targets[k] >= 0 && b.tokens[k] != b.targets[k] && b.tokens[k] > 255 &&
            b.tokens[k] < int32_t(kV);
  }
  EXPECT_GT(masks, 0);
  EXPECT_GT(high, 0);
}

TEST_F(DataTest, GptOnTokensPredictsTheNextToken) {
  const int64_t L = 71;
  auto tok = make_source(tok_path(), 8, L);
  const std::vector<int64_t> pos = odd_positions(L);
  expect_same_batch(
      make_batch(*tok, ModelKind::gpt, 8, 5, 3, L, pos),
      reference_batch(*tok, ModelKind::gpt, 8, 5, 3, L, pos, 0, [](uint32_t) { return 0; }));
}

TEST_F(DataTest, ByteBatchesAreBitIdenticalToBefore) {
  for (uint32_t u : {0u, 1u, 255u, 256u, 257u, 0xFFFFFFFFu, 0x12345678u})
    EXPECT_EQ(u & 0xFFu, u % 256u) << u;
  const auto old_rand = [](uint32_t u) { return int32_t(u & 0xFF); };
  auto text = make_source(text_path(), 21, 71);
  auto pk = make_source("passkey", 21, 128);
  for (ModelKind kind : {ModelKind::gpt, ModelKind::bert}) {
    const std::vector<int64_t> pos = odd_positions(71);
    expect_same_batch(make_batch(*text, kind, 21, 1000, 30, 71, pos),
                      reference_batch(*text, kind, 21, 1000, 30, 71, pos, 256, old_rand));
    std::vector<int64_t> all(128);
    for (int64_t i = 0; i < 128; ++i) all[i] = i;
    expect_same_batch(make_batch(*pk, kind, 21, 7, 4, 128, all),
                      reference_batch(*pk, kind, 21, 7, 4, 128, all, 256, old_rand));
  }
}

// ---- packed documents -----------------------------------------------------------------

// A file of known documents: n = 32 tokens, the validation split its second half (the last
// 1/20, at least L + 1 = 16 tokens, grown to a document start), so with L = 15 the one
// training window starts at 0. Documents (EOS = 9): [1 2 9] [3 4 5 6 9] [7 9] [1 3 5 7 8 9],
// twice.
class PackedTest : public DataTest {
 protected:
  void SetUp() override {
    DataTest::SetUp();
    TokenFileWriter w(docs_path(), 10, kHash, 9);
    for (int copy = 0; copy < 2; ++copy)
      for (const std::vector<int32_t>& d :
           std::vector<std::vector<int32_t>>{{1, 2}, {3, 4, 5, 6}, {7}, {1, 3, 5, 7, 8}})
        w.add_document(d.data(), d.size());  // appends the EOS
    w.finish();
  }
  std::string docs_path() const { return (dir_ / "docs.tok").string(); }
  static constexpr int64_t L = 15;
  const std::vector<int32_t> tokens_ = {1, 2, 9, 3, 4, 5, 6, 9, 7, 9, 1, 3, 5, 7, 8, 9};
  const std::vector<int64_t> starts_ = {0, 3, 8, 10};
  // Position of each input in its document: what --doc-positions reset gives RoPE.
  const std::vector<int64_t> in_doc_ = {0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 0, 1, 2, 3, 4};
};

TEST_F(PackedTest, BatchCarriesDocumentsMinusOneTargetsAtDocumentEndsAndResetPositions) {
  auto src = make_source(docs_path(), 5, L);
  ASSERT_TRUE(src->has_documents());
  std::vector<int64_t> ids(L + 1);
  src->doc_ids(3, L, ids.data());
  EXPECT_EQ(ids, (std::vector<int64_t>{0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3}));
  // A shard in no particular order (a zigzag shard is not monotone either).
  const std::vector<int64_t> pos = {8, 9, 10, 2, 3, 14, 0, 7};
  const int B = 2, T = int(pos.size());
  for (const int64_t window : {int64_t(0), int64_t(4)}) {
    const Batch b =
        make_batch(*src, ModelKind::llama, 5, 11, B, L, pos, {true, DocPositions::reset, window});
    EXPECT_EQ(b.mask.B, B);
    EXPECT_EQ(b.mask.L, L);
    EXPECT_EQ(b.mask.window, window);
    ASSERT_EQ(b.mask.doc_starts.size(), size_t(B));
    for (int i = 0; i < B; ++i) EXPECT_EQ(b.mask.doc_starts[i], starts_) << "row " << i;
    EXPECT_FALSE(b.mask.trivial());
    ASSERT_EQ(b.rope_pos.size(), size_t(B * T));
    for (int i = 0; i < B; ++i)
      for (int t = 0; t < T; ++t) {
        const int64_t p = pos[t], r = int64_t(i) * T + t;
        EXPECT_EQ(b.tokens[r], tokens_[p]) << "position " << p;
        // Positions 2, 7, 9 end a document: their next token starts another one.
        const bool end = p == 2 || p == 7 || p == 9;
        EXPECT_EQ(b.targets[r], end ? -1 : tokens_[p + 1]) << "position " << p;
        EXPECT_EQ(b.rope_pos[r], in_doc_[p]) << "position " << p;
        EXPECT_EQ(b.row_key[r], int64_t(11 + i) * L + p) << "global keys, not document ones";
      }
    EXPECT_EQ(b.pos, pos) << "the strategies keep the global positions";
    // The mask's meaning: query 9 (document [8, 10)) sees keys 8..9, within the window.
    int64_t lo, hi;
    b.mask.bounds(0, 9, true, lo, hi);
    EXPECT_EQ(lo, 8);
    EXPECT_EQ(hi, 9);
    b.mask.bounds(0, 14, true, lo, hi);
    EXPECT_EQ(lo, window ? 14 - window + 1 : 10);
    EXPECT_EQ(hi, 14);
  }
  // Global positions: no per-row RoPE positions; targets and mask as above.
  const Batch g = make_batch(*src, ModelKind::gpt, 5, 11, B, L, pos, {true, DocPositions::global});
  EXPECT_TRUE(g.rope_pos.empty());
  EXPECT_EQ(g.mask.doc_starts[1], starts_);
  EXPECT_EQ(g.targets[0 * T + 1], -1) << "position 9 ends a document";
}

TEST_F(PackedTest, BertTargetsAndWindowWithoutPacking) {
  auto src = make_source(docs_path(), 5, L);
  std::vector<int64_t> all(L);
  for (int64_t i = 0; i < L; ++i) all[i] = i;
  // BERT's target is the token itself: packing changes the mask, never the targets.
  const Batch plain = make_batch(*src, ModelKind::bert, 5, 0, 3, L, all);
  const Batch packed = make_batch(*src, ModelKind::bert, 5, 0, 3, L, all, {true});
  EXPECT_EQ(packed.tokens, plain.tokens);
  EXPECT_EQ(packed.targets, plain.targets);
  EXPECT_EQ(packed.mask.doc_starts.at(2), starts_);
  EXPECT_TRUE(plain.mask.trivial()) << "no packing, no window: nothing masked";
  // A window alone: every target as without it, no documents, a non-trivial mask.
  const Batch unpacked = make_batch(*src, ModelKind::gpt, 5, 0, 2, L, all);
  const Batch w =
      make_batch(*src, ModelKind::gpt, 5, 0, 2, L, all, {false, DocPositions::global, 3});
  EXPECT_EQ(w.targets, unpacked.targets);
  EXPECT_EQ(w.tokens, unpacked.tokens);
  EXPECT_TRUE(w.mask.doc_starts.empty());
  EXPECT_EQ(w.mask.window, 3);
  EXPECT_FALSE(w.mask.trivial());
  EXPECT_TRUE(w.rope_pos.empty());
  // Reset positions without documents: one document per row, so the global positions.
  const Batch r = make_batch(*src, ModelKind::gpt, 5, 0, 2, L, all, {false, DocPositions::reset});
  for (int i = 0; i < 2; ++i)
    EXPECT_EQ(std::vector<int64_t>(r.rope_pos.begin() + i * L, r.rope_pos.begin() + (i + 1) * L),
              all);
}

// On a file of random documents: every sample's targets and mask follow the file's own
// document table (TokenFile::doc_of), at every window offset drawn.
TEST_F(DataTest, PackedBatchesFollowTheDocumentTable) {
  const int64_t L = 71;
  TokenFile file(tok_path());
  auto src = make_source(tok_path(), 9, L);
  const TokenSource& ts = dynamic_cast<const TokenSource&>(*src);
  std::vector<int64_t> all(L);
  for (int64_t i = 0; i < L; ++i) all[i] = i;
  const int B = 64;
  const Batch b = make_batch(*src, ModelKind::gpt, 9, 100, B, L, all, {true, DocPositions::reset});
  int ends = 0, crossing = 0;
  for (int i = 0; i < B; ++i) {
    const uint64_t start = ts.window_start(100 + i, L);
    crossing += b.mask.doc_starts[i].size() > 1;
    for (int64_t p = 0; p < L; ++p) {
      const int64_t r = int64_t(i) * L + p;
      const int64_t doc = file.doc_of(start + p);
      const bool end = file.doc_of(start + p + 1) != doc;
      ends += end;
      EXPECT_EQ(b.targets[r] < 0, end) << "sample " << i << " position " << p;
      EXPECT_EQ(b.rope_pos[r], int64_t(start + p) -
                                   std::max<int64_t>(int64_t(file.doc_begin(doc)), int64_t(start)))
          << "sample " << i << " position " << p;
      for (int64_t q = 0; q <= p; ++q)
        ASSERT_EQ(b.mask.visible(i, p, q, true), file.doc_of(start + q) == doc)
            << "sample " << i << " query " << p << " key " << q;
    }
  }
  EXPECT_GT(ends, 0);
  EXPECT_GT(crossing, 0) << "some samples must hold a document boundary";
}

TEST_F(DataTest, PackingByteDataIsRefusedNamingTheData) {
  auto text = make_source(text_path(), 1, 16);
  auto pk = make_source("passkey", 1, 128);
  EXPECT_FALSE(text->has_documents());
  EXPECT_FALSE(pk->has_documents());
  check_packing(*text, {});  // no packing: nothing to refuse
  check_packing(*text, {false, DocPositions::global, 8});
  expect_error<UsageError>([&] { check_packing(*text, {true}); },
                           {"--pack-documents", text_path(), "bytes"});
  expect_error<UsageError>([&] { check_packing(*pk, {true}); }, {"--pack-documents", "passkey"});
  expect_error<UsageError>(
      [&] {
        make_batch(*text, ModelKind::gpt, 1, 0, 1, 16, {0, 1}, {true});
      },
      {text_path()});
}

TEST(PackingConfig, KeysRoundTripValidateAndResume) {
  TrainConfig c;
  EXPECT_FALSE(c.pack_documents);
  EXPECT_EQ(c.doc_positions, DocPositions::global);
  EXPECT_EQ(c.window, 0);
  c.merge_json({{"pack_documents", true}, {"doc_positions", "reset"}, {"window", 64}});
  EXPECT_TRUE(c.pack_documents);
  EXPECT_EQ(c.doc_positions, DocPositions::reset);
  EXPECT_EQ(c.window, 64);
  c.validate();
  const nlohmann::json j = c.to_json();
  EXPECT_EQ(j.at("pack_documents"), true);
  EXPECT_EQ(j.at("doc_positions"), "reset");
  EXPECT_EQ(j.at("window"), 64);
  TrainConfig back;
  back.merge_json(j);
  EXPECT_EQ(back.to_json(), j);
  for (const char* k : {"pack_documents", "doc_positions", "window"})
    EXPECT_NE(std::find(resume_keys().begin(), resume_keys().end(), k), resume_keys().end()) << k;

  expect_error<UsageError>(
      [&] {
        TrainConfig x;
        x.merge_json({{"doc_positions", "banana"}});
      },
      {"doc_positions", "'banana'"});
  expect_error<UsageError>(
      [&] {
        TrainConfig x;
        x.merge_json({{"pack_documents", 1}});
      },
      {"pack_documents"});
  {
    TrainConfig x;
    x.window = -1;
    expect_error<UsageError>([&] { x.validate(); }, {"window", "-1"});
  }
  {
    TrainConfig x;
    x.doc_positions = DocPositions::reset;
    expect_error<UsageError>([&] { x.validate(); }, {"doc_positions reset", "--pack-documents"});
  }
  // Every strategy not in mask_strategies() is refused before training, naming it; the
  // listed ones pass (so this follows the list as strategies are taught masks).
  const auto ms = mask_strategies();
  for (const std::string& s : attention_strategies()) {
    for (const bool pack : {false, true}) {
      TrainConfig x;
      x.strategy = parse_enum<Strategy>(s);
      x.pack_documents = pack;
      x.window = pack ? 0 : 16;
      if (std::find(ms.begin(), ms.end(), s) != ms.end())
        x.validate();
      else
        expect_error<UsageError>([&] { x.validate(); },
                                 {"'" + s + "'", pack ? "document masks" : "--window 16"});
    }
  }
}

// ---- the needle's depth (seqpar eval --task passkey) -----------------------------------

std::string passkey_text(const DataSource& src, uint64_t s, int64_t L) {
  std::vector<int32_t> x(size_t(L) + 1);
  src.sample(s, L, x.data());
  return std::string(x.begin(), x.end());
}

// Depth d puts the needle at round(d · room), room = (L + 1) − |question| − |needle|: at
// the start for d = 0, ending where the question begins for d = 1; the key, the question
// and the answer positions are those of the default placement.
TEST(PasskeyDepth, PlacesTheNeedleAtTheAskedFractionOfTheRoom) {
  const std::string needle_head = " The pass key is ", question_head = " What is the pass key?";
  const size_t needle_len = needle_head.size() + 5 + std::strlen(". Remember it. ");
  const size_t question_len = question_head.size() + needle_head.size() + 5;
  for (int64_t L : {128, 300, 1024}) {
    const int64_t room = L + 1 - int64_t(question_len) - int64_t(needle_len);
    auto plain = make_passkey_source(7, L, Split::validation);
    for (double d : {0.0, 0.25, 0.5, 1.0}) {
      auto at_d = make_passkey_source(7, L, Split::validation, d);
      for (uint64_t s : {0u, 3u, 11u}) {
        const std::string t = passkey_text(*at_d, s, L), p = passkey_text(*plain, s, L);
        const std::string key = p.substr(p.size() - 5);
        const size_t at = t.find(needle_head + key);
        EXPECT_EQ(int64_t(at), std::llround(d * double(room))) << "L=" << L << " d=" << d;
        EXPECT_EQ(t.substr(t.size() - question_len), p.substr(p.size() - question_len));
        if (d == 1.0) {
          EXPECT_EQ(at + needle_len, t.size() - question_len);
        }
        EXPECT_EQ(at_d->answer_positions(s, L), plain->answer_positions(s, L));
      }
    }
    // The default (training's) placement is unchanged: in the first half of the room.
    for (uint64_t s = 0; s < 50; ++s) {
      const std::string p = passkey_text(*plain, s, L);
      const size_t at = p.find(needle_head);
      EXPECT_LT(int64_t(at), std::max<int64_t>(1, room / 2)) << s;
    }
  }
  // passkey-anywhere: offsets over all of [0, room], the second half included.
  {
    const int64_t L = 256, room = L + 1 - int64_t(question_len) - int64_t(needle_len);
    auto any = make_source("passkey-anywhere", 7, L);
    int64_t lo = room, hi = 0;
    for (uint64_t s = 0; s < 400; ++s) {
      const int64_t at = int64_t(passkey_text(*any, s, L).find(needle_head));
      EXPECT_LE(at, room);
      lo = std::min(lo, at);
      hi = std::max(hi, at);
    }
    EXPECT_LT(lo, room / 8);
    EXPECT_GT(hi, room - room / 8);
    EXPECT_TRUE(any->has_answers());
  }
  expect_error([] { make_passkey_source(7, 128, Split::validation, 1.5); },
               {"needle depth", "[0, 1]", "1.5"});
}

}  // namespace
