// The head's outputs for inference, after forward: the argmax token of chosen rows (answer
// accuracy in train/ and eval) and the full logits of this rank's rows (generation, the HF
// export check, tests). Both are collective over tp, each rank holding Vt vocabulary rows.
#include <algorithm>
#include <climits>

#include "comm/comm.hpp"
#include "kernels/ops.hpp"
#include "model/model.hpp"

namespace seqpar {

std::vector<int32_t> Model::argmax(const std::vector<int64_t>& rows) {
  std::vector<int32_t> out(rows.size(), 0);
  if (rows.empty() || arena_.dry_run()) return out;
  const int64_t C = cfg_.C, Vt = Vt_;
  const float* x = head_input();  // collective over tp: every rank calls argmax alike
  std::vector<float> best(rows.size());
  std::vector<int64_t> idx(rows.size());
  for (size_t k = 0; k < rows.size(); ++k) {
    linear_forward(row_logits_, x + rows[k] * C, pv_.head, nullptr, 1, C, Vt);
    const int64_t j = std::max_element(row_logits_, row_logits_ + Vt) - row_logits_;
    best[k] = row_logits_[j];
    idx[k] = v0_ + j;
  }
  if (tp_ > 1) {
    // The best value over the shards, then the smallest token id that attains it.
    std::vector<float> top = best;
    par_.tp.comm->allreduce_max(top.data(), top.size());
    for (size_t k = 0; k < rows.size(); ++k)
      if (best[k] < top[k]) idx[k] = INT64_MAX;
    par_.tp.comm->allreduce_min(idx.data(), idx.size());
  }
  for (size_t k = 0; k < rows.size(); ++k) out[k] = int32_t(idx[k]);
  return out;
}

std::vector<float> Model::logits() {
  const int64_t R = R_, N = N_, C = cfg_.C, V = cfg_.V, Vt = Vt_, rb = row_begin();
  std::vector<float> out(size_t(R * V));
  if (arena_.dry_run()) return out;
  if (tp_ == 1) {
    linear_forward(out.data(), lnf_, pv_.head, nullptr, R, C, V);
    return out;
  }
  // Every tp rank's vocabulary block of all N rows (they hold different rows under sequence
  // parallelism), broadcast from each owner in turn; this rank keeps its R rows.
  std::vector<float> mine(size_t(N * Vt));
  linear_forward(mine.data(), head_input(), pv_.head, nullptr, N, C, Vt);
  for (int r = 0; r < tp_; ++r) {
    const auto [v0, vt] = vocab_range(V, tp_, r);
    std::vector<float> blk(size_t(N * vt));
    if (r == tp_rank_) blk = mine;
    par_.tp.comm->bcast(blk.data(), blk.size() * sizeof(float), r);
    for (int64_t i = 0; i < R; ++i)
      std::copy_n(blk.data() + (rb + i) * vt, vt, out.data() + i * V + v0);
  }
  return out;
}

}  // namespace seqpar
