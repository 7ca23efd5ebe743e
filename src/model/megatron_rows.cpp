// Megatron sequence-parallel collectives over the tp group: this rank's rows of the
// flattened (B·T) sp shard, the all-gather of rows before a column-parallel linear, the
// reduce-scatter (or, without sequence parallelism, all-reduce) after a row-parallel one.
#include <algorithm>
#include <type_traits>

#include "comm/comm.hpp"
#include "kernels/ops.hpp"
#include "model/model.hpp"

namespace seqpar {

int64_t Model::row_begin() const {
  return seq_par_ ? tp_rank_ * (N_ / tp_) + std::min<int64_t>(tp_rank_, N_ % tp_) : 0;
}

std::vector<int64_t> Model::row_counts(int64_t width) const {
  std::vector<int64_t> c(tp_);
  for (int t = 0; t < tp_; ++t) c[t] = (N_ / tp_ + (t < N_ % tp_ ? 1 : 0)) * width;
  return c;
}

void Model::gather_rows(const float* part, float* full, int64_t width) {
  if (N_ % tp_ == 0)
    par_.tp.comm->allgather(part, full, size_t(R_ * width));
  else
    par_.tp.comm->allgatherv(part, full, row_counts(width));
}

void Model::reduce_scatter_rows(const float* full, float* part, int64_t width) {
  if (N_ % tp_ == 0)
    par_.tp.comm->reduce_scatter_sum(full, part, size_t(R_ * width));
  else
    par_.tp.comm->reduce_scatterv_sum(full, part, row_counts(width));
}

void Model::allreduce_rows(float* x, int64_t width) {
  par_.tp.comm->allreduce_sum(x, size_t(N_ * width));
}

template <class S>
void Model::gather_rows_s(const S* part, S* full, int64_t width) {
  if constexpr (std::is_same_v<S, float>) {
    gather_rows(part, full, width);
  } else {  // bf16 rows travel as floats holding two elements each (width is even)
    gather_rows(reinterpret_cast<const float*>(part), reinterpret_cast<float*>(full), width / 2);
  }
}

// out (R, C) = Σ_tp in (N, K)·wᵀ + bias: a row-parallel linear (proj, FC2). The partial sums
// over this rank's K columns are fp32 (in full_ under sequence parallelism, else in out, or
// in dln_ under bf16, free in forward), summed over tp in fp32 and stored once.
template <class S>
void Model::row_parallel_forward(S* out, const S* in, const float* w, const float* bias,
                                 int64_t K) {
  const int64_t N = N_, R = R_, C = cfg_.C;
  if (tp_ == 1) {
    linear_forward(out, in, w, bias, N, K, C, lin_scratch_);
    return;
  }
  float* sum = std::is_same_v<S, float> ? reinterpret_cast<float*>(out) : dln_;  // (R, C)
  if (seq_par_) {
    linear_forward(full_, in, w, nullptr, N, K, C, lin_scratch_);
    reduce_scatter_rows(full_, sum, C);
  } else {
    linear_forward(sum, in, w, nullptr, N, K, C, lin_scratch_);
    allreduce_rows(sum, C);
  }
  if (bias) bias_forward(sum, bias, R, C);
  if constexpr (!std::is_same_v<S, float>) to_bf16(out, sum, R * C);
}

// The layers (model.cpp) call these for both storage types.
template void Model::gather_rows_s<float>(const float*, float*, int64_t);
template void Model::gather_rows_s<bf16>(const bf16*, bf16*, int64_t);
template void Model::row_parallel_forward<float>(float*, const float*, const float*, const float*,
                                                 int64_t);
template void Model::row_parallel_forward<bf16>(bf16*, const bf16*, const float*, const float*,
                                                int64_t);

}  // namespace seqpar
