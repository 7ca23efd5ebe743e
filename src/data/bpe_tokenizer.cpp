#include "data/bpe_tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <queue>

#include "core/check.hpp"

namespace seqpar {
namespace {

// GPT-2's pre-tokenizer pattern: what ByteLevel splits with when use_regex is true.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Length of the well-formed UTF-8 character at s[i] (Unicode 15, table 3-7: no overlong
// forms, no surrogates, nothing above U+10FFFF), or 0 if the byte there starts none.
size_t utf8_char_len(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const size_t left = s.size() - i;
  const unsigned c = b(0);
  if (c < 0x80) return 1;
  const auto cont = [&](size_t k) { return k < left && (b(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 2) return 0;
    const unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    return b(1) >= lo && b(1) <= hi && cont(2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 2) return 0;
    const unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    return b(1) >= lo && b(1) <= hi && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

// GPT-2's bytes_to_unicode: byte b is written as the code point byte_char[b] in the
// vocabulary and merges. The printable bytes ! .. ~, ¡ .. ¬, ® .. ÿ are themselves; the
// other 68 take U+0100, U+0101, ... in byte order, so no vocabulary entry holds a space,
// a control character or an invalid code point.
std::vector<uint32_t> byte_chars() {
  std::vector<uint32_t> ch(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool self = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    ch[b] = self ? b : next++;
  }
  return ch;
}

// The bytes a vocabulary entry stands for: each code point of `s` through the inverse of
// bytes_to_unicode. False if a code point is not in the table (not a byte-level entry).
bool unmap_bytes(const std::string& s, const std::vector<int>& byte_of_char, std::string* out) {
  out->clear();
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_char_len(s, i);
    if (n == 0) return false;
    const auto u = [&](size_t k) { return uint32_t(static_cast<unsigned char>(s[i + k])); };
    uint32_t cp = n == 1 ? u(0) : n == 2 ? (u(0) & 0x1F) << 6 | (u(1) & 0x3F) : 0x110000;
    if (cp >= byte_of_char.size() || byte_of_char[cp] < 0) return false;
    out->push_back(char(byte_of_char[cp]));
    i += n;
  }
  return true;
}

// True if s (well-formed UTF-8) is in Unicode Normalization Form C. Text whose characters
// are all below U+0300 (lead bytes below 0xCC) is: no combining mark or decomposable
// character outside precomposed Latin-1/Latin Extended lies there. Otherwise by utf8proc
// (Debian's libutf8proc-dev, the Unicode tables of its version).
bool is_nfc(std::string_view s) {
  if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0xCC; }))
    return true;
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()),
                   &out, utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  const bool same = n >= 0 && std::string_view(reinterpret_cast<const char*>(out), size_t(n)) == s;
  std::free(out);
  SP_CHECK(n >= 0, "utf8proc could not normalise a piece of text: ", utf8proc_errmsg(n));
  return same;
}

}  // namespace

// One pre-tokenizer step: cut a piece at the matches of a regex; Isolated keeps matches
// and gaps as pieces, Removed keeps only the gaps.
struct BpeTokenizer::Splitter {
  pcre2_code* re = nullptr;
  bool removed = false;
  ~Splitter() { pcre2_code_free(re); }

  Splitter(std::string_view pattern, bool literal, bool remove, const std::string& where) {
    removed = remove;
    int err = 0;
    PCRE2_SIZE off = 0;
    re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                       PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u), &err, &off, nullptr);
    if (!re) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      SP_FAIL_INPUT(where, ": PCRE2 does not compile the pattern '", pattern, "' (at offset ", off,
                    "): ", reinterpret_cast<const char*>(msg));
    }
    uint32_t jit = 0;
    pcre2_config(PCRE2_CONFIG_JIT, &jit);
    if (jit) (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // interpreted if it fails
  }

  // Calls f(piece) for each piece of s, in order. s is well-formed UTF-8.
  template <class F>
  void split(std::string_view s, F&& f) const {
    std::unique_ptr<pcre2_match_data, void (*)(pcre2_match_data*)> md(
        pcre2_match_data_create_from_pattern(re, nullptr), pcre2_match_data_free);
    SP_CHECK(md, "out of memory for PCRE2 match data");
    size_t start = 0, gap = 0;
    while (start < s.size()) {
      const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start,
                                 PCRE2_NO_UTF_CHECK, md.get(), nullptr);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      SP_CHECK(rc >= 0, "PCRE2 match failed with error ", rc);
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      const size_t b = ov[0], e = ov[1];
      if (e == b) {  // an empty match cuts nothing: step over one character
        start = b + std::max<size_t>(1, utf8_char_len(s, b));
        continue;
      }
      if (b > gap) f(s.substr(gap, b - gap));
      if (!removed) f(s.substr(b, e - b));
      gap = start = e;
    }
    if (gap < s.size()) f(s.substr(gap));
  }
};

BpeTokenizer::~BpeTokenizer() = default;

BpeTokenizer::BpeTokenizer(std::string_view text, const std::string& path) : path_(path) {
  using nlohmann::json;
  const std::string file = "tokenizer.json '" + path + "'";
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    SP_FAIL_INPUT(file, " is not valid JSON: ", e.what());
  }
  SP_CHECK_INPUT(j.is_object() && j.contains("model") && j["model"].is_object(), file,
                 " has no \"model\" object: not a Hugging Face tokenizer.json");
  const auto type_of = [](const json& o) {
    return o.is_object() && o.contains("type") && o["type"].is_string()
               ? o["type"].get<std::string>()
               : std::string(o.is_null() ? "null" : "(no type)");
  };
  try {
    const json& m = j["model"];
    const std::string mtype = m.value("type", std::string("BPE"));
    SP_CHECK_INPUT(mtype == "BPE", file, ": model type '", mtype,
                   "' is not supported (only byte-level BPE)");
    SP_CHECK_INPUT(!m.contains("dropout") || m["dropout"].is_null(), file,
                   ": model.dropout is set; BPE dropout is not supported");
    SP_CHECK_INPUT(!m.value("byte_fallback", false), file,
                   ": model.byte_fallback is true; that is SentencePiece-style BPE, not "
                   "byte-level BPE");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      SP_CHECK_INPUT(!m.contains(k) || m[k].is_null() || m[k] == "", file, ": model.", k, " '",
                     m[k].dump(), "' is not supported");
    ignore_merges_ = m.value("ignore_merges", false);

    // Normalizer: none, or NFC (Qwen 2/3), which leaves text already in NFC as it is;
    // encode refuses text that NFC would change, so decode still gives the input back.
    // The others change text that is in any form (lowercasing, NFKC, stripping).
    const json norm = j.value("normalizer", json());
    nfc_ = type_of(norm) == "NFC";
    SP_CHECK_INPUT(norm.is_null() || nfc_, file, ": normalizer '", type_of(norm),
                   "' is not supported (only none or NFC: byte-level BPE here is lossless)");
    const json dec = j.value("decoder", json());
    SP_CHECK_INPUT(type_of(dec) == "ByteLevel", file, ": decoder '", type_of(dec),
                   "' is not supported (only ByteLevel)");

    // Pre-tokenizer: ByteLevel, Split, or a Sequence of them, ending in a ByteLevel
    // (without it the vocabulary would not be byte-level).
    const json pre = j.value("pre_tokenizer", json());
    std::vector<json> steps;
    if (type_of(pre) == "Sequence")
      for (const json& s : pre.at("pretokenizers")) steps.push_back(s);
    else
      steps.push_back(pre);
    bool byte_level = false;
    std::vector<std::string> names;
    for (const json& s : steps) {
      const std::string t = type_of(s);
      if (t == "ByteLevel") {
        SP_CHECK_INPUT(!s.value("add_prefix_space", false), file,
                       ": pre_tokenizer ByteLevel has add_prefix_space true, which adds a space "
                       "that decoding does not remove; not supported");
        if (s.value("use_regex", true)) {
          split_.push_back(std::make_unique<Splitter>(kGpt2Pattern, false, false, file));
          names.push_back("ByteLevel(GPT-2 regex)");
        } else {
          names.push_back("ByteLevel");
        }
        byte_level = true;
      } else if (t == "Split") {
        SP_CHECK_INPUT(!s.value("invert", false), file, ": pre_tokenizer Split with invert true",
                       " is not supported");
        const std::string behavior = s.value("behavior", std::string());
        SP_CHECK_INPUT(behavior == "Isolated" || behavior == "Removed", file,
                       ": pre_tokenizer Split behavior '", behavior,
                       "' is not supported (Isolated or Removed)");
        const json& p = s.at("pattern");
        const bool literal = p.contains("String");
        SP_CHECK_INPUT(literal || p.contains("Regex"), file,
                       ": pre_tokenizer Split pattern is neither {\"Regex\": ...} nor "
                       "{\"String\": ...}");
        const std::string pat = p.at(literal ? "String" : "Regex").get<std::string>();
        split_.push_back(std::make_unique<Splitter>(pat, literal, behavior == "Removed", file));
        names.push_back("Split(" + behavior + ")");
      } else {
        SP_FAIL_INPUT(file, ": pre_tokenizer '", t, "' is not supported (ByteLevel, Split or a ",
                      "Sequence of them)");
      }
    }
    SP_CHECK_INPUT(byte_level, file, ": pre_tokenizer has no ByteLevel step: not byte-level BPE");

    // Vocabulary: bytes of each entry (through the inverse of bytes_to_unicode).
    const std::vector<uint32_t> ch = byte_chars();
    std::vector<int> byte_of_char(324, -1);
    for (int b = 0; b < 256; ++b) byte_of_char[ch[size_t(b)]] = b;
    const json& added = j.value("added_tokens", json::array());
    std::unordered_map<std::string, int32_t> added_ids;
    int64_t max_id = -1;
    for (const json& a : added) {
      const int64_t id = a.at("id").get<int64_t>();
      const std::string content = a.at("content").get<std::string>();
      SP_CHECK_INPUT(id >= 0 && id < (int64_t(1) << 31) - 1 && !content.empty(), file,
                     ": added token '", content, "' has id ", id);
      for (const char* k : {"single_word", "lstrip", "rstrip"})
        SP_CHECK_INPUT(!a.value(k, false), file, ": added token '", content, "' has ", k,
                       " true, which is not supported");
      added_ids[content] = int32_t(id);
      max_id = std::max(max_id, id);
    }
    const json& vocab = m.at("vocab");
    SP_CHECK_INPUT(vocab.is_object() && !vocab.empty(), file,
                   ": model.vocab is not a non-empty object");
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int64_t id = it.value().get<int64_t>();
      SP_CHECK_INPUT(id >= 0 && id < (int64_t(1) << 31) - 1, file, ": vocabulary entry '", it.key(),
                     "' has id ", id);
      max_id = std::max(max_id, id);
    }
    vocab_ = int32_t(max_id + 1);
    bytes_of_.assign(size_t(vocab_), std::string());
    has_id_.assign(size_t(vocab_), false);
    std::string bytes;
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const int32_t id = it.value().get<int32_t>();
      SP_CHECK_INPUT(!has_id_[size_t(id)], file, ": id ", id, " is given to both '",
                     bytes_of_[size_t(id)], "' and '", it.key(), "' in model.vocab");
      if (!unmap_bytes(it.key(), byte_of_char, &bytes)) {
        // An added token's content may sit in the vocabulary as it is (GPT-2's
        // <|endoftext|> maps to itself anyway); anything else is not byte-level.
        SP_CHECK_INPUT(added_ids.count(it.key()), file, ": vocabulary entry '", it.key(), "' (id ",
                       id, ") has a character outside the ByteLevel alphabet");
        bytes = it.key();
      }
      has_id_[size_t(id)] = true;
      bytes_of_[size_t(id)] = bytes;
      token_.emplace(bytes, id);
    }
    for (const auto& [content, id] : added_ids) {
      has_id_[size_t(id)] = true;
      bytes_of_[size_t(id)] = content;  // decodes to its text
      added_[static_cast<unsigned char>(content[0])].emplace_back(content, id);
    }
    for (auto& v : added_)
      std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
        return a.first.size() != b.first.size() ? a.first.size() > b.first.size()
                                                : a.first < b.first;
      });
    for (int b = 0; b < 256; ++b) {
      const auto it = token_.find(std::string(1, char(b)));
      SP_CHECK_INPUT(it != token_.end(), file, ": byte 0x", "0123456789abcdef"[b >> 4],
                     "0123456789abcdef"[b & 15], " has no vocabulary entry: not byte-level BPE");
      byte_id_[b] = it->second;
    }

    // Merges: "a b" strings or [a, b] pairs; rank = position in the list.
    const json& merges = m.at("merges");
    SP_CHECK_INPUT(merges.is_array(), file, ": model.merges is not an array");
    std::string left, right;
    for (size_t r = 0; r < merges.size(); ++r) {
      const json& e = merges[r];
      std::string a, b;
      if (e.is_string()) {
        const std::string s = e.get<std::string>();
        const size_t sp = s.find(' ');
        SP_CHECK_INPUT(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos, file,
                       ": merge ", r, " '", s, "' is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else {
        SP_CHECK_INPUT(e.is_array() && e.size() == 2, file, ": merge ", r, " ", e.dump(),
                       " is not a pair");
        a = e[0].get<std::string>();
        b = e[1].get<std::string>();
      }
      const auto id_of = [&](const std::string& s, std::string* raw) {
        SP_CHECK_INPUT(unmap_bytes(s, byte_of_char, raw), file, ": merge ", r, " has '", s,
                       "', which is not a byte-level token");
        const auto it = token_.find(*raw);
        SP_CHECK_INPUT(it != token_.end(), file, ": merge ", r, " '", a, " ", b, "': '", s,
                       "' is not in the vocabulary");
        return it->second;
      };
      const int32_t ia = id_of(a, &left), ib = id_of(b, &right);
      const auto it = token_.find(left + right);
      SP_CHECK_INPUT(it != token_.end(), file, ": merge ", r, " '", a, " ", b, "': '", a, b,
                     "' is not in the vocabulary");
      // The first rank of a pair counts (a later duplicate never applies).
      merge_.emplace(uint64_t(uint32_t(ia)) << 32 | uint32_t(ib),
                     uint64_t(r) << 32 | uint32_t(it->second));
    }

    // EOS and BOS: the first of these names that is an added token (docs/data.md).
    for (const char* name : {"<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "</s>"})
      if (eos_ < 0 && added_ids.count(name)) eos_ = added_ids[name];
    for (const char* name : {"<|begin_of_text|>", "<s>"})
      if (bos_ < 0 && added_ids.count(name)) bos_ = added_ids[name];

    describe_ = "byte-level BPE, " + std::to_string(merges.size()) + " merges, " +
                std::to_string(added_ids.size()) + " added tokens, pre-tokenizer ";
    for (size_t i = 0; i < names.size(); ++i) describe_ += (i ? " + " : "") + names[i];
    if (ignore_merges_) describe_ += ", ignore_merges";
    if (nfc_) describe_ = "NFC, " + describe_;
  } catch (const json::exception& e) {
    SP_FAIL_INPUT(file, " is malformed: ", e.what());
  }
}

void BpeTokenizer::encode(std::string_view text, std::vector<int32_t>* out) const {
  size_t seg = 0;
  for (size_t i = 0; i < text.size();) {
    bool hit = false;
    for (const auto& [content, id] : added_[static_cast<unsigned char>(text[i])]) {
      if (text.compare(i, content.size(), content) != 0) continue;
      encode_segment(text.substr(seg, i - seg), out);
      out->push_back(id);
      i = seg = i + content.size();
      hit = true;
      break;
    }
    if (!hit) ++i;
  }
  encode_segment(text.substr(seg), out);
}

// Maximal runs of well-formed UTF-8 go through the pre-tokenizer; a maximal run of bytes
// that start no character is one piece.
void BpeTokenizer::encode_segment(std::string_view seg, std::vector<int32_t>* out) const {
  size_t i = 0;
  while (i < seg.size()) {
    const size_t begin = i;
    const bool good = utf8_char_len(seg, i) > 0;
    for (size_t n; i < seg.size() && ((n = utf8_char_len(seg, i)) > 0) == good;) i += good ? n : 1;
    const std::string_view run = seg.substr(begin, i - begin);
    if (good) {
      if (nfc_ && !is_nfc(run))
        SP_FAIL_INPUT("the text is not in Unicode NFC (near \"", run.substr(0, 40),
                      "\"): tokenizer '", path_,
                      "' normalises to NFC, which would change it, and decoding would not give "
                      "it back; convert the text to NFC first (e.g. uconv -x any-nfc)");
      encode_piece(run, out);
    } else
      bpe(run, out);
  }
}

void BpeTokenizer::encode_piece(std::string_view piece, std::vector<int32_t>* out) const {
  // Each split step in turn, depth first: the pieces of step k are cut by step k + 1.
  const auto step = [&](auto&& self, std::string_view p, size_t k) -> void {
    if (k == split_.size())
      bpe(p, out);
    else
      split_[k]->split(p, [&](std::string_view q) { self(self, q, k + 1); });
  };
  step(step, piece, 0);
}

// Merges by rank, as the tokenizers library's Word::merge_all: a heap of candidate pairs
// ordered by (rank, position); a popped pair is applied if both symbols are still there
// and unchanged. O(n log n) for a piece of n bytes.
void BpeTokenizer::bpe(std::string_view piece, std::vector<int32_t>* out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {
    if (const auto it = token_.find(std::string(piece)); it != token_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= 256;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (const auto it = cache_.find(std::string(piece)); it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t n = piece.size();
  std::vector<int32_t> id(n);
  std::vector<int64_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    id[i] = byte_id_[static_cast<unsigned char>(piece[i])];
    prev[i] = int64_t(i) - 1;
    next[i] = i + 1 < n ? int64_t(i + 1) : -1;
  }
  struct Cand {
    uint32_t rank;
    int64_t pos;
    int32_t left, right, merged;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  const auto push = [&](int64_t p) {
    if (p < 0 || next[size_t(p)] < 0) return;
    const int32_t a = id[size_t(p)], b = id[size_t(next[size_t(p)])];
    const auto it = merge_.find(uint64_t(uint32_t(a)) << 32 | uint32_t(b));
    if (it != merge_.end())
      heap.push({uint32_t(it->second >> 32), p, a, b, int32_t(uint32_t(it->second))});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int64_t(i));
  while (!heap.empty()) {
    const Cand c = heap.top();
    heap.pop();
    const size_t p = size_t(c.pos);
    if (!alive[p] || next[p] < 0) continue;
    const size_t q = size_t(next[p]);
    if (id[p] != c.left || id[q] != c.right) continue;  // stale: a symbol was merged since
    id[p] = c.merged;
    alive[q] = false;
    next[p] = next[q];
    if (next[q] >= 0) prev[size_t(next[q])] = int64_t(p);
    push(prev[p]);
    push(int64_t(p));
  }
  std::vector<int32_t> ids;
  for (int64_t i = 0; i >= 0; i = next[size_t(i)]) ids.push_back(id[size_t(i)]);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() >= (size_t(1) << 20)) cache_.clear();  // bounded memory
    cache_.emplace(std::string(piece), std::move(ids));
  }
}

std::string BpeTokenizer::decode(const int32_t* ids, size_t n) const {
  std::string text;
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    SP_CHECK(id >= 0 && id < vocab_ && has_id_[size_t(id)], "token ", i, " is ", id,
             id >= 0 && id < vocab_ ? ", which names no token" : ", outside the vocabulary",
             " of tokenizer '", path_, "' (V = ", vocab_, ")");
    text += bytes_of_[size_t(id)];
  }
  return text;
}

}  // namespace seqpar
