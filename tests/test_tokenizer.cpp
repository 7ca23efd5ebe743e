// Tokenizer (data/tokenizer.hpp) and corpora (data/corpus.hpp): a small BPE model trained
// here on a slice of data/kjv.txt (vocabulary 500, well under a second) must be
// deterministic and lossless; documents split as documented; text file → token file →
// text gives the same bytes; a token file is only decoded by the tokenizer that wrote it.
// Needs data/kjv.txt (bash scripts/setup.sh extracts it), not setup's tokenizer outputs.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "core/check.hpp"
#include "core/file.hpp"
#include "data/corpus.hpp"
#include "data/token_file.hpp"
#include "data/tokenizer.hpp"
#include "test_util.hpp"

using namespace seqpar;
using namespace seqpar::test;
namespace fs = std::filesystem;

namespace {

const fs::path kKjv = fs::path(SEQPAR_SOURCE_DIR) / "data" / "kjv.txt";

// Lines [first, first + n) of the KJV, each with its '\n'.
std::string kjv_lines(size_t first, size_t n) {
  std::ifstream f(kKjv);
  std::string line, out;
  for (size_t i = 0; i < first + n && std::getline(f, line); ++i)
    if (i >= first) out += line + "\n";
  return out;
}

// One model for the suite, trained on Genesis and Exodus (2746 verses, ~370 kB).
class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kKjv)) return;
    char tmpl[] = "/tmp/seqpar_test_tok_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    spit(dir_ / "train.txt", kjv_lines(0, 2746));
    TokenizerTrainOptions o;
    o.vocab_size = 500;
    train_tokenizer((dir_ / "train.txt").string(), (dir_ / "m.model").string(), o);
  }
  static void TearDownTestSuite() {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  void SetUp() override {
    if (!fs::exists(kKjv)) GTEST_SKIP() << kKjv << " is missing (bash scripts/setup.sh)";
  }
  static std::string model() { return (dir_ / "m.model").string(); }
  static fs::path dir_;
};
fs::path TokenizerTest::dir_;

TEST_F(TokenizerTest, ModelBasics) {
  Tokenizer t(model());
  EXPECT_EQ(t.vocab_size(), 500);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.hash(), fnv1a64_file(model()));
  EXPECT_TRUE(t.is_byte(3));  // <0x00>, right after <unk> <s> </s>
  EXPECT_TRUE(t.is_byte(258));
  EXPECT_FALSE(t.is_byte(259));
  for (int32_t id : t.encode(kjv_lines(0, 10))) {
    EXPECT_GE(id, 3);  // no <unk>, no control id in text
    EXPECT_LT(id, 500);
  }
}

TEST_F(TokenizerTest, TrainingIsDeterministic) {
  TokenizerTrainOptions o;
  o.vocab_size = 500;
  // A different file name: the model records no input path.
  fs::copy_file(dir_ / "train.txt", dir_ / "again.txt", fs::copy_options::overwrite_existing);
  train_tokenizer((dir_ / "again.txt").string(), (dir_ / "again.model").string(), o);
  EXPECT_EQ(slurp(dir_ / "again.model"), slurp(model()));
  fs::remove(dir_ / "again.model");
}

// Lossless: Genesis (seen in training), Psalms and Revelation (not seen), and text with
// what default SentencePiece settings would lose: runs of spaces, leading spaces, tabs,
// CRLF, characters never seen in training (byte fallback), empty lines.
TEST_F(TokenizerTest, RoundTripIsExact) {
  Tokenizer t(model());
  const std::vector<std::string> texts = {
      kjv_lines(0, 31),
      kjv_lines(13000, 40),
      kjv_lines(31080, 22),
      "  two leading spaces,   three inside, and trailing  \n",
      "tabs\there\r\nand CRLF\r\n\n\nblank lines above\n",
      "na\xc3\xafve \xe2\x80\x94 \xe2\x80\x9cquotes\xe2\x80\x9d, \xe6\x97\xa5\xe6\x9c\xac, "
      "\xf0\x9f\x99\x82 and 1234567890",
      "",
      "\n"};
  for (const std::string& s : texts) EXPECT_EQ(t.decode(t.encode(s)), s) << s.substr(0, 60);
}

// encode_text_file encodes line by line; for our models that equals encoding the whole
// text at once, because no piece spans a '\n'.
TEST_F(TokenizerTest, LineByLineEqualsWhole) {
  Tokenizer t(model());
  const std::string text = kjv_lines(200, 50) + "\n  indented\n\n";
  std::vector<int32_t> by_line;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);) t.encode(line + "\n", &by_line);
  EXPECT_EQ(by_line, t.encode(text));
}

TEST_F(TokenizerTest, Errors) {
  expect_error<InputError>([&] { Tokenizer t((dir_ / "nope.model").string()); },
                           {"tokenizer model", "nope.model", "does not exist"});
  expect_error<InputError>([&] { Tokenizer t((dir_ / "train.txt").string()); },
                           {"train.txt", "is not a SentencePiece model"});
  TokenizerTrainOptions o;
  o.vocab_size = 259;
  expect_error([&] { train_tokenizer((dir_ / "train.txt").string(), "x.model", o); },
               {"vocabulary size 259 is too small"});
  spit(dir_ / "tiny.txt", "a few words only\n");
  o.vocab_size = 5000;
  expect_error<InputError>(
      [&] { train_tokenizer((dir_ / "tiny.txt").string(), (dir_ / "t.model").string(), o); },
      {"tiny.txt", "vocabulary 5000", "failed"});
  EXPECT_FALSE(fs::exists(dir_ / "t.model"));
  expect_error<InputError>([&] { train_tokenizer((dir_ / "nope.txt").string(), "x.model", {}); },
                           {"nope.txt", "does not exist"});
  Tokenizer t(model());
  const std::vector<int32_t> bad = {10, 500};
  expect_error([&] { t.decode(bad); }, {"token 1 is 500", "[0, 500)"});
}

// ---- documents ------------------------------------------------------------------------

std::vector<uint64_t> starts(const std::string& text, DocSplit s, DocSplit* resolved = nullptr) {
  return document_starts(text, s, "text", resolved);
}

TEST(DocumentSplit, BlankLines) {
  const std::string text = "\n\npara one\nstill one\n\n  \npara two\n\n\npara three";
  EXPECT_EQ(starts(text, DocSplit::blank_line), (std::vector<uint64_t>{0, 25, 36}));
  EXPECT_EQ(text.substr(25, 8), "para two");
  EXPECT_EQ(starts(text, DocSplit::none), (std::vector<uint64_t>{0}));
  EXPECT_EQ(starts("", DocSplit::blank_line), (std::vector<uint64_t>{}));
  EXPECT_EQ(starts("one\n\n", DocSplit::blank_line), (std::vector<uint64_t>{0}));
  DocSplit r;
  EXPECT_EQ(starts(text, DocSplit::automatic, &r).size(), 3u);
  EXPECT_EQ(r, DocSplit::blank_line);
}

TEST(DocumentSplit, KjvChapters) {
  const std::string text =
      "Ge1:1 In the beginning\nGe1:2 And the earth\nGe2:1 Thus the heavens\n"
      "a line without a reference\nExo2:1 And there went\n1Sm2:1 And Hannah\n1Sm2:2 There is "
      "none\n1Sm3:1 And the child\n";
  DocSplit r;
  const auto s = starts(text, DocSplit::automatic, &r);
  EXPECT_EQ(r, DocSplit::kjv_chapter);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(text.substr(s[1], 5), "Ge2:1");
  EXPECT_EQ(text.substr(s[2], 6), "Exo2:1");
  EXPECT_EQ(text.substr(s[3], 6), "1Sm2:1");
  EXPECT_EQ(text.substr(s[4], 6), "1Sm3:1");
  expect_error<InputError>([&] { starts("Chapter one\nGe1:1 x\n", DocSplit::kjv_chapter); },
                           {"kjv-chapter", "first line of text", "Chapter one"});
  EXPECT_EQ(parse_doc_split("kjv-chapter"), DocSplit::kjv_chapter);
  expect_error([&] { parse_doc_split("chapters"); }, {"'chapters'", "kjv-chapter"});
}

TEST(DocumentSplit, WholeKjvHas1189Chapters) {
  if (!fs::exists(kKjv)) GTEST_SKIP() << kKjv << " is missing";
  const std::string text = slurp(kKjv);
  const auto s = starts(text, DocSplit::automatic);
  EXPECT_EQ(s.size(), 1189u);  // the chapters of the Protestant canon
  EXPECT_EQ(text.substr(s.back(), 7), "Rev22:1");
}

// ---- text file → token file → text ---------------------------------------------------

TEST_F(TokenizerTest, EncodeDecodeFiles) {
  const std::string text = kjv_lines(1500, 1500);  // Exodus 13 to Leviticus 22: 3000 verses
  spit(dir_ / "in.txt", text);
  Tokenizer t(model());
  int calls = 0;
  const EncodeStats st =
      encode_text_file(t, (dir_ / "in.txt").string(), (dir_ / "in.tok").string(),
                       DocSplit::automatic, [&](const EncodeStats&) { ++calls; });
  EXPECT_EQ(st.split, DocSplit::kjv_chapter);
  EXPECT_EQ(st.bytes, text.size());
  EXPECT_GE(calls, 1);
  TokenFile f((dir_ / "in.tok").string());
  EXPECT_EQ(f.num_tokens(), st.tokens);
  EXPECT_EQ(f.num_docs(), st.docs);
  EXPECT_EQ(f.num_docs(), int64_t(starts(text, DocSplit::kjv_chapter).size()));
  EXPECT_EQ(f.vocab(), 500u);
  EXPECT_EQ(f.token_bytes(), 2u);
  EXPECT_EQ(f.eos(), 2);
  EXPECT_EQ(f.tokenizer_hash(), t.hash());
  // Each document is its chapter's text, encoded, then EOS.
  const auto s = starts(text, DocSplit::kjv_chapter);
  for (int64_t d : {int64_t(0), int64_t(7), f.num_docs() - 1}) {
    const uint64_t end = size_t(d + 1) < s.size() ? s[size_t(d + 1)] : text.size();
    std::vector<int32_t> want = t.encode(text.substr(s[size_t(d)], end - s[size_t(d)]));
    want.push_back(2);
    std::vector<int32_t> got(f.doc_end(d) - f.doc_begin(d));
    f.read(f.doc_begin(d), got.size(), got.data());
    EXPECT_EQ(got, want) << "document " << d;
  }
  const DecodeStats ds =
      decode_token_file(t, (dir_ / "in.tok").string(), (dir_ / "out.txt").string());
  EXPECT_EQ(ds.bytes, text.size());
  EXPECT_EQ(slurp(dir_ / "out.txt"), text);
}

TEST_F(TokenizerTest, DecodeRefusesAnotherTokenizer) {
  spit(dir_ / "small.txt", kjv_lines(0, 100));
  Tokenizer t(model());
  encode_text_file(t, (dir_ / "small.txt").string(), (dir_ / "small.tok").string(), DocSplit::none);
  TokenizerTrainOptions o;
  o.vocab_size = 400;
  train_tokenizer((dir_ / "train.txt").string(), (dir_ / "other.model").string(), o);
  Tokenizer other((dir_ / "other.model").string());
  ASSERT_NE(other.hash(), t.hash());
  expect_error<InputError>(
      [&] { decode_token_file(other, (dir_ / "small.tok").string(), (dir_ / "x.txt").string()); },
      {"small.tok", hash_hex(t.hash()), "other.model", hash_hex(other.hash())});
  EXPECT_FALSE(fs::exists(dir_ / "x.txt"));
}

TEST_F(TokenizerTest, EncodeErrors) {
  Tokenizer t(model());
  expect_error<InputError>(
      [&] { encode_text_file(t, (dir_ / "nope.txt").string(), "x.tok", DocSplit::none); },
      {"text file", "nope.txt", "does not exist"});
  spit(dir_ / "empty.txt", "");
  expect_error<InputError>(
      [&] { encode_text_file(t, (dir_ / "empty.txt").string(), "x.tok", DocSplit::none); },
      {"empty.txt", "is empty"});
  expect_error<InputError>(
      [&] {
        encode_text_file(t, (dir_ / "train.txt").string(), (dir_ / "no_dir" / "x.tok").string(),
                         DocSplit::none);
      },
      {"no_dir", "No such file or directory"});
}

// Invalid UTF-8 is refused before anything is written, naming the byte offset, the line
// and the byte: SentencePiece would read it as U+FFFD and decoding would not give it back.
TEST_F(TokenizerTest, EncodeRefusesInvalidUtf8) {
  Tokenizer t(model());
  // Why refuse: the tokenizer itself turns the byte into U+FFFD (EF BF BD).
  EXPECT_EQ(t.decode(t.encode("caf\xe9\n")), "caf\xef\xbf\xbd\n");
  const std::string out = (dir_ / "bad.tok").string();
  const std::string text = "Ge1:1 In the beginning\nGe1:2 And the earth was caf\xe9.\n";
  spit(dir_ / "latin1.txt", text);
  expect_error<InputError>(
      [&] { encode_text_file(t, (dir_ / "latin1.txt").string(), out, DocSplit::automatic); },
      {"latin1.txt", "is not UTF-8", "byte " + std::to_string(text.find('\xe9')), "(line 2)",
       "0xe9", "U+FFFD"});
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_NE(e.path().filename().string().rfind("bad.tok", 0), 0u)
        << "nothing written, not even a temp file: " << e.path();
}

TEST(Utf8, FirstInvalidByte) {
  auto at = [](std::string_view s) { return first_invalid_utf8(s); };
  EXPECT_EQ(at(""), 0u);
  EXPECT_EQ(at("plain ASCII, longer than eight bytes\n"), 37u);
  const std::string_view valid = "caf\xc3\xa9 \xe2\x80\x94 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf";
  EXPECT_EQ(at(valid), valid.size());              // 2-, 3- and 4-byte characters, U+10FFFF
  EXPECT_EQ(at(std::string_view("a\0b", 3)), 3u);  // NUL is UTF-8 (and round-trips)
  EXPECT_EQ(at("caf\xe9"), 3u);                    // Latin-1
  EXPECT_EQ(at("0123456789\xff"), 10u);            // after the 8-byte ASCII path
  EXPECT_EQ(at("a\x80"), 1u);                      // a lone continuation byte
  EXPECT_EQ(at("a\xc0\x80"), 1u);                  // overlong NUL
  EXPECT_EQ(at("a\xc1\xbf"), 1u);                  // overlong
  EXPECT_EQ(at("a\xe0\x9f\xbf"), 1u);              // overlong 3-byte
  EXPECT_EQ(at("a\xed\xa0\x80"), 1u);              // a surrogate (U+D800)
  EXPECT_EQ(at("a\xf0\x8f\xbf\xbf"), 1u);          // overlong 4-byte
  EXPECT_EQ(at("a\xf4\x90\x80\x80"), 1u);          // above U+10FFFF
  EXPECT_EQ(at("a\xf5\x80\x80\x80"), 1u);
  EXPECT_EQ(at("ab\xe2\x80"), 2u);   // cut at the end
  EXPECT_EQ(at("ab\xe2\x80x"), 2u);  // cut by another character
}

}  // namespace
