// Byte-level BPE from a Hugging Face `tokenizer.json` (GPT-2, LLaMA 3, SmolLM, Qwen 2/3).
// Only data/tokenizer.cpp includes this header;
// the rest of the code sees data/tokenizer.hpp's Tokenizer.
//
// Encoding a byte string x, exactly as the `tokenizers` library does for the configurations
// accepted here (anything else is refused by name when the file is loaded):
//   1. added tokens: x is cut at every occurrence of an added token's content (leftmost,
//      longest first); each occurrence becomes that token's id, never merged.
//   2. NFC (the normalizer of Qwen 2/3, the only one accepted): text that is not in NFC
//      is refused, since normalising it would lose the original bytes.
//   3. each remaining segment is cut into maximal runs of well-formed UTF-8 and maximal
//      runs of bytes that are not (a lone 0xFF, a truncated character). A bad run is one
//      pre-token; a good run goes through the pre-tokenizer as if it were a whole text.
//   4. pre-tokenizer: Split with a regex (PCRE2, UTF + UCP) whose matches are Isolated
//      (matches and the text between them are pieces) or Removed (the text between them
//      is), and/or ByteLevel with use_regex (GPT-2's pattern, Isolated).
//   5. BPE on each piece's bytes: start from one symbol per byte (ByteLevel's
//      bytes_to_unicode table names byte b's symbol), then repeatedly merge the adjacent
//      pair of lowest merge rank until no pair has a rank. With ignore_merges (LLaMA 3) a
//      piece that is itself in the vocabulary is one token.
// Decoding concatenates each id's bytes (an added token's content for added tokens), so
// decode(encode(x)) == x for every byte string x when the pre-tokenizer removes nothing,
// and any cut of an id sequence decodes to the matching cut of the bytes.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace seqpar {

class BpeTokenizer {
 public:
  // Parses the tokenizer.json text `json`; `path` names it in errors. Throws InputError
  // naming the field for a file that is not valid JSON, a model other than byte-level BPE,
  // a normalizer, pre-tokenizer or decoder not implemented here, a merge whose parts are
  // not in the vocabulary, a duplicate id, or a regex PCRE2 does not compile.
  BpeTokenizer(std::string_view json, const std::string& path);
  ~BpeTokenizer();
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  int32_t vocab_size() const { return vocab_; }  // 1 + the largest id
  int32_t eos_id() const { return eos_; }        // -1 if none (rule in docs/data.md)
  int32_t bos_id() const { return bos_; }
  // One line naming what was loaded, e.g. "BPE, 50000 merges, ByteLevel(GPT-2 regex)".
  const std::string& describe() const { return describe_; }

  void encode(std::string_view text, std::vector<int32_t>* out) const;
  // Throws on an id outside [0, V) or one that names no token.
  std::string decode(const int32_t* ids, size_t n) const;

  struct Splitter;  // one compiled pre-tokenizer step (bpe_tokenizer.cpp)

 private:
  void encode_segment(std::string_view seg, std::vector<int32_t>* out) const;
  void encode_piece(std::string_view piece, std::vector<int32_t>* out) const;
  void bpe(std::string_view piece, std::vector<int32_t>* out) const;

  std::string path_;
  int32_t vocab_ = 0, eos_ = -1, bos_ = -1;
  bool ignore_merges_ = false, nfc_ = false;
  std::string describe_;
  std::vector<std::string> bytes_of_;               // id -> its bytes ("" for a gap)
  std::vector<bool> has_id_;                        // id names a token
  std::unordered_map<std::string, int32_t> token_;  // bytes -> id (model vocabulary)
  int32_t byte_id_[256];                            // id of each single byte
  std::unordered_map<uint64_t, uint64_t> merge_;    // (a << 32 | b) -> rank << 32 | merged id
  std::vector<std::pair<std::string, int32_t>> added_[256];  // by first byte, longest first
  std::vector<std::unique_ptr<Splitter>> split_;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;  // piece -> ids
};

}  // namespace seqpar
