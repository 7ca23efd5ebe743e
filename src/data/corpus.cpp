#include "data/corpus.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "core/check.hpp"
#include "core/file.hpp"
#include "data/token_file.hpp"

namespace seqpar {
namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string_view line_at(std::string_view text, uint64_t pos) {
  const size_t end = text.find('\n', pos);
  return text.substr(pos, end == std::string_view::npos ? text.size() - pos : end + 1 - pos);
}

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\n") == std::string_view::npos;
}

bool is_alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "Ge1:1 In the beginning" → "Ge1" (book and chapter); empty if the line does not start
// with <optional digit><letters><digits>:<digits> followed by a space or the line end.
std::string_view verse_chapter(std::string_view line) {
  size_t i = 0;
  if (i < line.size() && is_digit(line[i])) ++i;
  const size_t letters = i;
  while (i < line.size() && is_alpha(line[i])) ++i;
  if (i == letters) return {};
  const size_t digits = i;
  while (i < line.size() && is_digit(line[i])) ++i;
  if (i == digits || i >= line.size() || line[i] != ':') return {};
  const size_t chapter_end = i++;
  const size_t verse = i;
  while (i < line.size() && is_digit(line[i])) ++i;
  if (i == verse) return {};
  if (i < line.size() && line[i] != ' ' && line[i] != '\n' && line[i] != '\r') return {};
  return line.substr(0, chapter_end);
}

}  // namespace

size_t first_invalid_utf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    // ASCII, 8 bytes at a time: most text is.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    // Lead byte → length and the range of the second byte (Unicode Table 3-7): E0 and F0
    // exclude overlong forms, ED the surrogates, F4 everything above U+10FFFF.
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;  // a continuation byte, C0, C1 or F5..FF where a character should start
    }
    if (i + len > n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return n;
}

std::vector<uint64_t> document_starts(std::string_view text, DocSplit split,
                                      const std::string& name, DocSplit* resolved) {
  std::vector<uint64_t> starts;
  const bool first_is_verse = !text.empty() && !verse_chapter(line_at(text, 0)).empty();
  if (split == DocSplit::automatic)
    split = first_is_verse ? DocSplit::kjv_chapter : DocSplit::blank_line;
  if (resolved) *resolved = split;
  if (text.empty()) return starts;
  SP_CHECK_INPUT(split != DocSplit::kjv_chapter || first_is_verse,
                 "--doc-split kjv-chapter: the first line of ", name,
                 " does not start with a verse reference like 'Ge1:1 ' (got '",
                 line_at(text, 0).substr(0, 40), "')");
  starts.push_back(0);
  if (split == DocSplit::none) return starts;
  std::string_view chapter = verse_chapter(line_at(text, 0));
  bool prev_blank = false, seen_text = false;
  for (uint64_t pos = 0; pos < text.size();) {
    const std::string_view line = line_at(text, pos);
    if (split == DocSplit::blank_line) {
      const bool blank = is_blank(line);
      if (!blank && prev_blank && seen_text) starts.push_back(pos);
      prev_blank = blank;
      seen_text = seen_text || !blank;
    } else {
      const std::string_view c = verse_chapter(line);
      if (!c.empty() && c != chapter) {
        if (pos > 0) starts.push_back(pos);
        chapter = c;
      }
    }
    pos += line.size();
  }
  return starts;
}

EncodeStats encode_text_file(const Tokenizer& tok, const std::string& input,
                             const std::string& output, DocSplit split,
                             const std::function<void(const EncodeStats&)>& progress) {
  const auto t0 = Clock::now();
  SP_CHECK_INPUT(tok.eos_id() >= 0, "tokenizer '", tok.path(),
                 "' has no EOS piece to end documents with");
  MappedFile f(input, "text file");
  SP_CHECK_INPUT(f.size() > 0, "text file '", input, "' is empty: nothing to encode");
  const std::string_view text(reinterpret_cast<const char*>(f.data()), f.size());
  // Refused, not encoded lossily: SentencePiece would read each bad byte as U+FFFD, and
  // decoding would give EF BF BD where the file had something else (docs/data.md).
  // Byte-level BPE encodes any bytes and gives them back, so it takes any file.
  if (const size_t bad = tok.any_bytes() ? text.size() : first_invalid_utf8(text);
      bad < text.size()) {
    const size_t line = size_t(std::count(text.begin(), text.begin() + ptrdiff_t(bad), '\n')) + 1;
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", unsigned(static_cast<unsigned char>(text[bad])));
    SP_FAIL_INPUT("text file '", input, "' is not UTF-8: byte ", bad, " (line ", line, ") is ",
                  byte,
                  ", which does not start or continue a well-formed character; SentencePiece "
                  "would encode it as U+FFFD, which does not decode back to it (convert the file "
                  "to UTF-8 first, e.g. iconv -f latin1 -t utf-8)");
  }
  EncodeStats st;
  st.bytes_total = f.size();
  const std::vector<uint64_t> starts = document_starts(text, split, "'" + input + "'", &st.split);
  TokenFileWriter w(
      output, uint32_t(tok.vocab_size()), tok.hash(), tok.eos_id(),
      tok.kind() == TokenizerKind::bpe ? TokenizerRecord::bpe : TokenizerRecord::sentencepiece);
  std::vector<int32_t> ids;
  uint64_t lines = 0, line_no = 0;
  for (size_t d = 0; d < starts.size(); ++d) {
    const uint64_t end = d + 1 < starts.size() ? starts[d + 1] : text.size();
    for (uint64_t pos = starts[d]; pos < end;) {
      const std::string_view line = line_at(text.substr(0, end), pos);
      ids.clear();
      ++line_no;
      try {
        tok.encode(line, &ids);
      } catch (const InputError& e) {  // text a tokenizer refuses (tokenizer.json with NFC)
        SP_FAIL_INPUT("text file '", input, "' line ", line_no, ": ", e.what());
      }
      w.append(ids.data(), ids.size());
      pos += line.size();
      if (progress && ++lines % 4096 == 0) {
        st.bytes = pos;
        st.tokens = w.num_tokens();
        st.docs = w.num_docs();
        st.seconds = since(t0);
        progress(st);
      }
    }
    w.end_document();
  }
  st.bytes = text.size();
  st.tokens = w.num_tokens();
  st.docs = w.num_docs();
  w.finish();
  st.seconds = since(t0);
  if (progress) progress(st);
  return st;
}

DecodeStats decode_token_file(const Tokenizer& tok, const std::string& input,
                              const std::string& output) {
  const auto t0 = Clock::now();
  TokenFile tf(input);
  tf.check_tokenizer(tok.hash(), "tokenizer '" + tok.path() + "'");
  AtomicFileWriter out(output);
  DecodeStats st;
  // Decoded in chunks of about kChunk tokens, cut only after a piece that is not a byte
  // piece: the bytes of one character (<0xE2><0x80><0x94>) must be decoded together.
  // (Byte-level BPE has no byte pieces: its decode is a concatenation, any cut works.)
  constexpr uint64_t kChunk = 1 << 16;
  std::vector<int32_t> ids;
  for (int64_t d = 0; d < tf.num_docs(); ++d) {
    uint64_t begin = tf.doc_begin(d), end = tf.doc_end(d);
    if (tf.eos() >= 0) --end;  // every document ends with EOS (checked on open)
    while (begin < end) {
      uint64_t cut = std::min(end, begin + kChunk);
      int32_t last;
      tf.read(cut - 1, 1, &last);
      while (cut < end && tok.is_byte(last)) tf.read(cut++, 1, &last);
      ids.resize(cut - begin);
      tf.read(begin, ids.size(), ids.data());
      const std::string text = tok.decode(ids.data(), ids.size());
      out.write(text.data(), text.size());
      st.bytes += text.size();
      begin = cut;
    }
  }
  out.commit();
  st.tokens = tf.num_tokens();
  st.docs = tf.num_docs();
  st.seconds = since(t0);
  return st;
}

}  // namespace seqpar
