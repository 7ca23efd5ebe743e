#include "train/data.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "core/check.hpp"
#include "core/file.hpp"
#include "core/hash.hpp"
#include "core/rng.hpp"
#include "core/xxh64.hpp"

namespace seqpar {
namespace {

uint64_t draw(uint64_t seed, uint64_t s, uint32_t what) {
  u32x4 r = philox4x32({uint32_t(s), uint32_t(s >> 32), what, uint32_t(RngSite::data)}, seed);
  return (uint64_t(r[0]) << 32) | r[1];
}

std::string exe_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  buf[n] = 0;
  return std::filesystem::path(buf).parent_path().string();
}

// Where the bundled data files are looked for, in order: $SEQPAR_DATA_DIR, data/ (the
// repository root), <exe>/../data/ (a build directory beside data/).
std::vector<std::string> data_candidates(const std::string& name) {
  std::vector<std::string> c;
  if (const char* d = std::getenv("SEQPAR_DATA_DIR")) c.push_back(std::string(d) + "/" + name);
  c.push_back("data/" + name);
  c.push_back(exe_dir() + "/../data/" + name);
  return c;
}

std::string load_kjv(std::string* where) {
  for (const auto& c : data_candidates("kjv.txt")) {
    std::error_code ec;
    if (std::filesystem::is_regular_file(c, ec) && std::filesystem::file_size(c, ec) > 0) {
      *where = c;
      return read_regular_file(c, "data file");
    }
  }
  // Fall back to the bible-kjv package's reader.
  FILE* p = popen("bible -f Gen1:1-Rev22:21 2>/dev/null", "r");
  std::string text;
  if (p) {
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), p)) > 0) text.append(buf, n);
    pclose(p);
  }
  SP_CHECK_INPUT(!text.empty(), "the default corpus 'kjv' was not found: no data/kjv.txt and no ",
                 "working `bible` command (install Debian's bible-kjv: bash scripts/setup.sh), or ",
                 "pass --data PATH to a text file");
  *where = "`bible -f Gen1:1-Rev22:21`";
  return text;
}

class TextSource final : public DataSource {
 public:
  TextSource(std::string text, std::string origin, uint64_t seed, int64_t L, Split split)
      : text_(std::move(text)), origin_(std::move(origin)), split_(split) {
    SP_CHECK_INPUT(!text_.empty(), "data file ", origin_, " is empty");
    SP_CHECK_INPUT(int64_t(text_.size()) >= L + 1, "data file ", origin_, " has ", text_.size(),
                   " bytes, fewer than seq_len + 1 = ", L + 1);
    const uint64_t cut =
        validation_begin(text_.size(), L, nullptr, "data file " + origin_, "bytes");
    begin_ = split == Split::train ? 0 : cut;
    end_ = split == Split::train ? cut : text_.size();
    seed_ = split == Split::train ? seed : kValidationSeed;
  }
  void sample(uint64_t s, int64_t L, int32_t* out) const override {
    SP_CHECK(end_ - begin_ >= uint64_t(L) + 1, "the ", split_name(split_), " part of ", origin_,
             " has ", end_ - begin_, " bytes, fewer than a sample of L + 1 = ", L + 1);
    const uint64_t n_start = end_ - begin_ - uint64_t(L);  // starts: begin + [0, n_start)
    const uint64_t start = begin_ + draw(seed_, s, 0) % n_start;
    for (int64_t i = 0; i <= L; ++i) out[i] = static_cast<uint8_t>(text_[start + i]);
  }
  std::string describe() const override {
    return origin_ + " (" + std::to_string(text_.size()) + " bytes; " + split_name(split_) +
           ": bytes [" + std::to_string(begin_) + ", " + std::to_string(end_) + "))";
  }

 private:
  std::string text_, origin_;
  uint64_t seed_;
  Split split_;
  uint64_t begin_ = 0, end_ = 0;
};

// splitmix64's finaliser: a fixed bijective mix, so "mix(k) mod 16 = 0" picks keys with no
// pattern in their digits.
uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

constexpr uint32_t kPasskeys = 100000;  // 5 decimal digits

// The keys of one split, in increasing order (built once: 100 000 hashes).
const std::vector<uint32_t>& passkeys(Split split) {
  static const std::array<std::vector<uint32_t>, 2> keys = [] {
    std::array<std::vector<uint32_t>, 2> k;
    for (uint32_t key = 0; key < kPasskeys; ++key) k[mix64(key) % 16 == 0 ? 1 : 0].push_back(key);
    return k;
  }();
  return keys[split == Split::validation ? 1 : 0];
}

class PasskeySource final : public DataSource {
 public:
  PasskeySource(uint64_t seed, int64_t L, Split split, double depth)
      : seed_(split == Split::train ? seed : kValidationSeed), split_(split), depth_(depth) {
    SP_CHECK_USAGE(L >= 128, "the passkey task needs --seq-len >= 128, got ", L);
    SP_CHECK_USAGE(depth <= 1.0,
                   "the needle depth must be in [0, 1] (a fraction of the room before ",
                   "the question), got ", depth);
  }
  void sample(uint64_t s, int64_t L, int32_t* out) const override {
    static const char* filler =
        "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
        "again. ";
    const std::string key = digits(s);
    const std::string needle = " The pass key is " + key + ". Remember it. ";
    const std::string question = " What is the pass key? The pass key is " + key;
    const int64_t n = L + 1, filler_len = int64_t(std::char_traits<char>::length(filler));
    std::string seq;
    seq.reserve(n);
    for (int64_t i = 0; int64_t(seq.size()) < n; ++i) seq += filler[i % filler_len];
    seq.resize(n);
    // Needle in the first half (after a random offset), anywhere in [0, room] (passkey-
    // anywhere), or at depth_ · room when a depth is set; question at the very end.
    // L >= 128 leaves room >= 129 − 44 − 37 = 48.
    const int64_t room = n - int64_t(question.size()) - int64_t(needle.size());
    int64_t at = 0;
    if (depth_ >= 0.0)
      at = std::llround(depth_ * double(room));
    else if (depth_ == kNeedleAnywhere)
      at = int64_t(draw(seed_, s, 2) % uint64_t(room + 1));
    else
      at = int64_t(draw(seed_, s, 2) % uint64_t(std::max<int64_t>(1, room / 2)));
    seq.replace(at, needle.size(), needle);
    seq.replace(n - question.size(), question.size(), question);
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint8_t>(seq[i]);
  }
  std::vector<int64_t> answer_positions(uint64_t s, int64_t L) const override {
    // Inputs at L−5..L−1 predict targets x[L−4..L] = the 5 digits.
    std::vector<int64_t> p;
    for (int64_t i = L - 5; i < L + 0; ++i) p.push_back(i);
    return p;
  }
  bool has_answers() const override { return true; }
  std::string describe() const override {
    return std::string("synthetic passkey retrieval (") +
           (depth_ == kNeedleAnywhere ? "needle at any depth; " : "") + split_name(split_) +
           " keys: " + std::to_string(passkeys(split_).size()) + " of " +
           std::to_string(kPasskeys) + ")";
  }

 private:
  std::string digits(uint64_t s) const {
    const std::vector<uint32_t>& keys = passkeys(split_);
    char b[8];
    std::snprintf(b, sizeof(b), "%05u", unsigned(keys[draw(seed_, s, 1) % keys.size()]));
    return b;
  }
  uint64_t seed_;
  Split split_;
  double depth_;  // < 0: random in the first half (training's default), or kNeedleAnywhere
};

}  // namespace

uint64_t validation_begin(uint64_t n, int64_t L, const TokenFile* docs, const std::string& origin,
                          const char* unit) {
  const uint64_t sample = uint64_t(L) + 1;
  SP_CHECK_INPUT(L >= 1 && n >= 2 * sample, origin, " has ", n, " ", unit,
                 ", fewer than 2·(seq_len + 1) = ", 2 * sample,
                 ": a training sample and a held-out validation sample (the last 1/",
                 kValidationDivisor, ", at least seq_len + 1 tokens) must both fit");
  const uint64_t v = std::max((n + kValidationDivisor - 1) / kValidationDivisor, sample);
  const uint64_t cut = n - v;  // >= sample
  if (!docs) return cut;
  const uint64_t doc_cut = docs->doc_begin(docs->doc_of(cut));
  return doc_cut >= sample ? doc_cut : cut;
}

int32_t mask_token(const DataSource& src) { return int32_t(src.vocab()); }

void DataSource::doc_ids(uint64_t, int64_t, int64_t*) const {
  SP_FAIL("the data ", describe(), " has no document boundaries");
}

void check_packing(const DataSource& src, const Packing& pk) {
  SP_CHECK_USAGE(
      !pk.documents || src.has_documents(), "--pack-documents needs data with ",
      "document boundaries (a token file: --data kjv-bpe8k, or one written by seqpar ",
      "tokenize encode), but the data is bytes without a document table: ", src.describe());
}

std::vector<int64_t> reset_positions(const SeqMask& mask, const std::vector<int64_t>& pos) {
  const int64_t T = int64_t(pos.size());
  std::vector<int64_t> out(size_t(mask.B) * T);
  for (int b = 0; b < mask.B; ++b) {
    const std::vector<int64_t>* st = b < int(mask.doc_starts.size()) && !mask.doc_starts[b].empty()
                                         ? &mask.doc_starts[b]
                                         : nullptr;
    for (int64_t t = 0; t < T; ++t) {
      int64_t start = 0;  // the last document start at or before pos[t]
      if (st) start = *(std::upper_bound(st->begin(), st->end(), pos[t]) - 1);
      out[size_t(b) * T + t] = pos[t] - start;
    }
  }
  return out;
}

TokenSource::TokenSource(const std::string& path, std::string origin, uint64_t seed, int64_t L,
                         Split split)
    : file_(path),
      origin_(std::move(origin)),
      seed_(split == Split::train ? seed : kValidationSeed),
      split_(split) {
  SP_CHECK(L >= 1, "seq_len must be >= 1, got ", L);
  SP_CHECK_INPUT(uint64_t(L) + 1 <= file_.num_tokens(), "token file ", origin_, " has ",
                 file_.num_tokens(), " tokens, fewer than seq_len + 1 = ", L + 1);
  const uint64_t cut = validation_begin(file_.num_tokens(), L, &file_, "token file " + origin_);
  begin_ = split == Split::train ? 0 : cut;
  end_ = split == Split::train ? cut : file_.num_tokens();
}

uint64_t TokenSource::window_start(uint64_t s, int64_t L) const {
  SP_CHECK(L >= 1 && uint64_t(L) + 1 <= end_ - begin_, "the ", split_name(split_),
           " part of token file ", origin_, " has ", end_ - begin_,
           " tokens, fewer than a sample of L + 1 = ", L + 1);
  const uint64_t n_start = end_ - begin_ - uint64_t(L);  // starts: begin + [0, n_start)
  return begin_ + draw(seed_, s, 0) % n_start;
}

void TokenSource::sample(uint64_t s, int64_t L, int32_t* out) const {
  file_.read(window_start(s, L), size_t(L) + 1, out);  // checks every token < V
}

void TokenSource::doc_ids(uint64_t s, int64_t L, int64_t* out) const {
  file_.doc_ids(window_start(s, L), size_t(L) + 1, out);
}

std::string TokenSource::describe() const {
  return origin_ + " (" + std::to_string(file_.num_tokens()) + " tokens, " +
         std::to_string(file_.num_docs()) + " documents, V=" + std::to_string(file_.vocab()) +
         "; " + split_name(split_) + ": tokens [" + std::to_string(begin_) + ", " +
         std::to_string(end_) + "))";
}

std::unique_ptr<DataSource> make_text_source(const std::string& path_or_kjv, uint64_t seed,
                                             int64_t L, Split split) {
  std::string origin;
  std::string text;
  if (path_or_kjv == "kjv") {
    text = load_kjv(&origin);
    origin = "kjv from " + origin;
  } else {
    text = read_regular_file(path_or_kjv, "data file");
    origin = "'" + path_or_kjv + "'";
  }
  return std::make_unique<TextSource>(std::move(text), std::move(origin), seed, L, split);
}

std::unique_ptr<DataSource> make_passkey_source(uint64_t seed, int64_t L, Split split,
                                                double needle_depth) {
  return std::make_unique<PasskeySource>(seed, L, split, needle_depth);
}

std::unique_ptr<DataSource> make_token_source(const std::string& path, uint64_t seed, int64_t L,
                                              Split split) {
  return std::make_unique<TokenSource>(path, "'" + path + "'", seed, L, split);
}

std::string token_file_path(const std::string& spec) {
  if (spec == "kjv-bpe8k") {
    const std::vector<std::string> candidates = data_candidates("kjv-bpe8k.tok");
    for (const auto& c : candidates) {
      std::error_code ec;
      if (std::filesystem::is_regular_file(c, ec)) return c;
    }
    std::string looked;
    for (const auto& c : candidates) looked += (looked.empty() ? "" : ", ") + c;
    SP_FAIL_INPUT(
        "the corpus 'kjv-bpe8k' needs the token file kjv-bpe8k.tok, not found (looked in ", looked,
        "): run `bash scripts/setup.sh` to build it, or pass --data PATH");
  }
  if (spec != "kjv" && spec != "passkey" && spec != "passkey-anywhere" && claims_token_file(spec))
    return spec;
  return "";
}

std::string data_file(const std::string& spec) {
  if (spec == "passkey" || spec == "passkey-anywhere") return "";
  if (spec == "kjv") {
    for (const auto& c : data_candidates("kjv.txt")) {
      std::error_code ec;
      if (std::filesystem::is_regular_file(c, ec) && std::filesystem::file_size(c, ec) > 0)
        return c;
    }
    return "";
  }
  const std::string tok = token_file_path(spec);
  return tok.empty() ? spec : tok;
}

nlohmann::json data_identity(const std::string& spec) {
  nlohmann::json id = {{"spec", spec}};
  const std::string path = data_file(spec);
  if (path.empty()) return id;
  const MappedFile f(path, "data file");
  std::error_code ec;
  const std::filesystem::path canon = std::filesystem::canonical(path, ec);
  id["path"] = ec ? path : canon.string();
  id["bytes"] = f.size();
  id["xxh64"] = hash_hex(xxh64(f.data(), f.size()));
  return id;
}

std::unique_ptr<DataSource> make_source(const std::string& spec, uint64_t seed, int64_t L,
                                        Split split) {
  if (spec == "passkey") return make_passkey_source(seed, L, split);
  if (spec == "passkey-anywhere") return make_passkey_source(seed, L, split, kNeedleAnywhere);
  const std::string tok = token_file_path(spec);
  if (spec == "kjv-bpe8k")
    return std::make_unique<TokenSource>(tok, "kjv-bpe8k from '" + tok + "'", seed, L, split);
  if (!tok.empty()) return make_token_source(tok, seed, L, split);
  return make_text_source(spec, seed, L, split);
}

void fit_model_to_data(ModelConfig& model, const std::string& spec, bool vocab_given,
                       bool hash_given) {
  const std::string tok = token_file_path(spec);
  if (tok.empty()) return;  // bytes: the defaults fit
  TokenFile::Options opt;
  opt.scan_body = false;  // the header is all this needs; training validates the body
  const TokenFile f(tok, opt);
  if (!vocab_given) model.V = int(f.vocab()) + (model.kind == ModelKind::bert ? 1 : 0);
  if (!hash_given) model.tokenizer_hash = f.tokenizer_hash();
}

void check_data_matches_model(const DataSource& src, int64_t model_vocab,
                              uint64_t model_tokenizer_hash, const std::string& what,
                              ModelKind kind) {
  const uint64_t data_hash = src.tokenizer_hash();
  SP_CHECK_USAGE(data_hash != 0 || model_tokenizer_hash == 0, "the data ", src.describe(),
                 " is bytes (no tokenizer), but ", what, " was built for the tokenizer of hash ",
                 hash_hex(model_tokenizer_hash), ": train it on the token file of that tokenizer");
  SP_CHECK_USAGE(data_hash == 0 || model_tokenizer_hash != 0, "the data ", src.describe(),
                 " was written with the tokenizer of hash ", hash_hex(data_hash), ", but ", what,
                 " is a byte model (no tokenizer): its ids would be read as bytes");
  SP_CHECK_USAGE(data_hash == model_tokenizer_hash, "the data ", src.describe(),
                 " was written with the tokenizer of hash ", hash_hex(data_hash), ", but ", what,
                 " was built for the tokenizer of hash ", hash_hex(model_tokenizer_hash),
                 ": its ids would mean other pieces");
  const bool bert = kind == ModelKind::bert;
  const int64_t need = src.vocab() + (bert ? 1 : 0);
  SP_CHECK_USAGE(model_vocab >= need, what, " has a vocabulary of ", model_vocab,
                 ", smaller than the data's V=", src.vocab(), bert ? " + 1 for [MASK]" : "", " (",
                 src.describe(), "): ids from ", model_vocab, " up have no embedding row");
}

Batch make_batch(const DataSource& src, ModelKind kind, uint64_t seed, uint64_t first_sample, int B,
                 int64_t L, const std::vector<int64_t>& pos, const Packing& pk) {
  check_packing(src, pk);
  SP_CHECK_USAGE(pk.window >= 0, "window must be >= 0 (0 = off), got ", pk.window);
  Batch b;
  b.B = B;
  b.T = int(pos.size());
  b.L = L;
  b.pos = pos;
  const int64_t T = b.T;
  b.tokens.resize(B * T);
  b.targets.resize(B * T);
  b.row_key.resize(B * T);
  std::vector<int32_t> seq(L + 1);
  const uint64_t V = uint64_t(src.vocab());
  const int32_t mask = mask_token(src);
  // Packing: document ids of each sample's L+1 tokens, and of every row's L inputs for the
  // mask (every rank reads all L, so the mask is the same on every rank of the sp group).
  std::vector<int64_t> ids(pk.documents ? L + 1 : 0), row_ids(pk.documents ? B * L : 0);
  for (int i = 0; i < B; ++i) {
    const uint64_t s = first_sample + i;
    src.sample(s, L, seq.data());
    if (pk.documents) {
      src.doc_ids(s, L, ids.data());
      std::copy_n(ids.data(), L, row_ids.data() + int64_t(i) * L);
    }
    for (int64_t t = 0; t < T; ++t) {
      const int64_t p = pos[t];
      const int64_t r = int64_t(i) * T + t;
      b.row_key[r] = int64_t(s) * L + p;
      if (kind != ModelKind::bert) {  // causal LM: predict the next token
        b.tokens[r] = seq[p];
        // A document's last token does not predict the next document's first one.
        b.targets[r] = pk.documents && ids[p + 1] != ids[p] ? -1 : seq[p + 1];
      } else {
        // Masked LM, decisions keyed by (sample, position): independent of sharding.
        u32x4 u = philox4x32(
            rng_counter(uint32_t(p), uint32_t(s), uint32_t(s >> 32), 0, 0, RngSite::mlm_mask),
            seed);
        const float pick = u32_to_unit(u[0]), how = u32_to_unit(u[1]);
        // One position per sample is always picked, so no sample (and no step) is without
        // a counted target; it is a function of (seed, s) only, like every other pick.
        const bool forced = p == int64_t(draw(seed, s, 3) % uint64_t(L));
        if (pick < 0.15f || forced) {
          b.targets[r] = seq[p];
          // u mod V: for bytes (V = 256) exactly the low byte, as before token files.
          b.tokens[r] = how < 0.8f ? mask : how < 0.9f ? int32_t(uint64_t(u[2]) % V) : seq[p];
        } else {
          b.targets[r] = -1;
          b.tokens[r] = seq[p];
        }
      }
    }
  }
  if (pk.documents) {
    b.mask = mask_from_doc_ids(row_ids.data(), B, L, pk.window);
  } else {
    b.mask.B = B;
    b.mask.L = L;
    b.mask.window = pk.window;
  }
  if (pk.positions == DocPositions::reset) b.rope_pos = reset_positions(b.mask, pos);
  return b;
}

}  // namespace seqpar

namespace seqpar {

void check_loss_on(const DataSource& src, LossOn on) {
  SP_CHECK_USAGE(on == LossOn::all || src.has_answers(),
                 "--loss-on answer needs a retrieval task with answer positions (--data "
                 "passkey), but the data has none: ",
                 src.describe());
}

void apply_loss_on(Batch& b, const DataSource& src, uint64_t first_sample, LossOn on) {
  if (on == LossOn::all) return;
  check_loss_on(src, on);
  for (int i = 0; i < b.B; ++i) {
    const std::vector<int64_t> ans = src.answer_positions(first_sample + uint64_t(i), b.L);
    for (int t = 0; t < b.T; ++t)
      if (std::find(ans.begin(), ans.end(), b.pos[t]) == ans.end())
        b.targets[size_t(i) * b.T + t] = -1;
  }
}

}  // namespace seqpar
