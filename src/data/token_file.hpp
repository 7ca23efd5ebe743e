// Token files: pre-tokenized training data, written once by `seqpar tokenize encode` and
// read through a memory map, so nothing is tokenized in the training loop and every rank
// on a node shares one copy of the data in the page cache (the idea of Megatron's
// .bin/.idx pair and of llm.c's shards, in one self-describing file).
//
// Layout (little-endian; docs/data.md has the rationale):
//   [0, 64)          header
//       0  char[8]   magic "SEQPTOKS"
//       8  u32       format version (3)
//      12  u16       bytes per token: 2 (uint16) when V <= 65536, else 4 (uint32)
//      14  u16       tokenizer kind: 0 none (no tokenizer hash) or not recorded (a hash),
//                    1 SentencePiece, 2 byte-level BPE (tokenizer.json)
//      16  u32       vocabulary size V: every token is < V
//      20  i32       EOS id that ends every document, -1 if none
//      24  u64       number of tokens n
//      32  u64       number of documents D
//      40  u64       tokenizer hash (FNV-1a 64 of the .model or tokenizer.json file; 0 = none)
//      48  u64       body checksum: XXH64 (core/xxh64.hpp) of bytes [64, end of file)
//      56  u64       FNV-1a 64 of bytes [0, 56): a corrupt header is refused, not trusted
//   [64, 64 + n·w)   the tokens
//   zero padding to a multiple of 8 bytes
//   (D + 1) × u64    document offsets: doc i is tokens [off[i], off[i+1]); off[0] = 0,
//                    off[D] = n, strictly increasing (no empty document)
//   end of file: nothing may follow.
// The offsets come after the tokens so a writer streams tokens without knowing D.
// Version 2 (a u32 at 12, the kind not recorded) is read as kind 0. Version 1 (reserved 0 at
// byte 48, no body checksum) is refused: a flipped token below V would pass every other
// check (docs/data.md says why it is not read with a warning).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/file.hpp"
#include "core/xxh64.hpp"

namespace seqpar {

constexpr uint32_t kTokenFileVersion = 3;

// The tokenizer kind a token file records (header bytes 14-15).
enum class TokenizerRecord : uint16_t { none = 0, sentencepiece = 1, bpe = 2 };
// "none", "sentencepiece" or "bpe"; "not recorded" for a version-2 file's 0 with a hash.
const char* tokenizer_record_name(TokenizerRecord k, uint64_t tokenizer_hash);
constexpr uint64_t kTokenFileHeaderBytes = 64;

// Bytes per stored token for a vocabulary of V ids: 2 (uint16) when V <= 65536, else 4.
constexpr uint32_t token_bytes_for_vocab(uint64_t V) { return V <= 65536 ? 2 : 4; }

// True if `path` is, or claims to be, a token file: its name ends in ".tok" (whether or
// not it exists), or it is a regular file whose first 8 bytes differ from the magic
// "SEQPTOKS" in at most 2 (each byte missing from a shorter file counts as one). How
// `--data` tells a token file from a text file: a path that claims to be one is opened
// as a token file, so a damaged one (say, magic "SEQPTOKX") is refused with TokenFile's
// error, never trained on as text. False for anything else, including a missing path.
bool claims_token_file(const std::string& path);

// Streams a token file: append() tokens, end_document() after each document, finish().
// The file appears under `path` only when finish() succeeds (temp file + rename);
// destroying the writer before that leaves `path` as it was.
class TokenFileWriter {
 public:
  // vocab: V (every token must be < V); tokenizer_hash: Tokenizer::hash() of the model
  // that produced the tokens (0 if none); eos: id end_document() appends (-1: none); kind:
  // what that tokenizer is (none with hash 0).
  TokenFileWriter(const std::string& path, uint32_t vocab, uint64_t tokenizer_hash, int32_t eos,
                  TokenizerRecord kind = TokenizerRecord::none);
  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;

  // Appends n tokens to the current document; each must be in [0, V).
  void append(const int32_t* tokens, size_t n);
  // Ends the current document, appending EOS first if the file has one. An empty
  // document (no tokens and no EOS) is refused.
  void end_document();
  void add_document(const int32_t* tokens, size_t n) {
    append(tokens, n);
    end_document();
  }
  uint64_t num_tokens() const { return n_; }
  int64_t num_docs() const { return int64_t(offsets_.size()) - 1; }
  // Writes the document table and the header, fsyncs and renames into place. Refused if
  // tokens were appended after the last end_document().
  void finish();

 private:
  void write_body(const void* data, size_t n);  // out_ and body_sum_
  void flush();
  AtomicFileWriter out_;
  Xxh64 body_sum_;  // of everything after the header, as it is written
  uint32_t vocab_, width_;
  uint64_t hash_;
  int32_t eos_;
  TokenizerRecord kind_;
  uint64_t n_ = 0;
  std::vector<uint64_t> offsets_{0};  // D + 1 entries once D documents have ended
  std::vector<unsigned char> buf_;    // tokens not yet written
};

// Read-only view of a token file. The constructor validates everything and throws
// seqpar::InputError naming the file, the value found and what was expected: wrong magic,
// unknown version (1 included), corrupt header, a dtype that does not fit V, a size that
// disagrees with the header (truncated or trailing bytes), a bad document table, a
// document not ending with EOS, and (with scan_body) a body whose checksum is not the
// header's, or any token >= V. read() checks its tokens too, so data is never trusted
// even when the scan is skipped.
class TokenFile {
 public:
  struct Options {
    // Read the whole body on open: verify its checksum and check every token < V, in one
    // pass at memory bandwidth from the page cache (docs/data.md has the figures), disk
    // speed when cold. Off (the header and document table only): only read() checks the
    // tokens it copies, and a flipped token below V goes unseen.
    bool scan_body = true;
  };
  explicit TokenFile(const std::string& path) : TokenFile(path, Options{}) {}
  TokenFile(const std::string& path, Options opt);

  const std::string& path() const { return map_.path(); }
  uint32_t version() const { return version_; }             // 2 or 3
  TokenizerRecord tokenizer_kind() const { return kind_; }  // none in version 2
  uint32_t vocab() const { return vocab_; }
  uint32_t token_bytes() const { return width_; }  // 2 (uint16) or 4 (uint32)
  int32_t eos() const { return eos_; }             // -1 if documents carry no EOS
  uint64_t tokenizer_hash() const { return hash_; }
  // XXH64 of the bytes after the header, as the header records it (verified on open with
  // scan_body): with the header's own hash, it identifies the file's contents.
  uint64_t body_checksum() const { return body_checksum_; }
  uint64_t file_bytes() const { return map_.size(); }

  size_t num_tokens() const { return n_; }
  int64_t num_docs() const { return D_; }
  // Document i is tokens [doc_begin(i), doc_end(i)), EOS included; 0 <= i < num_docs().
  uint64_t doc_begin(int64_t i) const;
  uint64_t doc_end(int64_t i) const;
  // The document holding token `offset` (< num_tokens()): binary search, O(log D).
  int64_t doc_of(uint64_t offset) const;
  // Document id of each of the tokens [offset, offset + n): what document masks need.
  void doc_ids(uint64_t offset, size_t n, int64_t* out) const;

  // Copies tokens [offset, offset + n) to out, widened to int32. The range must lie
  // within the file; a token >= V is an error naming its index.
  void read(uint64_t offset, size_t n, int32_t* out) const;

  // Throws unless the file was written with the tokenizer whose hash is `hash`;
  // `tokenizer` names it in the message (e.g. "tokenizer 'data/kjv-bpe8k.model'").
  void check_tokenizer(uint64_t hash, const std::string& tokenizer) const;
  // Throws unless a model with `model_vocab` embedding rows can take every id (a model
  // may pad its vocabulary, e.g. to a multiple of 64, so >= V is accepted).
  void check_vocab(int64_t model_vocab) const;

 private:
  const uint64_t* offsets() const {
    return reinterpret_cast<const uint64_t*>(map_.data() + table_);
  }
  const unsigned char* body() const { return map_.data() + kTokenFileHeaderBytes; }
  uint32_t token_at(uint64_t i) const;
  // XXH64 of the bytes after the header; *bad: the first token >= V, or n_ if none.
  uint64_t checksum_and_scan(uint64_t* bad) const;
  // Index of the first token >= V in [begin, end), or end if none.
  uint64_t first_bad_token(uint64_t begin, uint64_t end) const;
  [[noreturn]] void fail_bad_token(uint64_t index) const;

  MappedFile map_;
  uint32_t version_ = 0, vocab_ = 0, width_ = 0;
  TokenizerRecord kind_ = TokenizerRecord::none;
  int32_t eos_ = -1;
  uint64_t hash_ = 0, body_checksum_ = 0, n_ = 0, table_ = 0;
  int64_t D_ = 0;
};

}  // namespace seqpar
