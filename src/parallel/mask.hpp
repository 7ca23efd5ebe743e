// Document masks and sliding windows of one (B, L) batch, shared by every strategy.
//
// A packed sequence holds several documents back to back; row b's documents start at the
// increasing global positions doc_starts[b] (the first is 0) and each runs to the next
// start (the last to L). Query i (global position) sees key j only inside its own document,
// causally for gpt/llama, and within a window of w tokens when window = w > 0:
//   lo(i) = max(start(doc(i)), i − w + 1)
//   hi(i) = causal ? i : min(end(doc(i)) − 1, i + w − 1)          (w = 0: no window term)
//   visible(i, j)  ⇔  lo(i) ≤ j ≤ hi(i).
// Documents are contiguous, so every query's visible keys form one interval of positions,
// whatever the sharding: the kernel takes [lo, hi] per query row (AttnParams::key_lo/hi),
// and a strategy decides from interval tests alone which hops, blocks and tiles it can skip.
// The bidirectional window (bert) is symmetric, |i − j| < w.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/attention.hpp"

namespace seqpar {

struct SeqMask {
  int B = 0;
  int64_t L = 0;
  int64_t window = 0;                            // 0: none
  std::vector<std::vector<int64_t>> doc_starts;  // (B)(documents of row b); empty: one each

  // True when nothing is masked beyond causality (one document per row, no window).
  bool trivial() const;
  // Visible key range [lo, hi] of the query at global position pos in batch row b.
  void bounds(int b, int64_t pos, bool causal, int64_t& lo, int64_t& hi) const;
  bool visible(int b, int64_t pq, int64_t pk, bool causal) const {
    int64_t lo, hi;
    bounds(b, pq, causal, lo, hi);
    return lo <= pk && pk <= hi;
  }
  // Throws (naming the value) unless the starts are valid: increasing, first 0, below L.
  void check() const;
};

// A mask from per-token document ids (B, L): a new document starts wherever the id changes.
SeqMask mask_from_doc_ids(const int64_t* ids, int B, int64_t L, int64_t window);

// Visible key ranges of a set of query rows (B, T) at positions pos, for the kernel.
// Holds the arrays; apply() points an AttnParams at them (rows [i0, i0 + Tq) of the set).
class MaskBounds {
 public:
  // mask == null or trivial: no bounds (apply leaves the params unbounded).
  void build(const SeqMask* mask, const int64_t* pos, int B, int T, bool causal);
  void apply(AttnParams& p, int i0 = 0) const;
  bool active() const { return active_; }
  const int64_t* lo() const { return lo_.data(); }
  const int64_t* hi() const { return hi_.data(); }
  int T() const { return T_; }

 private:
  bool active_ = false;
  int T_ = 0;
  std::vector<int64_t> lo_, hi_;  // (B, T)
};

// Whether any of the queries at positions qpos (Tq, every batch row) sees any key at the
// sorted positions kpos[0..nk). Exact: each row's interval is searched in the keys.
// mask may be null (causality alone).
bool any_key_visible(const SeqMask* mask, bool causal, int B, const int64_t* qpos, int Tq,
                     const int64_t* kpos_sorted, int64_t nk);

}  // namespace seqpar
