// Training data. Tokens are bytes (text files, "kjv", "passkey": vocabulary 256) or the ids
// of a token file (data/token_file.hpp: vocabulary V, read through a memory map, so nothing
// is tokenized in the training loop). BERT adds [MASK] = the data's vocabulary (256, or V).
//
// A data source produces global sequence number s of length L+1 as a pure function of
// (seed, s), so every rank can build exactly the tokens it needs and a resumed run sees
// the same data. Labels are shifted on the GLOBAL sequence before sharding:
//   gpt : input x[0..L),  target x[1..L]          (every position counts)
//   bert: input = mask(x[0..L)), target x[i] at masked positions, −1 elsewhere.
// A source draws from one split of its data (Split): training never samples the validation
// part, held out at construction (docs/eval.md): the last documents of a token file, the last
// bytes of a text file, and for passkey the keys of a fixed 1/16 of the key space.
// BERT masking picks 15 % of positions; of those 80 % become [MASK], 10 % a random token,
// 10 % stay — each decision drawn from the counter-based RNG keyed by (s, position); one
// position per sample, drawn from (seed, s), is always picked so every sample counts.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/names.hpp"
#include "data/token_file.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "parallel/layout.hpp"
#include "parallel/mask.hpp"

namespace seqpar {

constexpr int64_t kByteVocab = 256;
constexpr int32_t kMaskToken = 256;  // [MASK] for byte data: mask_token() of a byte source

// Which part of the data a source samples. Training reads `train`, evaluation `validation`;
// no sample of one is a sample of the other.
enum class Split { train, validation };
template <>
struct EnumNames<Split> {
  static constexpr const char* what = "split";
  static constexpr std::pair<Split, const char*> table[] = {{Split::train, "train"},
                                                            {Split::validation, "validation"}};
};
inline const char* split_name(Split s) { return enum_name(s); }
// Validation samples are drawn with this seed, not the run's, so every run on the same data
// (any --seed, any mesh) is scored on the same validation samples (BERT masks included).
constexpr uint64_t kValidationSeed = 0x76616c6964617465ull;  // "validate"
// A file corpus holds out its last 1/kValidationDivisor (5 %): large enough for a low-noise
// estimate on any corpus worth training on (kjv: 220 KB of bytes, ~55k BPE tokens), small
// enough to cost training little. A fraction rather than a fixed count, so it scales with the
// corpus; at least one sample (seq_len + 1 tokens), so a small file still has a split.
constexpr uint64_t kValidationDivisor = 20;

// First token of the validation split of a corpus of n tokens, for samples of L + 1 tokens:
// the held-out part is v = max(⌈n/20⌉, L + 1) tokens, grown down to the start of the
// document holding token n − v when `docs` (a token file's table) is given, so it holds
// whole documents; if that would leave training fewer than L + 1 tokens (one huge
// document), the cut is n − v itself. Throws, naming `origin` and counting in `unit`, when
// n < 2·(L + 1): a training sample and a validation sample cannot both fit.
uint64_t validation_begin(uint64_t n, int64_t L, const TokenFile* docs, const std::string& origin,
                          const char* unit = "tokens");

class DataSource {
 public:
  virtual ~DataSource() = default;
  // Writes L+1 tokens of global sample `s`.
  virtual void sample(uint64_t s, int64_t L, int32_t* out) const = 0;
  // Positions (within the L inputs) whose target is the answer of a retrieval task, for
  // accuracy reporting; empty for plain text.
  virtual std::vector<int64_t> answer_positions(uint64_t s, int64_t L) const { return {}; }
  // Whether answer_positions() is ever non-empty (a retrieval task): --loss-on answer needs it.
  virtual bool has_answers() const { return false; }
  virtual std::string describe() const = 0;
  // Every token is in [0, vocab()): 256 for bytes.
  virtual int64_t vocab() const { return kByteVocab; }
  // Tokenizer::hash() of the tokenizer that wrote the ids; 0 for bytes (no tokenizer).
  virtual uint64_t tokenizer_hash() const { return 0; }
  // The id that ends every document, -1 if none (bytes).
  virtual int32_t eos() const { return -1; }
  // Whether the data has document boundaries (a token file's document table); bytes do not.
  virtual bool has_documents() const { return false; }
  // Document id of each of sample s's L+1 tokens (ids increase along the sample). Throws
  // unless has_documents().
  virtual void doc_ids(uint64_t s, int64_t L, int64_t* out) const;
};

// Where RoPE positions count from (--doc-positions): global (the position in the packed
// sequence, Megatron's default) or reset (0 at each document start).
enum class DocPositions { global, reset };
template <>
struct EnumNames<DocPositions> {
  static constexpr const char* what = "doc_positions";
  static constexpr std::pair<DocPositions, const char*> table[] = {{DocPositions::global, "global"},
                                                                   {DocPositions::reset, "reset"}};
};
inline const char* doc_positions_name(DocPositions p) { return enum_name(p); }

// How a batch treats documents and attention reach (--pack-documents, --doc-positions,
// --window). Packing: a sample is still L+1 consecutive tokens of the data, but each token
// attends only inside its own document (Batch::mask), and the target of a document's last
// token (the next document's first token) is −1, so no attention and no loss crosses a
// document boundary (causal kinds; a bert target is the token itself and never crosses).
struct Packing {
  bool documents = false;                         // carry the documents as a mask
  DocPositions positions = DocPositions::global;  // reset: RoPE positions restart per document
  int64_t window = 0;                             // sliding-window attention, 0: off
};

// Refuses (UsageError, naming the data) packing documents of data without documents.
void check_packing(const DataSource& src, const Packing& pk);

// (B, T) positions of the tokens at global positions pos, counted from the start of each
// token's document in its batch row (mask.doc_starts); a row without documents counts from 0.
std::vector<int64_t> reset_positions(const SeqMask& mask, const std::vector<int64_t>& pos);

// BERT's [MASK] id: one past the data's ids, vocab() (kMaskToken = 256 for bytes), so a
// BERT model needs vocab() + 1 embedding rows.
int32_t mask_token(const DataSource& src);

// Pre-tokenized data: a token file, opened once (memory-mapped, validated on open: a wrong
// magic, a damaged header or body, a token >= V each throw TokenFile's error naming the
// file). Sample s is the window of L+1 consecutive tokens from window_start(s, L), drawn as
// TextSource draws its byte offset, inside the split's part of the file: training windows
// lie in [0, c), validation windows in [c, n), c = validation_begin(n, L, file). Windows may
// cross document boundaries (EOS between).
class TokenSource final : public DataSource {
 public:
  // Throws naming the file if it holds fewer than L+1 tokens, or too few to split.
  TokenSource(const std::string& path, std::string origin, uint64_t seed, int64_t L,
              Split split = Split::train);
  void sample(uint64_t s, int64_t L, int32_t* out) const override;
  std::string describe() const override;
  int64_t vocab() const override { return file_.vocab(); }
  uint64_t tokenizer_hash() const override { return file_.tokenizer_hash(); }
  int32_t eos() const override { return file_.eos(); }

  bool has_documents() const override { return true; }
  // Document id of each of sample s's L+1 tokens: the file's document index.
  void doc_ids(uint64_t s, int64_t L, int64_t* out) const override;

  // First token of sample s: begin + draw(seed, s) mod (end − begin − L), uniform over the
  // windows of the split's tokens [begin, end) (validation: seed kValidationSeed).
  uint64_t window_start(uint64_t s, int64_t L) const;
  const TokenFile& file() const { return file_; }
  uint64_t begin() const { return begin_; }  // the split's tokens are [begin(), end())
  uint64_t end() const { return end_; }

 private:
  TokenFile file_;
  std::string origin_;
  uint64_t seed_;
  Split split_;
  uint64_t begin_ = 0, end_ = 0;
};

// Byte corpus from a file; "kjv" is the embedded default (King James Bible from Debian's
// bible-kjv package: data/kjv.txt if present, otherwise read from `bible`).
// Throws with the path and the reason (missing, unreadable, empty, shorter than L+1).
std::unique_ptr<DataSource> make_text_source(const std::string& path_or_kjv, uint64_t seed,
                                             int64_t L, Split split = Split::train);
// Synthetic long-range retrieval: a 5-digit pass key is stated early in a long filler
// text and asked for at the very end; the answer digits are the last 5 targets. The key
// space is split: key k is a validation key iff mix(k) mod 16 = 0 (a fixed hash, so every
// digit stays uniform in both parts); training draws only the others, validation only those.
// Where the needle goes: by default (needle_depth < 0, what training reads) at a random
// offset in the first half of the room; with needle_depth d in [0, 1] (the needle sweep,
// seqpar eval --task passkey) at offset round(d · room), where
//   room = (L + 1) − |question| − |needle|
// is the last offset at which the needle still ends before the question: d = 0 puts it at
// the start of the sequence, d = 1 just before the question. Throws on L < 128 or d > 1.
// needle_depth = kNeedleAnywhere (--data passkey-anywhere) draws the offset uniformly from
// [0, room], so a model trained on it sees every depth.
constexpr double kNeedleAnywhere = -2.0;
std::unique_ptr<DataSource> make_passkey_source(uint64_t seed, int64_t L,
                                                Split split = Split::train,
                                                double needle_depth = -1.0);
// A token file: a TokenSource over `path`.
std::unique_ptr<DataSource> make_token_source(const std::string& path, uint64_t seed, int64_t L,
                                              Split split = Split::train);
// What `--data` accepts:
//   "passkey"    the synthetic retrieval task (bytes)
//   "passkey-anywhere"  the same with the needle at any depth (kNeedleAnywhere)
//   "kjv"        the embedded byte corpus (make_text_source)
//   "kjv-bpe8k"  kjv-bpe8k.tok, looked up as kjv.txt is ($SEQPAR_DATA_DIR, data/,
//                <exe>/../data/); built by scripts/setup.sh
//   a path       a token file if it is or claims to be one (claims_token_file: named *.tok,
//                or its first bytes within 2 of the magic), even a damaged one (refused
//                with TokenFile's error, never read as text); otherwise a text file of bytes
// `split` picks the part sampled (validation sources draw with kValidationSeed, not `seed`).
std::unique_ptr<DataSource> make_source(const std::string& spec, uint64_t seed, int64_t L,
                                        Split split = Split::train);

// Refuses (seqpar::UsageError) a model that cannot read this data: one built for another
// tokenizer (hashes compared in hex; 0 means bytes, so a byte model on a token file and a
// token model on bytes are refused too), or one whose vocabulary model_vocab is smaller than
// the data's (vocab() + 1 for BERT, whose [MASK] is vocab()). `what` names the model in the
// message (e.g. "the model of checkpoint 'runs/x/step_100'").
// The token file `spec` names ("kjv-bpe8k", or a path holding a token file), or "" for byte
// data (text, kjv, passkey). Throws if kjv-bpe8k.tok is missing.
std::string token_file_path(const std::string& spec);

// The file behind a `--data` spec: the token file, the text file, kjv's data/kjv.txt; ""
// for synthetic data (passkey) and for kjv read from the `bible` command.
std::string data_file(const std::string& spec);
// What a run was trained on, recorded in every checkpoint's manifest ("data") and compared
// on resume and eval: {"spec", "path" (canonical), "bytes", "xxh64" (hex, of the whole
// file)}; {"spec"} alone for data without a file. Reads the whole file once.
nlohmann::json data_identity(const std::string& spec);

// Sizes the model for token data: the vocabulary (+1 for bert's [MASK]) and the tokenizer
// hash from the token file's header, unless the user set them. Byte data changes nothing.
void fit_model_to_data(ModelConfig& model, const std::string& spec, bool vocab_given,
                       bool hash_given);

void check_data_matches_model(const DataSource& src, int64_t model_vocab,
                              uint64_t model_tokenizer_hash, const std::string& what,
                              ModelKind kind = ModelKind::gpt);

// Builds this rank's shard of one step: samples first_sample .. first_sample+B−1 of the
// global batch, positions `pos` (from shard_positions) of each. Every kind but bert is a
// causal LM; bert's [MASK] is mask_token(src) and its random replacement is u mod vocab().
// `pk`: the batch's mask holds the window and, with pk.documents, each sample's documents
// (from the document ids of its L inputs: a new document wherever the id changes), the same
// on every rank whatever its positions; causal targets whose next token is in another
// document are −1; pk.positions = reset fills rope_pos. Packing needs src.has_documents().
Batch make_batch(const DataSource& src, ModelKind kind, uint64_t seed, uint64_t first_sample, int B,
                 int64_t L, const std::vector<int64_t>& pos, const Packing& pk = {});

// Which targets the loss counts (--loss-on): all of them (what make_batch leaves), or only
// the answers of a retrieval task (DataSource::answer_positions), the others set to −1. The
// loss stays token-weighted over the counted targets of all ranks.
enum class LossOn { all, answer };
template <>
struct EnumNames<LossOn> {
  static constexpr const char* what = "loss_on";
  static constexpr std::pair<LossOn, const char*> table[] = {{LossOn::all, "all"},
                                                             {LossOn::answer, "answer"}};
};
inline const char* loss_on_name(LossOn l) { return enum_name(l); }
// Refuses (UsageError, naming the data) --loss-on answer on data without answers.
void check_loss_on(const DataSource& src, LossOn on);
// With LossOn::answer: every target of b (samples first_sample .. + b.B − 1, this shard's
// positions b.pos) that is not an answer of its sample becomes −1. LossOn::all: nothing.
void apply_loss_on(Batch& b, const DataSource& src, uint64_t first_sample, LossOn on);

}  // namespace seqpar
