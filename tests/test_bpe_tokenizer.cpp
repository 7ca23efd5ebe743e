// Byte-level BPE from tokenizer.json (data/bpe_tokenizer.hpp, through data/tokenizer.hpp):
// ids equal to a reference implementation's (tests/fixtures/bpe/*/reference_ids.json,
// written by tools/make_bpe_fixture.mjs from @lenml/tokenizers), decode gives back the exact
// bytes of every input (invalid UTF-8 included), a token file of such text round-trips, and
// a tokenizer.json that is corrupt or uses what is not implemented is refused by name.
//
// BpeReference.FromEnvironment compares with a fixture made at test time by the live
// reference (tests/cli/bpe_reference.sh sets SEQPAR_BPE_TOKENIZER and SEQPAR_BPE_FIXTURE);
// without them it is skipped, never passed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "core/check.hpp"
#include "core/hash.hpp"
#include "data/corpus.hpp"
#include "data/token_file.hpp"
#include "data/tokenizer.hpp"
#include "test_util.hpp"

using namespace seqpar;
using namespace seqpar::test;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kFixtures = fs::path(SEQPAR_SOURCE_DIR) / "tests" / "fixtures" / "bpe";

std::string unhex(const std::string& hex) {
  std::string s;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    s.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return s;
}

// Every case of `fixture` encodes to its ids, and they decode to its bytes, whole and cut
// at every third id (byte-level BPE decodes by concatenation).
void check_fixture(const std::string& tokenizer, const std::string& fixture) {
  const Tokenizer tok(tokenizer);
  ASSERT_EQ(tok.kind(), TokenizerKind::bpe);
  const json fx = json::parse(slurp(fixture));
  ASSERT_GE(fx.at("cases").size(), 20u) << fixture;

  for (const json& c : fx.at("cases")) {
    const std::string name = c.at("name"), bytes = unhex(c.at("hex"));
    if (c.value("refused", false)) {  // not in NFC, for a tokenizer that normalises to NFC
      expect_error<InputError>([&] { (void)tok.encode(bytes); }, {"not in Unicode NFC"});
      continue;
    }
    const std::vector<int32_t> want = c.at("ids").get<std::vector<int32_t>>();
    const std::vector<int32_t> got = tok.encode(bytes);
    EXPECT_EQ(got, want) << "case " << name << " of " << fixture;
    EXPECT_EQ(tok.decode(got), bytes) << "case " << name << " does not decode to its bytes";
    std::string parts;
    for (size_t i = 0; i < got.size(); i += 3)
      parts += tok.decode(got.data() + i, std::min<size_t>(3, got.size() - i));
    EXPECT_EQ(parts, bytes) << "case " << name << " decoded in pieces";
  }
}

TEST(BpeTokenizer, Gpt2MatchesReference) {
  check_fixture((kFixtures / "gpt2" / "tokenizer.json").string(),
                (kFixtures / "gpt2" / "reference_ids.json").string());
}

TEST(BpeTokenizer, Llama3StyleMatchesReference) {
  check_fixture((kFixtures / "small" / "tokenizer.json").string(),
                (kFixtures / "small" / "reference_ids.json").string());
}

TEST(BpeTokenizer, QwenStyleMatchesReference) {  // NFC, digits one by one, [a, b] merges
  check_fixture((kFixtures / "qwen-small" / "tokenizer.json").string(),
                (kFixtures / "qwen-small" / "reference_ids.json").string());
}

TEST(BpeReference, FromEnvironment) {
  const char* tok = std::getenv("SEQPAR_BPE_TOKENIZER");
  const char* fx = std::getenv("SEQPAR_BPE_FIXTURE");
  if (!tok || !fx) GTEST_SKIP() << "SEQPAR_BPE_TOKENIZER / SEQPAR_BPE_FIXTURE not set";
  check_fixture(tok, fx);
}

TEST(BpeTokenizer, IdentityAndSpecialIds) {
  const std::string path = (kFixtures / "gpt2" / "tokenizer.json").string();
  const Tokenizer gpt2(path);
  EXPECT_EQ(gpt2.vocab_size(), 50257);
  EXPECT_EQ(gpt2.eos_id(), 50256);  // <|endoftext|>
  EXPECT_EQ(gpt2.bos_id(), -1);
  const std::string bytes = slurp(path);
  EXPECT_EQ(gpt2.hash(), fnv1a64(bytes.data(), bytes.size()));
  EXPECT_NE(gpt2.describe().find("ByteLevel(GPT-2 regex)"), std::string::npos);
  const Tokenizer small((kFixtures / "small" / "tokenizer.json").string());
  EXPECT_EQ(small.vocab_size(), 4099);
  EXPECT_EQ(small.eos_id(), 4096);  // <|endoftext|>, before <|im_end|> (4098)
  EXPECT_EQ(small.encode("<|im_end|>"), std::vector<int32_t>{4098});
  EXPECT_EQ(small.decode(std::vector<int32_t>{4096}), "<|endoftext|>");
  expect_error([&] { (void)small.decode(std::vector<int32_t>{4099}); }, {"4099", "outside"});
  expect_error([&] { (void)small.decode(std::vector<int32_t>{-1}); }, {"-1"});
}

// Random byte strings (most are not UTF-8) and random mixtures of awkward characters.
TEST(BpeTokenizer, AnyBytesRoundTrip) {
  const Tokenizer tok((kFixtures / "small" / "tokenizer.json").string());
  std::mt19937 rng(18);
  const std::vector<std::string> atoms = {
      " ",    "  ",       "\n",  "\r\n", "\t",  "a",    "Z",    "'s",       "'LL",
      "7",    "123",      "中",  "😀",    "é",   "\xc3", "\xff", "\xe4\xb8", "<|endoftext|>",
      "<|im", "\xc2\xa0", "...", "ß",    "\x00"};
  for (int t = 0; t < 300; ++t) {
    std::string s;
    const int n = int(rng() % 64);
    for (int i = 0; i < n; ++i) {
      if (t % 2)
        s.push_back(char(rng() & 0xFF));
      else
        s += atoms[rng() % atoms.size()];
    }
    const std::vector<int32_t> ids = tok.encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok.vocab_size());
    ASSERT_EQ(tok.decode(ids), s) << "trial " << t;
  }
}

// A text file that is not UTF-8 becomes a token file and comes back byte for byte (the
// SentencePiece path refuses such a file: test_tokenizer).
TEST(BpeTokenizer, TokenFileRoundTripOfInvalidUtf8) {
  TempDir dir("bpe");
  const Tokenizer tok((kFixtures / "gpt2" / "tokenizer.json").string());
  const std::string text =
      "Ge1:1 In the beginning \xff\xfe caf\xe9 (latin-1)\n\nsecond \xe4\xb8 doc 12345\n"
      "third <|endoftext|> with a special token\n";
  spit(dir / "in.txt", text);
  (void)encode_text_file(tok, (dir / "in.txt").string(), (dir / "out.tok").string(),
                         DocSplit::blank_line, nullptr);
  const TokenFile f((dir / "out.tok").string());
  EXPECT_EQ(f.tokenizer_hash(), tok.hash());
  EXPECT_EQ(f.vocab(), 50257u);
  EXPECT_EQ(f.eos(), 50256);
  (void)decode_token_file(tok, (dir / "out.tok").string(), (dir / "back.txt").string());
  EXPECT_EQ(slurp(dir / "back.txt"), text);
}

// Writes the small tokenizer with `edit` applied and expects it refused, naming `words`.
void expect_refused(const std::function<void(json&)>& edit,
                    std::initializer_list<std::string> words) {
  TempDir dir("bpe_bad");
  json j = json::parse(slurp(kFixtures / "small" / "tokenizer.json"));
  edit(j);
  spit(dir / "tokenizer.json", j.dump());
  expect_error<InputError>([&] { Tokenizer t((dir / "tokenizer.json").string()); }, words);
}

TEST(BpeTokenizer, RefusesWhatItDoesNotImplement) {
  expect_refused([](json& j) { j["normalizer"] = {{"type", "NFKC"}}; }, {"normalizer", "NFKC"});
  expect_refused([](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, {"Lowercase"});
  expect_refused([](json& j) { j["model"]["type"] = "WordPiece"; }, {"WordPiece"});
  expect_refused([](json& j) { j["model"]["byte_fallback"] = true; }, {"byte_fallback"});
  expect_refused([](json& j) { j["decoder"] = {{"type", "Metaspace"}}; }, {"decoder", "Metaspace"});
  expect_refused(
      [](json& j) {
        j["pre_tokenizer"] = {{"type", "Whitespace"}};
      },
      {"pre_tokenizer", "Whitespace"});
  expect_refused([](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Contiguous"; },
                 {"Split", "Contiguous"});
  expect_refused([](json& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; },
                 {"add_prefix_space"});
  expect_refused([](json& j) { j["pre_tokenizer"]["pretokenizers"].erase(1); }, {"ByteLevel"});
  expect_refused([](json& j) { j["added_tokens"][0]["lstrip"] = true; }, {"lstrip"});
}

TEST(BpeTokenizer, RefusesCorruptFiles) {
  TempDir dir("bpe_corrupt");
  const std::string good = slurp(kFixtures / "small" / "tokenizer.json");
  spit(dir / "cut.json", good.substr(0, good.size() / 2));
  expect_error<InputError>([&] { Tokenizer t((dir / "cut.json").string()); },
                           {"cut.json", "not valid JSON"});
  expect_refused(
      [](json& j) {
        j["model"]["merges"][5] = {"Ġ", "notatoken"};
      },
      {"merge 5", "notatoken", "not in the vocabulary"});
  expect_refused([](json& j) { j["model"]["merges"][7] = "onlyone"; }, {"merge 7"});
  expect_refused([](json& j) { j["model"]["vocab"]["zzzzq"] = 5; }, {"id 5", "zzzzq"});
  expect_refused([](json& j) { j["model"]["vocab"].erase("!"); }, {"byte 0x21"});
  expect_refused(
      [](json& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L"; },
      {"PCRE2", "(\\p{L"});
  expect_refused([](json& j) { j.erase("model"); }, {"model"});
}

// Both kinds behind one interface: a SentencePiece model still loads as one.
TEST(BpeTokenizer, KindIsToldByContent) {
  const fs::path sp = fs::path(SEQPAR_SOURCE_DIR) / "data" / "kjv-bpe8k.model";
  if (!fs::exists(sp)) GTEST_SKIP() << sp << " missing (bash scripts/setup.sh makes it)";
  const Tokenizer t(sp.string());
  EXPECT_EQ(t.kind(), TokenizerKind::sentencepiece);
  EXPECT_FALSE(t.any_bytes());
  TempDir dir("bpe_kind");
  spit(dir / "x.json", "not json and not a model");
  expect_error<InputError>([&] { Tokenizer x((dir / "x.json").string()); },
                           {"is not a SentencePiece model (nor a tokenizer.json"});
}

}  // namespace
