#include "parallel/mask.hpp"

#include <algorithm>
#include <limits>

#include "core/check.hpp"

namespace seqpar {

bool SeqMask::trivial() const {
  if (window > 0) return false;
  for (const auto& s : doc_starts)
    if (s.size() > 1) return false;
  return true;
}

void SeqMask::bounds(int b, int64_t pos, bool causal, int64_t& lo, int64_t& hi) const {
  lo = 0;
  hi = L - 1;
  if (b < static_cast<int>(doc_starts.size()) && !doc_starts[b].empty()) {
    const auto& s = doc_starts[b];
    auto it = std::upper_bound(s.begin(), s.end(), pos);  // first start after pos
    lo = *(it - 1);
    hi = it == s.end() ? L - 1 : *it - 1;
  }
  if (causal) hi = std::min(hi, pos);
  if (window > 0) {
    lo = std::max(lo, pos - window + 1);
    hi = std::min(hi, pos + window - 1);
  }
}

void SeqMask::check() const {
  SP_CHECK(window >= 0, "mask: window=", window, " must be >= 0");
  SP_CHECK(doc_starts.empty() || static_cast<int>(doc_starts.size()) == B,
           "mask: ", doc_starts.size(), " rows of document starts for B=", B);
  for (size_t b = 0; b < doc_starts.size(); ++b) {
    const auto& s = doc_starts[b];
    if (s.empty()) continue;
    SP_CHECK(s[0] == 0, "mask: row ", b, " starts its first document at ", s[0], ", not 0");
    for (size_t i = 1; i < s.size(); ++i)
      SP_CHECK(s[i] > s[i - 1] && s[i] < L, "mask: row ", b, " document ", i, " starts at ", s[i],
               " after ", s[i - 1], " (starts must increase and stay below L=", L, ")");
  }
}

SeqMask mask_from_doc_ids(const int64_t* ids, int B, int64_t L, int64_t window) {
  SeqMask m;
  m.B = B;
  m.L = L;
  m.window = window;
  m.doc_starts.resize(B);
  for (int b = 0; b < B; ++b) {
    const int64_t* id = ids + int64_t{b} * L;
    m.doc_starts[b].push_back(0);
    for (int64_t i = 1; i < L; ++i)
      if (id[i] != id[i - 1]) m.doc_starts[b].push_back(i);
  }
  return m;
}

void MaskBounds::build(const SeqMask* mask, const int64_t* pos, int B, int T, bool causal) {
  active_ = mask != nullptr && !mask->trivial();
  T_ = T;
  if (!active_) return;
  SP_CHECK(mask->B == B, "mask built for B=", mask->B, " used with B=", B);
  lo_.resize(size_t(B) * T);
  hi_.resize(size_t(B) * T);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      mask->bounds(b, pos[t], causal, lo_[size_t(b) * T + t], hi_[size_t(b) * T + t]);
}

void MaskBounds::apply(AttnParams& p, int i0) const {
  if (!active_) {
    p.key_lo = p.key_hi = nullptr;
    return;
  }
  p.key_lo = lo_.data() + i0;
  p.key_hi = hi_.data() + i0;
  p.key_bstride = T_;
}

bool any_key_visible(const SeqMask* mask, bool causal, int B, const int64_t* qpos, int Tq,
                     const int64_t* kpos, int64_t nk) {
  if (nk == 0) return false;
  const int64_t* end = kpos + nk;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < Tq; ++i) {
      int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
      if (mask)
        mask->bounds(b, qpos[i], causal, lo, hi);
      else if (causal)
        hi = qpos[i];
      const int64_t* k = std::lower_bound(kpos, end, lo);
      if (k != end && *k <= hi) return true;
    }
  return false;
}

}  // namespace seqpar
