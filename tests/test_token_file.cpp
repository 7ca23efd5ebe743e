// Token files (data/token_file.hpp): write/read round trips in both dtypes, document
// boundaries and lookups, the byte layout documented in docs/data.md, and refusal of every
// kind of damage with a message naming the file, the value found and what was expected:
// a flipped body byte (body checksum, XXH64: its reference vectors are checked here too),
// version 1, and a damaged magic or a *.tok name (never read as text).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <numeric>

#include "core/check.hpp"
#include "core/file.hpp"
#include "core/xxh64.hpp"
#include "data/token_file.hpp"
#include "test_models.hpp"
#include "test_util.hpp"

using namespace seqpar;
using namespace seqpar::test;
namespace fs = std::filesystem;

namespace {

template <class T>
T get(const std::string& b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}
template <class T>
void put(std::string& b, size_t at, T v) {
  std::memcpy(b.data() + at, &v, sizeof v);
}
// Recomputes the header hash (bytes [0, 56) → 56), so a patched field is seen by the
// field's own check rather than as a corrupt header.
void rehash(std::string& b) { put<uint64_t>(b, 56, fnv1a64(b.data(), 56)); }
// Recomputes the body checksum (XXH64 of bytes [64, end) → 48) and then the header hash,
// so a patched body is seen by the check of what was patched rather than as a corrupt body.
void reseal(std::string& b) {
  put<uint64_t>(b, 48, xxh64(b.data() + 64, b.size() - 64));
  rehash(b);
}

// Documents of awkward lengths (1, 2, 7, 300, ...) with tokens drawn below V − 1; the
// writer appends EOS = V − 1 after each.
std::vector<std::vector<int32_t>> make_docs(uint32_t V, uint32_t seed) {
  auto docs = random_docs(V, seed, {1, 2, 7, 300, 0, 4099});
  docs[3][0] = int32_t(V - 2);  // the largest non-EOS id
  return docs;
}

class TokenFileTest : public ::testing::Test {
 protected:
  // Writes docs with EOS = V − 1 and tokenizer hash 0x1234; returns the path.
  std::string write(const std::string& name, uint32_t V,
                    const std::vector<std::vector<int32_t>>& docs, int32_t eos = -2) {
    const std::string p = (dir_ / name).string();
    write_token_file(p, V, 0x1234, eos == -2 ? int32_t(V - 1) : eos, docs);
    return p;
  }

  // Writes, reads back, and compares every token and every boundary.
  void round_trip(uint32_t V, uint32_t expected_width) {
    const auto docs = make_docs(V, V);
    const std::string p = write("rt.tok", V, docs);
    TokenFile f(p);
    EXPECT_EQ(f.vocab(), V);
    EXPECT_EQ(f.token_bytes(), expected_width);
    EXPECT_EQ(f.eos(), int32_t(V - 1));
    EXPECT_EQ(f.tokenizer_hash(), 0x1234u);
    EXPECT_EQ(f.version(), 3u);
    EXPECT_EQ(f.tokenizer_kind(), TokenizerRecord::none);  // the writer was not told one
    EXPECT_EQ(f.body_checksum(), xxh64(slurp(p).data() + 64, f.file_bytes() - 64));
    ASSERT_EQ(f.num_docs(), int64_t(docs.size()));
    std::vector<int32_t> all;
    for (const auto& d : docs) {
      all.insert(all.end(), d.begin(), d.end());
      all.push_back(int32_t(V - 1));
    }
    ASSERT_EQ(f.num_tokens(), all.size());
    // Header + tokens padded to 8 + (D + 1) offsets, nothing else.
    const uint64_t body_end = 64 + all.size() * expected_width;
    EXPECT_EQ(f.file_bytes(), (body_end + 7) / 8 * 8 + 8 * (docs.size() + 1));
    std::vector<int32_t> got(all.size());
    f.read(0, got.size(), got.data());
    EXPECT_EQ(got, all);
    // Reads at every document boundary, of awkward lengths, and an empty read at the end.
    uint64_t begin = 0;
    for (int64_t i = 0; i < f.num_docs(); ++i) {
      const uint64_t end = begin + docs[size_t(i)].size() + 1;
      EXPECT_EQ(f.doc_begin(i), begin);
      EXPECT_EQ(f.doc_end(i), end);
      EXPECT_EQ(f.doc_of(begin), i);
      EXPECT_EQ(f.doc_of(end - 1), i);
      std::vector<int32_t> d(end - begin);
      f.read(begin, d.size(), d.data());
      EXPECT_EQ(d.back(), int32_t(V - 1)) << "document " << i << " ends with EOS";
      EXPECT_TRUE(std::equal(docs[size_t(i)].begin(), docs[size_t(i)].end(), d.begin()));
      begin = end;
    }
    f.read(f.num_tokens(), 0, nullptr);
    // Document ids across boundaries: tokens [5, 320) span documents 1..4.
    std::vector<int64_t> ids(315);
    f.doc_ids(5, ids.size(), ids.data());
    for (size_t k = 0; k < ids.size(); ++k) {
      const uint64_t t = 5 + k;
      EXPECT_EQ(ids[k], f.doc_of(t)) << "token " << t;
      EXPECT_GE(t, f.doc_begin(ids[k]));
      EXPECT_LT(t, f.doc_end(ids[k]));
    }
  }

  TempDir dir_{"tokfile"};
};

TEST_F(TokenFileTest, RoundTripUint16) { round_trip(8192, 2); }
TEST_F(TokenFileTest, RoundTripUint16AtTheLimit) { round_trip(65536, 2); }  // ids up to 65535
TEST_F(TokenFileTest, RoundTripUint32) { round_trip(65537, 4); }
TEST_F(TokenFileTest, RoundTripUint32LargeVocab) { round_trip(128256, 4); }  // LLaMA-3 size

TEST_F(TokenFileTest, DtypeFollowsVocab) {
  EXPECT_EQ(token_bytes_for_vocab(1), 2u);
  EXPECT_EQ(token_bytes_for_vocab(65536), 2u);
  EXPECT_EQ(token_bytes_for_vocab(65537), 4u);
}

// The byte layout documented in token_file.hpp and docs/data.md, field by field.
TEST_F(TokenFileTest, HeaderLayoutIsAsDocumented) {
  const std::vector<std::vector<int32_t>> docs = {{5, 6, 7}, {8}};
  const std::string b = slurp(write("h.tok", 1000, docs));
  EXPECT_EQ(b.substr(0, 8), "SEQPTOKS");
  EXPECT_EQ(get<uint32_t>(b, 8), 3u);      // version
  EXPECT_EQ(get<uint16_t>(b, 12), 2u);     // bytes per token
  EXPECT_EQ(get<uint16_t>(b, 14), 0u);     // tokenizer kind: not recorded
  EXPECT_EQ(get<uint32_t>(b, 16), 1000u);  // V
  EXPECT_EQ(get<int32_t>(b, 20), 999);     // EOS
  EXPECT_EQ(get<uint64_t>(b, 24), 6u);     // tokens: 3 + EOS + 1 + EOS
  EXPECT_EQ(get<uint64_t>(b, 32), 2u);     // documents
  EXPECT_EQ(get<uint64_t>(b, 40), 0x1234u);
  EXPECT_EQ(get<uint64_t>(b, 48), xxh64(b.data() + 64, b.size() - 64));  // body checksum
  EXPECT_EQ(get<uint64_t>(b, 56), fnv1a64(b.data(), 56));
  const uint16_t body[6] = {5, 6, 7, 999, 8, 999};
  EXPECT_EQ(std::memcmp(b.data() + 64, body, sizeof body), 0);
  EXPECT_EQ(get<uint32_t>(b, 76), 0u);  // 12 token bytes padded to 16
  EXPECT_EQ(get<uint64_t>(b, 80), 0u);  // offsets 0, 4, 6
  EXPECT_EQ(get<uint64_t>(b, 88), 4u);
  EXPECT_EQ(get<uint64_t>(b, 96), 6u);
  EXPECT_EQ(b.size(), 104u);
}

TEST_F(TokenFileTest, WithoutEosDocumentsAreJustRanges) {
  const std::vector<std::vector<int32_t>> docs = {{1, 2}, {3}, {4, 5, 6}};
  TokenFile f(write("noeos.tok", 7, docs, -1));
  EXPECT_EQ(f.eos(), -1);
  EXPECT_EQ(f.num_tokens(), 6u);
  EXPECT_EQ(f.doc_end(0), 2u);
  EXPECT_EQ(f.doc_of(2), 1);
  EXPECT_EQ(f.doc_of(3), 2);
}

TEST_F(TokenFileTest, EmptyFileHasNoDocuments) {
  TokenFile f(write("empty.tok", 10, {}));
  EXPECT_EQ(f.num_tokens(), 0u);
  EXPECT_EQ(f.num_docs(), 0);
  expect_error([&] { f.doc_of(0); }, {"token 0", "has 0 tokens"});
}

TEST_F(TokenFileTest, OutOfRangeQueriesAreRefused) {
  TokenFile f(write("q.tok", 100, {{1, 2, 3}}));
  std::vector<int32_t> out(8);
  expect_error([&] { f.read(2, 3, out.data()); }, {"reading tokens [2, 5)", "has 4 tokens"});
  expect_error([&] { f.doc_begin(1); }, {"document 1", "has 1 documents"});
  expect_error([&] { f.doc_of(4); }, {"token 4", "has 4 tokens"});
}

TEST_F(TokenFileTest, WriterRefusesBadInput) {
  const std::string p = (dir_ / "w.tok").string();
  {
    TokenFileWriter w(p, 100, 0, 99);
    const int32_t bad[3] = {1, 100, 2};
    expect_error([&] { w.append(bad, 3); }, {"w.tok", "token 1 is 100", "[0, 100)"});
    const int32_t neg = -1;
    expect_error([&] { w.append(&neg, 1); }, {"token 0 is -1"});
    const int32_t ok[2] = {1, 2};
    w.append(ok, 2);  // the refused calls stored nothing
    EXPECT_EQ(w.num_tokens(), 2u);
    expect_error([&] { w.finish(); }, {"2 tokens after the end of the last document"});
  }
  EXPECT_FALSE(fs::exists(p)) << "an unfinished writer leaves no file";
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0)
      << "nor a temp file";
  expect_error([&] { TokenFileWriter(p, 100, 0, 100); }, {"EOS id 100", "[0, 100)"});
  TokenFileWriter w(p, 100, 0, -1);
  expect_error([&] { w.end_document(); }, {"document 0 is empty"});
}

// What `--data PATH` opens as a token file (and refuses if damaged) rather than as text.
TEST_F(TokenFileTest, ClaimsTokenFile) {
  const std::string p = write("t.tok", 100, {{1}});
  EXPECT_TRUE(claims_token_file(p));
  fs::copy_file(p, dir_ / "tokens.bin");
  EXPECT_TRUE(claims_token_file((dir_ / "tokens.bin").string())) << "the magic, whatever the name";
  auto starts_with = [&](const std::string& head) {
    spit(dir_ / "f.bin", head);
    return claims_token_file((dir_ / "f.bin").string());
  };
  EXPECT_TRUE(starts_with("SEQPTOKX and then anything"));   // 1 byte off
  EXPECT_TRUE(starts_with("SEQXTOKX and then anything"));   // 2 bytes off
  EXPECT_FALSE(starts_with("SXQXTOKX and then anything"));  // 3 bytes off: text
  EXPECT_TRUE(starts_with("SEQPTO"));                       // cut: 2 bytes missing
  EXPECT_FALSE(starts_with("SEQPT"));                       // 3 missing: text
  EXPECT_FALSE(starts_with("Ge1:1 In the beginning"));
  EXPECT_FALSE(starts_with(""));
  // A *.tok name claims it whatever the contents, even when missing (then refused as a
  // missing token file, not as a missing text file).
  spit(dir_ / "text.tok", "Ge1:1 In the beginning");
  EXPECT_TRUE(claims_token_file((dir_ / "text.tok").string()));
  EXPECT_TRUE(claims_token_file((dir_ / "missing.tok").string()));
  EXPECT_FALSE(claims_token_file((dir_ / "text.tok.txt").string()));
  EXPECT_FALSE(claims_token_file((dir_ / ".tok").string()));  // a hidden file, no suffix
  EXPECT_FALSE(claims_token_file((dir_ / "missing").string()));
  EXPECT_FALSE(claims_token_file(dir_.string()));
}

// ---- every corruption is refused, naming the file, the value and what was expected ----

class TokenFileCorruption : public TokenFileTest {
 protected:
  void SetUp() override {
    good_ = slurp(write("good.tok", 1000, {{1, 2, 3}, {4, 5}, {6}}));
    path_ = (dir_ / "bad.tok").string();
  }
  template <class Fn>
  void expect_refused(Fn damage, std::initializer_list<std::string> words) {
    std::string b = good_;
    damage(b);
    spit(path_, b);
    expect_error<InputError>([&] { TokenFile f(path_); }, words);
  }
  std::string good_, path_;
};

TEST_F(TokenFileCorruption, WrongMagic) {
  spit(path_, "Ge1:1 In the beginning God created the heaven and the earth.\n");
  expect_error<InputError>([&] { TokenFile f(path_); },
                           {"bad.tok", "is not a seqpar token file", "\"Ge1:1 In\"", "SEQPTOKS"});
  expect_refused([](std::string& b) { b[3] = 'X'; },
                 {"bad.tok", "damaged magic", "SEQXTOKS", "SEQPTOKS", "never read as text"});
  expect_refused([](std::string& b) { b[7] = 'X'; }, {"bad.tok", "damaged magic", "SEQPTOKX"});
  spit(path_, std::string("\x00\x01", 2));
  expect_error<InputError>([&] { TokenFile f(path_); }, {"\\x00\\x01"});
  spit(path_, "");
  expect_error<InputError>([&] { TokenFile f(path_); }, {"bad.tok", "not a seqpar token file"});
}

// Text under a *.tok name is refused saying why it is not read as text; under another
// name (TokenFile opened explicitly, as tokenize decode does) without that clause.
TEST_F(TokenFileCorruption, TextNamedTok) {
  spit(path_, "Ge1:1 In the beginning God created the heaven and the earth.\n");
  expect_error<InputError>([&] { TokenFile f(path_); },
                           {"bad.tok", "not a seqpar token file", "never read as text"});
  const std::string txt = (dir_ / "bad.txt").string();
  spit(txt, "Ge1:1 In the beginning God created the heaven and the earth.\n");
  try {
    TokenFile f(txt);
    ADD_FAILURE() << "text opened as a token file";
  } catch (const InputError& e) {
    EXPECT_EQ(std::string(e.what()).find("never read as text"), std::string::npos) << e.what();
  }
}

TEST_F(TokenFileCorruption, WrongVersion) {
  expect_refused(
      [](std::string& b) {
        put<uint32_t>(b, 8, 4);
        rehash(b);
      },
      {"bad.tok", "format version 4", "reads versions 2 and 3"});
  // A changed version byte without the header hash to match is a damaged header, not
  // an old file.
  expect_refused([](std::string& b) { put<uint32_t>(b, 8, 1); }, {"bad.tok", "corrupt header"});
}

// Version 2: bytes 12-15 were one u32 token width, so its kind reads as not recorded; the
// file is read as it was. A kind this build does not know, or a kind with no hash, is
// refused by name.
TEST_F(TokenFileCorruption, Version2ReadsAndKindIsChecked) {
  {
    std::string b = good_;
    put<uint32_t>(b, 8, 2);
    rehash(b);
    spit(path_, b);
    TokenFile f(path_);
    EXPECT_EQ(f.version(), 2u);
    EXPECT_EQ(f.tokenizer_kind(), TokenizerRecord::none);
  }
  expect_refused(
      [](std::string& b) {
        put<uint16_t>(b, 14, 7);
        rehash(b);
      },
      {"bad.tok", "tokenizer kind 7", "0 none, 1 sentencepiece, 2 bpe"});
  expect_refused(
      [](std::string& b) {
        put<uint16_t>(b, 14, 2);
        put<uint64_t>(b, 40, 0);
        rehash(b);
      },
      {"bad.tok", "tokenizer kind bpe", "no tokenizer hash"});
}

// The kind the writer is told is the kind read, with its name.
TEST_F(TokenFileTest, TokenizerKindRoundTrips) {
  const std::string p = (dir_ / "k.tok").string();
  {
    TokenFileWriter w(p, 100, 0xabc, 99, TokenizerRecord::bpe);
    const int32_t t[2] = {1, 2};
    w.add_document(t, 2);
    w.finish();
  }
  TokenFile f(p);
  EXPECT_EQ(f.tokenizer_kind(), TokenizerRecord::bpe);
  EXPECT_STREQ(tokenizer_record_name(f.tokenizer_kind(), f.tokenizer_hash()), "bpe");
  EXPECT_STREQ(tokenizer_record_name(TokenizerRecord::none, 0), "none");
  EXPECT_STREQ(tokenizer_record_name(TokenizerRecord::none, 1), "not recorded");
  EXPECT_THROW(TokenFileWriter(p + "2", 100, 0, 99, TokenizerRecord::sentencepiece), Error);
}

// Version 1: the same header with byte 48 reserved (0) and no body checksum. Refused,
// naming the command that re-creates it: a flipped token below V would go unseen.
TEST_F(TokenFileCorruption, Version1IsRefused) {
  expect_refused(
      [](std::string& b) {
        put<uint32_t>(b, 8, 1);
        put<uint64_t>(b, 48, 0);
        rehash(b);
      },
      {"bad.tok", "format version 1", "no body checksum", "reads versions 2 and 3",
       "seqpar tokenize encode", "--output '" + path_ + "'"});
}

// A flipped byte anywhere after the header: a token (to another id below V, which every
// other check accepts), the padding, the document table. Refused naming the file, "body
// checksum" and both values.
TEST_F(TokenFileCorruption, FlippedBodyByte) {
  const std::string recorded = hash_hex(get<uint64_t>(good_, 48));
  for (size_t at : {64u, 65u, 64u + 8u, 82u, 87u, 88u, 119u}) {  // tokens, padding, offsets
    std::string b = good_;
    b[at] = char(b[at] ^ (at == 65 ? 0x01 : 0x02));  // token 0: 1 → 257 (< V), or 1 → 3
    spit(path_, b);
    const std::string found = hash_hex(xxh64(b.data() + 64, b.size() - 64));
    expect_error<InputError>(
        [&] { TokenFile f(path_); },
        {"bad.tok", "corrupt body", "body checksum", recorded, found, "[64, 120)"});
  }
  // Without the body scan the header alone is checked: the damage goes unseen until a read.
  std::string b = good_;
  b[64] ^= 0x02;
  spit(path_, b);
  TokenFile f(path_, TokenFile::Options{.scan_body = false});
  std::vector<int32_t> out(1);
  f.read(0, 1, out.data());
  EXPECT_EQ(out[0], 3) << "token 0 was 1, flipped to 3 (< V): only the checksum sees it";
  // A changed checksum field (with the header hash to match) is refused the same way.
  expect_refused(
      [](std::string& b) {
        put<uint64_t>(b, 48, get<uint64_t>(b, 48) ^ 1);
        rehash(b);
      },
      {"bad.tok", "body checksum"});
}

TEST_F(TokenFileCorruption, TruncatedHeader) {
  expect_refused([](std::string& b) { b.resize(40); },
                 {"bad.tok", "truncated", "40 bytes", "64-byte header"});
  expect_refused([](std::string& b) { b.resize(5); }, {"bad.tok", "truncated", "5 bytes"});
}

TEST_F(TokenFileCorruption, TruncatedBody) {
  // 9 tokens (6 + 3 EOS) of 2 bytes: 64 + 18 → 88 (padded) + 4 offsets = 120 bytes.
  ASSERT_EQ(good_.size(), 120u);
  expect_refused([](std::string& b) { b.resize(100); },
                 {"bad.tok", "truncated", "100 bytes", "9 tokens of 2 bytes", "3 documents",
                  "120 bytes in all"});
  expect_refused([](std::string& b) { b += "junk"; }, {"bad.tok", "4 bytes after its end"});
}

TEST_F(TokenFileCorruption, CorruptHeader) {
  // A changed count without the header hash to match: refused before it is trusted.
  expect_refused([](std::string& b) { put<uint64_t>(b, 24, 8); }, {"bad.tok", "corrupt header"});
  expect_refused(
      [](std::string& b) {
        put<uint64_t>(b, 24, 1ull << 63);
        rehash(b);
      },
      {"bad.tok", "impossible counts"});
}

TEST_F(TokenFileCorruption, DtypeDoesNotFitVocab) {
  expect_refused(
      [](std::string& b) {
        put<uint32_t>(b, 12, 4);
        rehash(b);
      },
      {"bad.tok", "4-byte tokens", "V=1000", "expected 2"});
  expect_refused(
      [](std::string& b) {
        put<uint32_t>(b, 16, 70000);
        rehash(b);
      },
      {"bad.tok", "2-byte tokens", "V=70000", "expected 4"});
}

TEST_F(TokenFileCorruption, TokenOutOfVocabulary) {
  // Token 4 (document 1) becomes 1000 = V.
  auto damage = [](std::string& b) {
    put<uint16_t>(b, 64 + 4 * 2, 1000);
    reseal(b);
  };
  expect_refused(damage, {"bad.tok", "token 4", "document 1", "is 1000", "V=1000"});
  // Without the scan on open, read() finds it, naming the same index; reads that do not
  // cover it succeed.
  std::string b = good_;
  damage(b);
  spit(path_, b);
  TokenFile f(path_, TokenFile::Options{.scan_body = false});
  std::vector<int32_t> out(9);
  f.read(0, 4, out.data());
  f.read(5, 4, out.data());
  expect_error<InputError>([&] { f.read(2, 5, out.data()); },
                           {"bad.tok", "token 4", "is 1000", "V=1000"});
}

// Opening reads the body in chunks of 65536 tokens: a file of several, sound, opens; a
// token >= V in a later chunk is found at its index.
TEST_F(TokenFileTest, SeveralChunks) {
  const auto docs = random_docs(1000, 7, {65535, 1, 70000, 30000});
  const std::string p = write("big.tok", 1000, docs);
  TokenFile f(p);
  ASSERT_EQ(f.num_tokens(), 165540u);
  std::string b = slurp(p);
  put<uint16_t>(b, 64 + 2 * 140000, 1000);  // document 3: [135539, 165540)
  reseal(b);
  spit(p, b);
  expect_error<InputError>([&] { TokenFile g(p); },
                           {"big.tok", "token 140000", "document 3", "is 1000"});
}

TEST_F(TokenFileCorruption, DocumentTable) {
  // offsets live at 88: 0, 4, 7, 9. Resealed, so the table's own checks see the damage
  // (unsealed, the body checksum refuses it first: FlippedBodyByte).
  auto at = [](size_t where, uint64_t v) {
    return [=](std::string& b) {
      put<uint64_t>(b, where, v);
      reseal(b);
    };
  };
  expect_refused(at(96, 7), {"bad.tok", "document 1 spans tokens [7, 7)"});
  expect_refused(at(88, 1), {"bad.tok", "document 0 starts at token 1"});
  expect_refused(at(112, 8), {"bad.tok", "ends at token 8", "9"});
  expect_refused(at(96, 3), {"bad.tok", "document 0 ends with token 3", "EOS=999"});
  // Without the body scan the table is still checked (it is what opening reads).
  std::string b = good_;
  put<uint64_t>(b, 96, 7);
  spit(path_, b);
  expect_error<InputError>([&] { TokenFile f(path_, TokenFile::Options{.scan_body = false}); },
                           {"bad.tok", "document 1 spans tokens [7, 7)"});
}

TEST_F(TokenFileCorruption, BadEos) {
  expect_refused(
      [](std::string& b) {
        put<int32_t>(b, 20, 1000);
        rehash(b);
      },
      {"bad.tok", "EOS id 1000"});
}

TEST_F(TokenFileCorruption, TokenizerAndModelChecks) {
  spit(path_, good_);
  TokenFile f(path_);
  f.check_tokenizer(0x1234, "tokenizer 'a.model'");
  expect_error<InputError>([&] { f.check_tokenizer(0xabcd, "tokenizer 'b.model'"); },
                           {"bad.tok", "0000000000001234", "tokenizer 'b.model'",
                            "000000000000abcd", "seqpar tokenize encode"});
  f.check_vocab(1000);
  f.check_vocab(1024);  // a padded embedding
  expect_error<InputError>([&] { f.check_vocab(512); }, {"bad.tok", "V=1000", "vocabulary of 512"});
}

TEST_F(TokenFileCorruption, MissingOrNotAFile) {
  expect_error<InputError>([&] { TokenFile f((dir_ / "nope.tok").string()); },
                           {"nope.tok", "does not exist"});
  expect_error<InputError>([&] { TokenFile f(dir_.string()); }, {"is a directory"});
}

}  // namespace

namespace {

// ---- XXH64, the body checksum -------------------------------------------------------

// Bytes (7i + 3) mod 256: every length around the 4-, 8- and 32-byte steps of the
// algorithm, and long inputs.
std::string pattern(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char((i * 7 + 3) % 256);
  return s;
}

// Reference values from xxhsum 0.8.1 (`xxhsum -H1`, seed 0), so a token file's checksum
// can be verified outside seqpar.
TEST(Xxh64, ReferenceVectors) {
  EXPECT_EQ(xxh64("", 0), 0xef46db3751d8e999ull);
  EXPECT_EQ(xxh64("abc", 3), 0x44bc2cf5ad770999ull);
  const std::pair<size_t, uint64_t> ref[] = {
      {1, 0x1f25c8d0bc1f4bb6ull},     {3, 0x31d2363f52e564c9ull},   {4, 0x9bb64b7d66ee9fdaull},
      {7, 0x9a7b149959ce60d8ull},     {8, 0xdab99d95c6f90092ull},   {31, 0xa2aa5f33cc4a6119ull},
      {32, 0x23c3c17ef790fd97ull},    {33, 0x50a7cfc7ba588784ull},  {63, 0x5e3e54b431c7493cull},
      {64, 0x0eb64b3ef6eeb01full},    {100, 0xa61f8d4c170fe531ull}, {1000, 0x5f235fa033f1a3fbull},
      {100003, 0x924a64f3ae9ea839ull}};
  for (const auto& [n, h] : ref) EXPECT_EQ(xxh64(pattern(n).data(), n), h) << n << " bytes";
}

// Streaming in pieces of any size (the writer's buffers, the reader's chunks) gives the
// one-shot value.
TEST(Xxh64, StreamingEqualsOneShot) {
  const std::string s = pattern(100003);
  const uint64_t whole = xxh64(s.data(), s.size());
  for (size_t piece : {1u, 3u, 31u, 32u, 33u, 4096u, 65537u}) {
    Xxh64 h;
    for (size_t i = 0; i < s.size(); i += piece)
      h.update(s.data() + i, std::min(piece, s.size() - i));
    EXPECT_EQ(h.value(), whole) << "pieces of " << piece;
  }
  Xxh64 h;
  h.update(s.data(), 10);
  EXPECT_EQ(h.value(), xxh64(s.data(), 10)) << "value() midway";
  h.update(s.data() + 10, s.size() - 10);
  EXPECT_EQ(h.value(), whole);
}

// Every single-bit flip of a 64-byte body changes the value (where word-wise FNV-1a would
// miss two flips of bit 63 in two words: checked too).
TEST(Xxh64, EveryBitFlipIsSeen) {
  std::string s = pattern(64);
  const uint64_t h0 = xxh64(s.data(), s.size());
  for (size_t bit = 0; bit < 8 * s.size(); ++bit) {
    s[bit / 8] = char(s[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_NE(xxh64(s.data(), s.size()), h0) << "bit " << bit;
    s[bit / 8] = char(s[bit / 8] ^ (1 << (bit % 8)));
  }
  s[7] = char(s[7] ^ 0x80);
  s[15] = char(s[15] ^ 0x80);
  EXPECT_NE(xxh64(s.data(), s.size()), h0) << "bit 63 of two words";
}

}  // namespace
