#include "data/tokenizer.hpp"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <string>

#include "core/check.hpp"
#include "core/file.hpp"
#include "core/hash.hpp"
#include "data/bpe_tokenizer.hpp"

namespace seqpar {
namespace {

// Feeds the lines of a mapped text file to the trainer without their '\n' (SentencePiece
// trains on "sentences"; a line is ours). Empty lines are skipped by the trainer.
class LineIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const MappedFile& f)
      : text_(reinterpret_cast<const char*>(f.data()), f.size()) {
    Next();
  }
  bool done() const override { return done_; }
  void Next() override {
    if (pos_ >= text_.size()) {
      done_ = true;
      return;
    }
    size_t end = text_.find('\n', pos_);
    if (end == std::string_view::npos) end = text_.size();
    line_.assign(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::string_view text_;
  size_t pos_ = 0;
  std::string line_;
  bool done_ = false;
};

}  // namespace

void train_tokenizer(const std::string& input, const std::string& model_path,
                     const TokenizerTrainOptions& opt) {
  SP_CHECK(opt.model_type == "bpe" || opt.model_type == "unigram", "tokenizer model type '",
           opt.model_type, "' is not bpe or unigram");
  // 3 control pieces + 256 byte pieces are always in the vocabulary; at least one more.
  SP_CHECK(opt.vocab_size > 259, "vocabulary size ", opt.vocab_size,
           " is too small: the 3 control and 256 byte pieces take 259 ids");
  MappedFile text(input, "text file");
  SP_CHECK_INPUT(text.size() > 0, "text file '", input,
                 "' is empty: nothing to train a tokenizer on");
  const std::string args =
      "--model_type=" + opt.model_type + " --vocab_size=" + std::to_string(opt.vocab_size) +
      " --character_coverage=1.0 --byte_fallback=true --normalization_rule_name=identity"
      " --remove_extra_whitespaces=false --add_dummy_prefix=false --split_digits=true"
      " --allow_whitespace_only_pieces=true --input_sentence_size=0"
      " --shuffle_input_sentence=false --num_threads=1"
      " --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1" +
      std::string(opt.verbose ? " --minloglevel=0" : " --minloglevel=1");
  LineIterator lines(text);
  std::string model;
  const auto st = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model);
  SP_CHECK_INPUT(st.ok(), "training a tokenizer on '", input, "' (vocabulary ", opt.vocab_size,
                 ") failed: ", st.ToString());
  write_file_atomic(model_path, model);
}

const char* tokenizer_kind_name(TokenizerKind k) {
  return k == TokenizerKind::bpe ? "bpe" : "sentencepiece";
}

Tokenizer::Tokenizer(const std::string& model_path) : path_(model_path) {
  MappedFile f(model_path, "tokenizer model");
  const std::string_view bytes(reinterpret_cast<const char*>(f.data()), f.size());
  hash_ = fnv1a64(bytes.data(), bytes.size());
  const size_t first = bytes.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && bytes[first] == '{') {
    bpe_ = std::make_unique<BpeTokenizer>(bytes, model_path);
    vocab_ = bpe_->vocab_size();
    eos_ = bpe_->eos_id();
    bos_ = bpe_->bos_id();
    return;
  }
  sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto st = sp_->LoadFromSerializedProto(bytes);
  SP_CHECK_INPUT(st.ok(), "tokenizer model '", model_path,
                 "' is not a SentencePiece model (nor a tokenizer.json, which is a JSON object): ",
                 st.ToString());
  vocab_ = sp_->GetPieceSize();
  eos_ = sp_->eos_id();
  bos_ = sp_->bos_id();
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

bool Tokenizer::is_byte(int32_t id) const { return sp_ && sp_->IsByte(id); }

std::string Tokenizer::describe() const {
  if (bpe_) return bpe_->describe();
  return "SentencePiece";
}

void Tokenizer::encode(std::string_view text, std::vector<int32_t>* out) const {
  if (bpe_) return bpe_->encode(text, out);
  std::vector<int> ids;
  const auto st = sp_->Encode(text, &ids);
  SP_CHECK(st.ok(), "encoding with '", path_, "' failed: ", st.ToString());
  out->insert(out->end(), ids.begin(), ids.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  encode(text, &out);
  return out;
}

std::string Tokenizer::decode(const int32_t* ids, size_t n) const {
  if (bpe_) return bpe_->decode(ids, n);
  std::vector<int> v(ids, ids + n);
  for (size_t i = 0; i < n; ++i)
    SP_CHECK(v[i] >= 0 && v[i] < vocab_, "token ", i, " is ", v[i], ", outside the vocabulary [0, ",
             vocab_, ") of tokenizer '", path_, "'");
  std::string text;
  const auto st = sp_->Decode(v, &text);
  SP_CHECK(st.ok(), "decoding with '", path_, "' failed: ", st.ToString());
  return text;
}

}  // namespace seqpar
