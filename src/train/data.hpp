// Training data. Tokens are bytes (vocabulary 256; BERT adds [MASK] = 256).
//
// A data source produces global sequence number s of length L+1 as a pure function of
// (seed, s), so every rank can build exactly the tokens it needs and a resumed run sees
// the same data. Labels are shifted on the GLOBAL sequence before sharding:
//   gpt : input x[0..L),  target x[1..L]          (every position counts)
//   bert: input = mask(x[0..L)), target x[i] at masked positions, −1 elsewhere.
// BERT masking picks 15 % of positions; of those 80 % become [MASK], 10 % a random byte,
// 10 % stay — each decision drawn from the counter-based RNG keyed by (s, position); one
// position per sample, drawn from (seed, s), is always picked so every sample counts.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/config.hpp"
#include "model/model.hpp"
#include "parallel/layout.hpp"

namespace seqpar {

constexpr int32_t kMaskToken = 256;

class DataSource {
 public:
  virtual ~DataSource() = default;
  // Writes L+1 tokens of global sample `s`.
  virtual void sample(uint64_t s, int64_t L, int32_t* out) const = 0;
  // Positions (within the L inputs) whose target is the answer of a retrieval task, for
  // accuracy reporting; empty for plain text.
  virtual std::vector<int64_t> answer_positions(uint64_t s, int64_t L) const { return {}; }
  virtual std::string describe() const = 0;
};

// Byte corpus from a file; "kjv" is the embedded default (King James Bible from Debian's
// bible-kjv package: data/kjv.txt if present, otherwise read from `bible`).
// Throws with the path and the reason (missing, unreadable, empty, shorter than L+1).
std::unique_ptr<DataSource> make_text_source(const std::string& path_or_kjv, uint64_t seed,
                                             int64_t L);
// Synthetic long-range retrieval: a 5-digit pass key is stated early in a long filler
// text and asked for at the very end; the answer digits are the last 5 targets.
std::unique_ptr<DataSource> make_passkey_source(uint64_t seed, int64_t L);
std::unique_ptr<DataSource> make_source(const std::string& spec, uint64_t seed, int64_t L);

// Builds this rank's shard of one step: samples first_sample .. first_sample+B−1 of the
// global batch, positions `pos` (from shard_positions) of each.
Batch make_batch(const DataSource& src, ModelKind kind, uint64_t seed, uint64_t first_sample, int B,
                 int64_t L, const std::vector<int64_t>& pos);

}  // namespace seqpar
