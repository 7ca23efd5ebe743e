// Held-out data (train/data.hpp: Split) and the loss mask (LossOn): validation samples never
// overlap training samples, for token files (whole documents held out), text files and the
// passkey task (disjoint key sets); validation samples do not depend on the run's seed; a
// file too small to split is refused; --loss-on answer keeps exactly the answer targets.
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "core/check.hpp"
#include "data/token_file.hpp"
#include "test_util.hpp"
#include "train/config.hpp"
#include "train/data.hpp"

using namespace seqpar;
using namespace seqpar::test;
namespace fs = std::filesystem;

namespace {

class SplitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Token i of the file is i (V = 8192 > n): a sample's first token is its offset.
    // Documents of awkward lengths, no EOS.
    TokenFileWriter w(tok_path(), 8192, 0xabcdull, -1);
    int32_t next = 0;
    for (int64_t len : {700, 13, 1, 2500, 97, 301, 640, 5, 1000, 211}) {
      std::vector<int32_t> d(len);
      for (auto& t : d) t = next++;
      w.add_document(d.data(), d.size());
    }
    w.finish();
    n_ = uint64_t(next);
    // Numbered lines: any window of >= 16 bytes holds one whole line, so a sample is found
    // at exactly one offset of the text.
    for (int i = 0; text_.size() < 40000; ++i) text_ += "line " + std::to_string(100000 + i) + "\n";
    spit(text_path(), text_);
  }
  std::string tok_path() const { return (dir_ / "ids.tok").string(); }
  std::string text_path() const { return (dir_ / "lines.txt").string(); }
  TempDir dir_{"split"};
  uint64_t n_ = 0;
  std::string text_;
};

TEST_F(SplitTest, TokenFileHoldsOutItsLastDocuments) {
  TokenFile file(tok_path());
  for (const int64_t L : {int64_t(15), int64_t(64), int64_t(333)}) {
    const uint64_t cut = validation_begin(n_, L, &file, "f");
    // At least 1/20 of the file and one sample, starting at a document start.
    EXPECT_GE(n_ - cut, (n_ + 19) / 20) << "L=" << L;
    EXPECT_GE(n_ - cut, uint64_t(L) + 1) << "L=" << L;
    EXPECT_EQ(file.doc_begin(file.doc_of(cut)), cut) << "L=" << L;
    auto train = make_source(tok_path(), 7, L, Split::train);
    auto val = make_source(tok_path(), 7, L, Split::validation);
    std::vector<int32_t> x(L + 1);
    uint64_t train_max = 0, val_min = n_;
    std::set<int32_t> train_starts, val_starts;
    for (uint64_t s = 0; s < 4000; ++s) {
      train->sample(s, L, x.data());
      ASSERT_EQ(x.back(), x.front() + L) << "a window of consecutive tokens";
      train_max = std::max<uint64_t>(train_max, uint64_t(x.back()));
      train_starts.insert(x.front());
      val->sample(s, L, x.data());
      val_min = std::min<uint64_t>(val_min, uint64_t(x.front()));
      ASSERT_LT(uint64_t(x.back()), n_);
      val_starts.insert(x.front());
    }
    // No token of a training sample is in the validation part, and the reverse.
    EXPECT_LT(train_max, cut) << "L=" << L;
    EXPECT_GE(val_min, cut) << "L=" << L;
    // Both parts are sampled across (not one fixed window): many distinct starts.
    EXPECT_GT(train_starts.size(), 500u);
    EXPECT_GT(val_starts.size(), std::min<size_t>(100, n_ - cut - L));
  }
}

TEST_F(SplitTest, TextFileHoldsOutItsLastBytes) {
  const int64_t L = 100;
  const uint64_t cut = validation_begin(text_.size(), L, nullptr, "t");
  EXPECT_EQ(text_.size() - cut, (text_.size() + 19) / 20);
  auto train = make_source(text_path(), 3, L, Split::train);
  auto val = make_source(text_path(), 3, L, Split::validation);
  std::vector<int32_t> x(L + 1);
  for (uint64_t s = 0; s < 2000; ++s) {
    for (int v = 0; v < 2; ++v) {
      (v ? val : train)->sample(s, L, x.data());
      const std::string w(x.begin(), x.end());
      const size_t at = text_.find(w);
      ASSERT_NE(at, std::string::npos);
      ASSERT_EQ(text_.find(w, at + 1), std::string::npos) << "the window is unique";
      if (v)
        ASSERT_GE(at, cut) << "validation sample " << s;
      else
        ASSERT_LE(at + L + 1, cut) << "training sample " << s;
    }
  }
}

TEST_F(SplitTest, ValidationSamplesDoNotDependOnTheRunSeed) {
  const int64_t L = 64;
  for (const std::string& spec : {tok_path(), text_path(), std::string("passkey")}) {
    const int64_t l = spec == "passkey" ? 128 : L;
    auto v1 = make_source(spec, 1, l, Split::validation),
         v2 = make_source(spec, 2, l, Split::validation);
    auto t1 = make_source(spec, 1, l, Split::train), t2 = make_source(spec, 2, l, Split::train);
    std::vector<int32_t> a(l + 1), b(l + 1);
    int train_differ = 0;
    for (uint64_t s = 0; s < 20; ++s) {
      v1->sample(s, l, a.data());
      v2->sample(s, l, b.data());
      EXPECT_EQ(a, b) << spec << " sample " << s;
      t1->sample(s, l, a.data());
      t2->sample(s, l, b.data());
      train_differ += a != b;
    }
    EXPECT_GT(train_differ, 0) << spec << ": the run's seed still picks the training samples";
  }
}

// The pass key is the last 5 bytes of a sample.
std::string passkey_of(const DataSource& src, uint64_t s, int64_t L) {
  std::vector<int32_t> x(L + 1);
  src.sample(s, L, x.data());
  return std::string(x.end() - 5, x.end());
}

TEST(PasskeySplit, TrainingAndValidationKeysAreDisjoint) {
  const int64_t L = 128;
  auto train = make_source("passkey", 11, L, Split::train);
  auto val = make_source("passkey", 11, L, Split::validation);
  std::set<std::string> tk, vk;
  for (uint64_t s = 0; s < 30000; ++s) tk.insert(passkey_of(*train, s, L));
  for (uint64_t s = 0; s < 3000; ++s) vk.insert(passkey_of(*val, s, L));
  for (const std::string& k : vk) ASSERT_EQ(tk.count(k), 0u) << "validation key " << k;
  // 30000 draws from the ~93 700 training keys give ~25 000 distinct ones; a split that
  // collapsed one side to a few keys would show here.
  EXPECT_GT(tk.size(), 20000u);
  EXPECT_GT(vk.size(), 2000u);
  // Every digit value appears in every position of the validation keys: the split hashes
  // keys, it does not carve out a digit pattern.
  for (int p = 0; p < 5; ++p) {
    std::set<char> d;
    for (const std::string& k : vk) d.insert(k[p]);
    EXPECT_EQ(d.size(), 10u) << "position " << p;
  }
  // The question still asks for the needle's key.
  std::vector<int32_t> x(L + 1);
  val->sample(5, L, x.data());
  const std::string seq(x.begin(), x.end()), key = seq.substr(L + 1 - 5);
  EXPECT_NE(seq.find("The pass key is " + key + ". Remember it."), std::string::npos) << seq;
}

TEST_F(SplitTest, TooSmallToSplitIsRefusedNamingTheFile) {
  // n = 2·(L + 1) − 1: one sample fits, two do not.
  const std::string small = (dir_ / "small.txt").string();
  spit(small, std::string(2 * 65 - 1, 'a'));
  expect_error([&] { make_source(small, 1, 64); }, {small, "129 bytes", "2·(seq_len + 1) = 130"});
  spit(small, std::string(2 * 65, 'a'));
  EXPECT_NO_THROW(make_source(small, 1, 64, Split::validation));
  // One document of the whole file: the cut falls inside it (no document start leaves
  // training a sample), still 1/20 and at least L + 1 tokens.
  const std::string one = (dir_ / "one.tok").string();
  {
    TokenFileWriter w(one, 1000, 0, -1);
    std::vector<int32_t> d(400, 3);
    w.add_document(d.data(), d.size());
    w.finish();
  }
  TokenFile f(one);
  EXPECT_EQ(validation_begin(400, 15, &f, "one"), 400u - 20u);
  EXPECT_EQ(validation_begin(400, 63, &f, "one"), 400u - 64u);
}

TEST(LossOn, AnswerKeepsOnlyTheAnswerTargets) {
  const int64_t L = 128;
  auto pk = make_source("passkey", 4, L);
  ASSERT_TRUE(pk->has_answers());
  // A shard in no particular order holding some answer positions (L−5..L−1) and not others.
  const std::vector<int64_t> pos = {127, 3, 124, 60, 122, 125, 0};
  const int B = 3;
  const Batch all = make_batch(*pk, ModelKind::gpt, 4, 10, B, L, pos);
  Batch ans = all;
  apply_loss_on(ans, *pk, 10, LossOn::answer);
  int counted = 0;
  for (int i = 0; i < B; ++i)
    for (size_t t = 0; t < pos.size(); ++t) {
      const size_t r = size_t(i) * pos.size() + t;
      const bool answer = pos[t] >= L - 5 && pos[t] <= L - 1;
      EXPECT_EQ(ans.targets[r], answer ? all.targets[r] : -1) << "position " << pos[t];
      EXPECT_EQ(ans.tokens[r], all.tokens[r]);
      if (answer) {
        EXPECT_TRUE(all.targets[r] >= '0' && all.targets[r] <= '9') << "a digit";
      }
      counted += ans.targets[r] >= 0;
    }
  EXPECT_EQ(counted, B * 3) << "positions 127, 125 and 124 of this shard are answers";
  // The whole sequence: exactly 5 targets per sample.
  std::vector<int64_t> every(L);
  for (int64_t i = 0; i < L; ++i) every[i] = i;
  Batch whole = make_batch(*pk, ModelKind::gpt, 4, 0, B, L, every);
  apply_loss_on(whole, *pk, 0, LossOn::answer);
  EXPECT_EQ(std::count_if(whole.targets.begin(), whole.targets.end(), [](int t) { return t >= 0; }),
            5 * B);
  // all: nothing changes.
  Batch same = all;
  apply_loss_on(same, *pk, 10, LossOn::all);
  EXPECT_EQ(same.targets, all.targets);
}

TEST_F(SplitTest, LossOnAnswerNeedsARetrievalTask) {
  auto text = make_source(text_path(), 1, 64);
  EXPECT_FALSE(text->has_answers());
  check_loss_on(*text, LossOn::all);
  expect_error<UsageError>([&] { check_loss_on(*text, LossOn::answer); },
                           {"--loss-on answer", text_path()});
  Batch b = make_batch(*text, ModelKind::gpt, 1, 0, 1, 64, {0, 1});
  expect_error<UsageError>([&] { apply_loss_on(b, *text, 0, LossOn::answer); }, {text_path()});
}

TEST(EvalConfig, KeysRoundTripValidateAndResume) {
  TrainConfig c;
  EXPECT_EQ(c.loss_on, LossOn::all);
  EXPECT_EQ(c.eval_every, 0);
  c.merge_json({{"loss_on", "answer"}, {"eval_every", 5}, {"eval_batches", 3}});
  EXPECT_EQ(c.loss_on, LossOn::answer);
  EXPECT_EQ(c.eval_every, 5);
  EXPECT_EQ(c.eval_batches, 3);
  c.validate();
  const nlohmann::json j = c.to_json();
  EXPECT_EQ(j.at("loss_on"), "answer");
  TrainConfig back;
  back.merge_json(j);
  EXPECT_EQ(back.to_json(), j);
  const auto& rk = resume_keys();
  EXPECT_NE(std::find(rk.begin(), rk.end(), "loss_on"), rk.end());
  // How often and how much to evaluate does not change what is trained.
  EXPECT_EQ(std::find(rk.begin(), rk.end(), "eval_every"), rk.end());
  expect_error<UsageError>(
      [&] {
        TrainConfig x;
        x.merge_json({{"loss_on", "answers"}});
      },
      {"loss_on", "'answers'"});
  {
    TrainConfig x;
    x.eval_batches = 0;
    expect_error<UsageError>([&] { x.validate(); }, {"eval_batches", "0"});
    x.eval_batches = 1;
    x.eval_every = -2;
    expect_error<UsageError>([&] { x.validate(); }, {"eval_every", "-2"});
  }
}

}  // namespace
