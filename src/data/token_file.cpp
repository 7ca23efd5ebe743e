#include "data/token_file.hpp"

#include <fcntl.h>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/check.hpp"
#include "core/hash.hpp"

namespace seqpar {

// Header fields and the token body are copied straight between memory and the file.
static_assert(std::endian::native == std::endian::little,
              "token files are little-endian; this reader/writer assumes a little-endian host");

namespace {

constexpr char kMagic[8] = {'S', 'E', 'Q', 'P', 'T', 'O', 'K', 'S'};

// The 64-byte on-disk header (layout in token_file.hpp). Plain fields, no padding.
struct Header {
  char magic[8];
  uint32_t version;
  uint16_t token_bytes;  // version 2: a u32 (little-endian: the same bytes, kind 0)
  uint16_t tokenizer_kind;
  uint32_t vocab;
  int32_t eos;
  uint64_t num_tokens;
  uint64_t num_docs;
  uint64_t tokenizer_hash;
  uint64_t body_checksum;  // XXH64 of the bytes after the header (version 1: reserved, 0)
  uint64_t header_hash;    // FNV-1a 64 of the 56 bytes before it
};
static_assert(sizeof(Header) == kTokenFileHeaderBytes && offsetof(Header, header_hash) == 56);

}  // namespace

const char* tokenizer_record_name(TokenizerRecord k, uint64_t tokenizer_hash) {
  switch (k) {
    case TokenizerRecord::none:
      return tokenizer_hash == 0 ? "none" : "not recorded";
    case TokenizerRecord::sentencepiece:
      return "sentencepiece";
    case TokenizerRecord::bpe:
      return "bpe";
  }
  return "unknown";
}

namespace {

uint64_t header_hash(const Header& h) { return fnv1a64(&h, offsetof(Header, header_hash)); }

uint64_t align8(uint64_t x) { return (x + 7) & ~uint64_t(7); }

// The first bytes of a file, printable for an error message: "Ge1:1 In" or "\x00\x01...".
std::string shown_bytes(const unsigned char* p, size_t n) {
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"' && p[i] != '\\') {
      s += char(p[i]);
    } else {
      char b[5];
      std::snprintf(b, sizeof b, "\\x%02x", p[i]);
      s += b;
    }
  }
  return s;
}

// Bytes of the magic that p[0, n) gets wrong, each byte past n counting as wrong.
size_t magic_distance(const unsigned char* p, size_t n) {
  size_t d = sizeof kMagic - std::min(n, sizeof kMagic);
  for (size_t i = 0; i < std::min(n, sizeof kMagic); ++i) d += p[i] != (unsigned char)kMagic[i];
  return d;
}

// Up to this many bytes off the magic, a file is a damaged token file, not text. Random
// text starts within 2 bytes of "SEQPTOKS" with probability ~28·256^-6, and one flipped
// or cut byte of a real token file is 1 or 2 bytes off.
constexpr size_t kMagicNearMiss = 2;

bool has_tok_suffix(const std::string& path) {
  const std::string name = std::filesystem::path(path).filename().string();
  return name.size() > 4 && name.compare(name.size() - 4, 4, ".tok") == 0;
}

}  // namespace

bool claims_token_file(const std::string& path) {
  if (has_tok_suffix(path)) return true;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return false;
  unsigned char m[sizeof kMagic];
  size_t n = 0;
  try {
    const Fd fd = open_checked(path, O_RDONLY);
    n = size_t(std::min<uint64_t>(file_size(fd.get(), path), sizeof m));
    pread_all(fd.get(), m, n, 0, path);
  } catch (const InputError&) {  // unreadable: not ours to judge (the text reader reports it)
    return false;
  }
  return n > 0 && magic_distance(m, n) <= kMagicNearMiss;
}

// ---- writer -------------------------------------------------------------------------

TokenFileWriter::TokenFileWriter(const std::string& path, uint32_t vocab, uint64_t tokenizer_hash,
                                 int32_t eos, TokenizerRecord kind)
    : out_(path),
      vocab_(vocab),
      width_(token_bytes_for_vocab(vocab)),
      hash_(tokenizer_hash),
      eos_(eos),
      kind_(kind) {
  SP_CHECK(kind == TokenizerRecord::none || tokenizer_hash != 0, "token file '", path,
           "': a tokenizer kind goes with a tokenizer hash");
  SP_CHECK(vocab > 0, "token file '", path, "': vocabulary size must be > 0");
  SP_CHECK(eos >= -1 && eos < int64_t(vocab), "token file '", path, "': EOS id ", eos,
           " is outside the vocabulary [0, ", vocab, ") (-1 for none)");
  // Room for the header; it is written last, when n and D are known.
  const Header zero{};
  out_.write(&zero, sizeof zero);
  buf_.reserve(1 << 20);
}

void TokenFileWriter::append(const int32_t* tokens, size_t n) {
  if (n == 0) return;  // an empty document's tokens may be a null pointer (memcpy refuses)
  // Check all before storing any, so a refused call leaves the writer as it was.
  for (size_t i = 0; i < n; ++i)
    SP_CHECK(tokens[i] >= 0 && uint32_t(tokens[i]) < vocab_, "token file '", out_.path(),
             "': token ", n_ + i, " is ", tokens[i], ", outside the vocabulary [0, ", vocab_, ")");
  const size_t at = buf_.size();
  buf_.resize(at + n * width_);
  unsigned char* dst = buf_.data() + at;
  if (width_ == 2) {
    for (size_t i = 0; i < n; ++i) {
      const uint16_t v = uint16_t(tokens[i]);
      std::memcpy(dst + i * 2, &v, 2);
    }
  } else {
    std::memcpy(dst, tokens, n * 4);
  }
  n_ += n;
  if (buf_.size() >= (1 << 20)) flush();
}

void TokenFileWriter::end_document() {
  if (eos_ >= 0) append(&eos_, 1);
  SP_CHECK(n_ > offsets_.back(), "token file '", out_.path(), "': document ", num_docs(),
           " is empty (no tokens and no EOS)");
  offsets_.push_back(n_);
}

void TokenFileWriter::write_body(const void* data, size_t n) {
  body_sum_.update(data, n);
  out_.write(data, n);
}

void TokenFileWriter::flush() {
  write_body(buf_.data(), buf_.size());
  buf_.clear();
}

void TokenFileWriter::finish() {
  SP_CHECK(n_ == offsets_.back(), "token file '", out_.path(), "': ", n_ - offsets_.back(),
           " tokens after the end of the last document (call end_document() first)");
  flush();
  const uint64_t body_end = kTokenFileHeaderBytes + n_ * width_;
  const unsigned char pad[8] = {};
  write_body(pad, align8(body_end) - body_end);
  write_body(offsets_.data(), offsets_.size() * sizeof(uint64_t));
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kTokenFileVersion;
  h.token_bytes = uint16_t(width_);
  h.tokenizer_kind = uint16_t(kind_);
  h.vocab = vocab_;
  h.eos = eos_;
  h.num_tokens = n_;
  h.num_docs = uint64_t(num_docs());
  h.tokenizer_hash = hash_;
  h.body_checksum = body_sum_.value();
  h.header_hash = header_hash(h);
  out_.write_at(0, &h, sizeof h);
  out_.commit();
}

// ---- reader -------------------------------------------------------------------------

TokenFile::TokenFile(const std::string& path, Options opt) : map_(path, "token file") {
  const uint64_t size = map_.size();
  const unsigned char* p = map_.data();
  const size_t shown = size_t(std::min<uint64_t>(size, sizeof kMagic));
  // A short file that starts like a token file is a truncated one (refused below). One
  // whose magic is a near miss is a damaged token file; anything else is not a token file
  // at all (most likely a text file given where tokens were expected).
  if (shown == 0 || std::memcmp(p, kMagic, shown) != 0) {
    SP_CHECK_INPUT(magic_distance(p, shown) > kMagicNearMiss, "token file '", path,
                   "' has a damaged magic: it starts with \"", shown_bytes(p, shown),
                   "\", expected \"SEQPTOKS\" (a file that starts like a token file is refused, "
                   "never read as text)");
    SP_FAIL_INPUT("'", path, "' is not a seqpar token file: it starts with \"",
                  shown_bytes(p, shown),
                  "\", expected the magic \"SEQPTOKS\" (token files are written by seqpar "
                  "tokenize encode",
                  has_tok_suffix(path) ? "; a file named *.tok is never read as text" : "", ")");
  }
  SP_CHECK_INPUT(size >= kTokenFileHeaderBytes, "token file '", path, "' is truncated: ", size,
                 " bytes, shorter than its ", kTokenFileHeaderBytes, "-byte header");
  Header h;
  std::memcpy(&h, p, sizeof h);
  // Versions 1 and 2 have this header's layout (byte 48 was reserved, 0, in version 1;
  // bytes 14-15 were the high half of a u32 token width, 0, before version 3), so their
  // hash is checked too: a damaged header is reported as damaged, not as an old file.
  SP_CHECK_INPUT(h.version >= 1 && h.version <= kTokenFileVersion, "token file '", path,
                 "' has format version ", h.version, "; this build reads versions 2 and ",
                 kTokenFileVersion);
  SP_CHECK_INPUT(h.header_hash == header_hash(h), "token file '", path,
                 "' has a corrupt header: it records hash ", hash_hex(h.header_hash),
                 ", its bytes hash to ", hash_hex(header_hash(h)));
  // Refused rather than read with a warning (docs/data.md): without a body checksum a
  // flipped token below V would be trained on, and re-encoding is cheap and deterministic.
  static_assert(kTokenFileVersion == 3, "the messages below name the versions read");
  SP_CHECK_INPUT(h.version != 1, "token file '", path,
                 "' has format version 1, which records no body checksum; this build reads "
                 "versions 2 and 3: re-create it from its text with seqpar tokenize encode --model "
                 "MODEL --input TEXT --output '",
                 path, "' (for data/kjv-bpe8k.tok, bash scripts/setup.sh does it)");
  SP_CHECK_INPUT(h.tokenizer_kind <= uint16_t(TokenizerRecord::bpe), "token file '", path,
                 "' records tokenizer kind ", h.tokenizer_kind,
                 ", not one this build knows (0 none, 1 sentencepiece, 2 bpe)");
  SP_CHECK_INPUT(h.tokenizer_kind == 0 || h.tokenizer_hash != 0, "token file '", path,
                 "' records tokenizer kind ",
                 tokenizer_record_name(TokenizerRecord(h.tokenizer_kind), h.tokenizer_hash),
                 " but no tokenizer hash: a kind goes with a hash");
  version_ = h.version;
  kind_ = TokenizerRecord(h.tokenizer_kind);
  SP_CHECK_INPUT(h.vocab > 0, "token file '", path, "' has vocabulary size 0");
  SP_CHECK_INPUT(h.token_bytes == token_bytes_for_vocab(h.vocab), "token file '", path, "' stores ",
                 h.token_bytes, "-byte tokens for vocabulary size V=", h.vocab, ", expected ",
                 token_bytes_for_vocab(h.vocab), " (uint16 when V <= 65536, else uint32)");
  SP_CHECK_INPUT(h.eos >= -1 && int64_t(h.eos) < int64_t(h.vocab), "token file '", path,
                 "' has EOS id ", h.eos, ", outside the vocabulary [0, ", h.vocab,
                 ") (-1 for none)");
  // Expected size, with every product and sum checked for overflow (a corrupt count
  // must not wrap around to a plausible size).
  uint64_t body = 0, table_bytes = 0, expected = 0, docs1 = 0;
  const bool ok =
      !__builtin_mul_overflow(h.num_tokens, uint64_t(h.token_bytes), &body) &&
      body <= UINT64_MAX - kTokenFileHeaderBytes - 7 &&
      !__builtin_add_overflow(h.num_docs, uint64_t(1), &docs1) &&
      !__builtin_mul_overflow(docs1, uint64_t(8), &table_bytes) &&
      !__builtin_add_overflow(align8(kTokenFileHeaderBytes + body), table_bytes, &expected);
  SP_CHECK_INPUT(ok, "token file '", path, "' has impossible counts: ", h.num_tokens,
                 " tokens and ", h.num_docs, " documents");
  SP_CHECK_INPUT(size >= expected, "token file '", path, "' is truncated: ", size,
                 " bytes, but its header promises ", h.num_tokens, " tokens of ", h.token_bytes,
                 " bytes and ", h.num_docs, " documents, ", expected, " bytes in all");
  SP_CHECK_INPUT(size == expected, "token file '", path, "' has ", size - expected,
                 " bytes after its end (", expected, " bytes expected for ", h.num_tokens,
                 " tokens and ", h.num_docs, " documents)");
  vocab_ = h.vocab;
  width_ = h.token_bytes;
  eos_ = h.eos;
  hash_ = h.tokenizer_hash;
  body_checksum_ = h.body_checksum;
  n_ = h.num_tokens;
  D_ = int64_t(h.num_docs);
  table_ = align8(kTokenFileHeaderBytes + body);

  // The checksum first: damage anywhere in the body is reported as what it is, before the
  // checks below read a damaged table or token and describe the symptom.
  uint64_t bad = n_;  // the first token >= V, once scanned
  if (opt.scan_body) {
    const uint64_t sum = checksum_and_scan(&bad);
    SP_CHECK_INPUT(sum == body_checksum_, "token file '", path,
                   "' has a corrupt body: its header records body checksum ",
                   hash_hex(body_checksum_), ", its bytes [", kTokenFileHeaderBytes, ", ", size,
                   ") hash to ", hash_hex(sum),
                   " (XXH64; re-create it with seqpar tokenize encode)");
  }

  const uint64_t* off = offsets();
  SP_CHECK_INPUT(off[0] == 0, "token file '", path, "': document 0 starts at token ", off[0],
                 ", expected 0");
  SP_CHECK_INPUT(off[D_] == n_, "token file '", path, "': the last document ends at token ",
                 off[D_], ", expected the number of tokens ", n_);
  for (int64_t i = 0; i < D_; ++i)
    SP_CHECK_INPUT(off[i] < off[i + 1], "token file '", path, "': document ", i, " spans tokens [",
                   off[i], ", ", off[i + 1],
                   "), expected a non-empty range (corrupt document table)");
  if (eos_ >= 0) {
    for (int64_t i = 0; i < D_; ++i)
      SP_CHECK_INPUT(token_at(off[i + 1] - 1) == uint32_t(eos_), "token file '", path,
                     "': document ", i, " ends with token ", token_at(off[i + 1] - 1), " at index ",
                     off[i + 1] - 1, ", expected EOS=", eos_);
  }
  if (bad < n_) fail_bad_token(bad);
}

uint64_t TokenFile::checksum_and_scan(uint64_t* bad) const {
  // A chunk at a time, so the scan for tokens >= V reads what the hash has just brought
  // into cache: one trip through memory, not two.
  constexpr uint64_t kChunk = 1 << 16;  // tokens
  Xxh64 sum;
  *bad = n_;
  for (uint64_t c = 0; c < n_; c += kChunk) {
    const uint64_t e = std::min(n_, c + kChunk);
    sum.update(body() + c * width_, (e - c) * width_);
    if (*bad == n_) {
      const uint64_t b = first_bad_token(c, e);
      if (b < e) *bad = b;
    }
  }
  // The padding and the document table.
  sum.update(body() + n_ * width_, map_.size() - kTokenFileHeaderBytes - n_ * width_);
  return sum.value();
}

uint32_t TokenFile::token_at(uint64_t i) const {
  if (width_ == 2) {
    uint16_t v;
    std::memcpy(&v, body() + i * 2, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, body() + i * 4, 4);
  return v;
}

uint64_t TokenFile::first_bad_token(uint64_t begin, uint64_t end) const {
  if (width_ == 2 && vocab_ >= 65536) return end;  // every uint16 is a valid id
  // Max over fixed-size chunks (a branch-free loop the compiler vectorises); only a chunk
  // holding a bad token is searched element by element.
  constexpr uint64_t kChunk = 1 << 16;
  for (uint64_t c = begin; c < end; c += kChunk) {
    const uint64_t e = std::min(end, c + kChunk);
    uint32_t mx = 0;
    if (width_ == 2) {
      const uint16_t* t = reinterpret_cast<const uint16_t*>(body());
      for (uint64_t i = c; i < e; ++i) mx = std::max<uint32_t>(mx, t[i]);
    } else {
      const uint32_t* t = reinterpret_cast<const uint32_t*>(body());
      for (uint64_t i = c; i < e; ++i) mx = std::max(mx, t[i]);
    }
    if (mx >= vocab_) {
      for (uint64_t i = c; i < e; ++i)
        if (token_at(i) >= vocab_) return i;
    }
  }
  return end;
}

void TokenFile::fail_bad_token(uint64_t index) const {
  SP_FAIL_INPUT("token file '", path(), "': token ", index, " (document ", doc_of(index), ") is ",
                token_at(index), ", expected an id below the vocabulary size V=", vocab_);
}

uint64_t TokenFile::doc_begin(int64_t i) const {
  SP_CHECK(i >= 0 && i < D_, "document ", i, " of token file '", path(), "', which has ", D_,
           " documents");
  return offsets()[i];
}

uint64_t TokenFile::doc_end(int64_t i) const {
  SP_CHECK(i >= 0 && i < D_, "document ", i, " of token file '", path(), "', which has ", D_,
           " documents");
  return offsets()[i + 1];
}

int64_t TokenFile::doc_of(uint64_t offset) const {
  SP_CHECK(offset < n_, "token ", offset, " of token file '", path(), "', which has ", n_,
           " tokens");
  const uint64_t* off = offsets();
  // Last i with off[i] <= offset; off[0] = 0 <= offset, so it exists.
  return int64_t(std::upper_bound(off, off + D_ + 1, offset) - off) - 1;
}

void TokenFile::doc_ids(uint64_t offset, size_t n, int64_t* out) const {
  if (n == 0) return;
  SP_CHECK(offset < n_ && n <= n_ - offset, "document ids of tokens [", offset, ", ", offset + n,
           ") of token file '", path(), "', which has ", n_, " tokens");
  const uint64_t* off = offsets();
  int64_t d = doc_of(offset);
  for (size_t i = 0; i < n; ++i) {
    while (offset + i >= off[d + 1]) ++d;
    out[i] = d;
  }
}

void TokenFile::read(uint64_t offset, size_t n, int32_t* out) const {
  SP_CHECK(offset <= n_ && n <= n_ - offset, "reading tokens [", offset, ", ", offset + n,
           ") of token file '", path(), "', which has ", n_, " tokens");
  uint32_t mx = 0;
  if (width_ == 2) {
    const uint16_t* t = reinterpret_cast<const uint16_t*>(body()) + offset;
    for (size_t i = 0; i < n; ++i) {
      out[i] = t[i];
      mx = std::max<uint32_t>(mx, t[i]);
    }
  } else {
    const uint32_t* t = reinterpret_cast<const uint32_t*>(body()) + offset;
    for (size_t i = 0; i < n; ++i) {
      out[i] = int32_t(t[i]);
      mx = std::max(mx, t[i]);
    }
  }
  if (mx >= vocab_) fail_bad_token(first_bad_token(offset, offset + n));
}

void TokenFile::check_tokenizer(uint64_t hash, const std::string& tokenizer) const {
  SP_CHECK_INPUT(
      hash == hash_, "token file '", path(), "' was written with the tokenizer of hash ",
      hash_hex(hash_), " (", tokenizer_record_name(kind_, hash_), ")", ", but ", tokenizer,
      " has hash ", hash_hex(hash),
      ": its ids would mean other pieces (re-encode the text with this tokenizer: seqpar "
      "tokenize encode)");
}

void TokenFile::check_vocab(int64_t model_vocab) const {
  SP_CHECK_INPUT(model_vocab >= int64_t(vocab_), "token file '", path(),
                 "' has vocabulary size V=", vocab_, ", larger than the model's vocabulary of ",
                 model_vocab, ": ids from ", model_vocab, " up have no embedding row");
}

}  // namespace seqpar
