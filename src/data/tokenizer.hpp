// Tokenizer: one interface over the two kinds of tokenizer seqpar reads, so the rest of the
// code sees ids, not the libraries. Only data/ and cli/ include this header.
//   sentencepiece  a SentencePiece .model file (Debian's libsentencepiece-dev)
//   bpe            a Hugging Face tokenizer.json with a byte-level BPE model (GPT-2,
//                  LLaMA 3, SmolLM): data/bpe_tokenizer.hpp, regexes by PCRE2
// The kind is told from the file's content: a tokenizer.json is a JSON object (first byte
// that is not white space is '{'), a .model is a protobuf (never starts so).
//
// SentencePiece:
// Models trained by train_tokenizer are LOSSLESS on UTF-8 text: decode(encode(x)) == x
// byte for byte. That takes four SentencePiece settings (the defaults lose information):
//   normalization_rule_name=identity   no NFKC folding
//   remove_extra_whitespaces=false     runs of spaces, leading/trailing spaces survive
//   add_dummy_prefix=false             no invented space at the start of each piece of text
//   byte_fallback=true                 any character outside the vocabulary (and '\n',
//                                      which no training line contains) becomes its UTF-8
//                                      bytes <0x..>, never <unk>
// plus split_digits=true (numbers are read digit by digit, as in LLaMA's tokenizer).
// Reserved ids: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), then the 256 byte pieces.
//
// Training is deterministic: every line of the input is used (input_sentence_size=0, no
// sampling, no shuffle) on one thread, and the lines are fed through an iterator, so the
// model records no input path. Two trainings on the same text give byte-identical .model
// files, hence the same hash().
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace seqpar {

class BpeTokenizer;

enum class TokenizerKind { sentencepiece, bpe };
const char* tokenizer_kind_name(TokenizerKind k);  // "sentencepiece" or "bpe"

struct TokenizerTrainOptions {
  int vocab_size = 8192;           // V, including the 3 control and 256 byte pieces
  std::string model_type = "bpe";  // "bpe" or "unigram"
  bool verbose = false;            // SentencePiece's own training log on stderr
};

// Trains on the lines of the text file `input` and writes the model to `model_path`
// atomically (temp + rename). Throws naming the file, or with SentencePiece's reason
// (e.g. a vocabulary too large for the text).
void train_tokenizer(const std::string& input, const std::string& model_path,
                     const TokenizerTrainOptions& opt = {});

class Tokenizer {
 public:
  // Loads a SentencePiece .model file (any, not only ours: a LLaMA tokenizer.model loads;
  // it is lossless only if trained with the settings above) or a byte-level BPE
  // tokenizer.json. Refused by name: anything else, or a tokenizer.json feature that is
  // not implemented (data/bpe_tokenizer.hpp).
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  const std::string& path() const { return path_; }
  TokenizerKind kind() const { return bpe_ ? TokenizerKind::bpe : TokenizerKind::sentencepiece; }
  // What was loaded, in one line (the BPE configuration; "SentencePiece <type>").
  std::string describe() const;
  // True if every byte string encodes and decodes back to itself (byte-level BPE); false
  // for SentencePiece, which reads bytes that are not UTF-8 as U+FFFD.
  bool any_bytes() const { return bpe_ != nullptr; }
  // Number of pieces V: every id is in [0, V).
  int32_t vocab_size() const { return vocab_; }
  int32_t eos_id() const { return eos_; }  // -1 if the model has none
  int32_t bos_id() const { return bos_; }  // -1 if the model has none
  // FNV-1a 64 of the .model or tokenizer.json file's bytes: the identity a token file records, so
  // data is never read with a tokenizer other than the one that wrote it.
  uint64_t hash() const { return hash_; }
  // True for the 256 <0xNN> byte-fallback pieces of a SentencePiece model: decoding must
  // not cut after one. Always false for byte-level BPE, whose decode is the concatenation
  // of each id's bytes, so any cut of the ids is a cut of the bytes.
  bool is_byte(int32_t id) const;

  // Appends the ids of `text` to `out`.
  void encode(std::string_view text, std::vector<int32_t>* out) const;
  std::vector<int32_t> encode(std::string_view text) const;
  // Text of ids[0..n). SentencePiece: control ids (BOS, EOS) decode to nothing. BPE: an
  // added token (EOS included) decodes to its content, so text that held one comes back
  // whole. Throws on an id >= V.
  std::string decode(const int32_t* ids, size_t n) const;
  std::string decode(const std::vector<int32_t>& ids) const {
    return decode(ids.data(), ids.size());
  }

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;  // one of these two
  std::unique_ptr<BpeTokenizer> bpe_;
  int32_t vocab_ = 0, eos_ = -1, bos_ = -1;
  uint64_t hash_ = 0;
};

}  // namespace seqpar
