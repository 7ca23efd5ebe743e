// Text corpora to token files: how a text file is cut into documents, and the encoder and
// decoder behind `seqpar tokenize encode|decode`.
//
// Documents partition the text: each runs up to the next one's start, blank lines and
// newlines included, so decoding the documents one after another gives the file back byte
// for byte. In the token file every document is followed by the tokenizer's EOS id, which
// is what later masks attention across documents.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/names.hpp"
#include "data/tokenizer.hpp"

namespace seqpar {

enum class DocSplit {
  automatic,    // kjv_chapter if the first line starts with a verse reference, else blank_line
  none,         // the whole file is one document
  blank_line,   // a document starts at each non-blank line that follows a blank line
  kjv_chapter,  // a document starts where the verse reference changes book or chapter
};
template <>
struct EnumNames<DocSplit> {
  static constexpr const char* what = "document split";
  static constexpr std::pair<DocSplit, const char*> table[] = {
      {DocSplit::automatic, "auto"},
      {DocSplit::none, "none"},
      {DocSplit::blank_line, "blank-line"},
      {DocSplit::kjv_chapter, "kjv-chapter"}};
};
// UsageError naming the value and the choices.
inline DocSplit parse_doc_split(const std::string& name) { return parse_enum<DocSplit>(name); }
inline const char* doc_split_name(DocSplit split) { return enum_name(split); }

// Byte offset where each document of `text` starts (the first is 0; empty text has none).
//   blank_line: a line is blank when it holds only spaces, tabs or '\r'; blank lines end
//     the document before them (leading blank lines belong to the first document).
//   kjv_chapter: lines of data/kjv.txt start with a verse reference "<book><chapter>:
//     <verse> ", e.g. "Ge1:1 ", "1Sm3:2 ", "SSol8:14 "; a new document starts at each line
//     whose book+chapter differs from the previous reference's. One document per chapter
//     (1189 of them, ~1k tokens on average, from 2 verses to Psalm 119's 176) rather than
//     per book (66, ~17k tokens each): at the sequence lengths trained here most sequences
//     then hold a document boundary, which is what packing and document masks need to be
//     exercised. Lines without a reference continue the current document; explicit
//     kjv_chapter on a file whose first line has none is refused (`name` in the message).
//   automatic resolves as above; the split actually used is stored in *resolved.
std::vector<uint64_t> document_starts(std::string_view text, DocSplit split,
                                      const std::string& name = "text",
                                      DocSplit* resolved = nullptr);

// Offset of the first byte of `text` that is not part of well-formed UTF-8 (RFC 3629:
// no overlong forms, no surrogates, nothing above U+10FFFF), or text.size() if it is all
// well formed. SentencePiece reads Unicode: it turns each such byte into U+FFFD, which
// decodes to other bytes, so encode_text_file refuses a file where this is not its size.
size_t first_invalid_utf8(std::string_view text);

struct EncodeStats {
  uint64_t bytes = 0;                    // bytes of text encoded so far
  uint64_t bytes_total = 0;              // size of the input
  uint64_t tokens = 0;                   // tokens written so far, EOS included
  int64_t docs = 0;                      // documents ended so far
  DocSplit split = DocSplit::automatic;  // the rule used (never automatic once resolved)
  double seconds = 0;
};

// Encodes the text file `input` with `tok` into the token file `output` (which appears
// only when complete). Text that is not UTF-8 is refused (InputError naming the file, the
// byte offset, the line and the byte) before anything is written: it would not decode back. Each
// document's lines are encoded one at a time, each with its
// '\n' (memory stays bounded by the longest line; for tokenizers from train_tokenizer this
// equals encoding the whole document, as no piece contains '\n'), then EOS is appended.
// `progress`, if set, is called every few thousand lines and once at the end.
EncodeStats encode_text_file(const Tokenizer& tok, const std::string& input,
                             const std::string& output, DocSplit split,
                             const std::function<void(const EncodeStats&)>& progress = {});

struct DecodeStats {
  uint64_t tokens = 0, bytes = 0;
  int64_t docs = 0;
  double seconds = 0;
};

// Writes the text of each document of the token file `input` (its tokens without the
// final EOS) to `output`, one after another: the inverse of encode_text_file for a
// lossless tokenizer. Refused unless `tok` is the tokenizer that wrote the file (hash).
DecodeStats decode_token_file(const Tokenizer& tok, const std::string& input,
                              const std::string& output);

}  // namespace seqpar
