// Linear layer on OpenBLAS sgemm, row-major throughout. w is (N, K) as in PyTorch's
// nn.Linear, so the forward multiplies by wᵀ through CblasTrans: no transposed copy of w.
//   forward:  out = inp·wᵀ + bias       (in pieces of at most kGemmMaxRows rows)
//   backward: dinp += dout·w,  dw += doutᵀ·inp,  dbias += Σ_rows dout   (sgemm beta = 1)
//             (dinp in pieces of at most kGemmMaxRows rows)
// bf16 storage (inp, out as bf16): kLinearRows rows at a time are widened into an fp32 tile,
// multiplied by sgemm (fp32 products and sums) and, in forward, rounded back; dw sums its
// row chunks with beta = 1. The conversion is O(M·(K + N)) against the O(M·K·N) product.
// (OpenBLAS's cblas_sbgemm takes bf16 A and B with fp32 accumulation, but it would need w
// in bf16 as well, rounding the master weights in every product: docs/precision.md has the
// measurement of both.)
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <type_traits>

#include "core/check.hpp"
#include "core/memory.hpp"
#include "core/profile.hpp"
#include "core/threads.hpp"
#include "kernels/ops.hpp"

namespace seqpar {
namespace {

void check_dims(const char* who, int64_t M, int64_t K, int64_t N) {
  SP_CHECK(M > 0 && K > 0 && N > 0, who, ": dims must be positive, got M=", M, " K=", K, " N=", N);
  // cblas takes int dimensions and leading dimensions.
  SP_CHECK(M <= INT_MAX && K <= INT_MAX && N <= INT_MAX, who,
           ": dims exceed the BLAS int range, got M=", M, " K=", K, " N=", N);
}

// acc (N) += Σ over the M rows of x (M, N). Columns are split into fixed chunks across
// threads and every chunk walks the rows in order with double partial sums, so the result
// does not depend on the thread count.
void add_column_sums(float* acc, const float* x, int64_t M, int64_t N) {
  constexpr int64_t kChunk = 64;
  const int64_t n_chunks = (N + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (M * N > 65536 && n_chunks > 1)
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t c0 = ch * kChunk;
    const int64_t len = (N - c0 < kChunk) ? N - c0 : kChunk;
    double part[kChunk] = {};
    for (int64_t r = 0; r < M; ++r) {
      const float* row = x + r * N + c0;
      for (int64_t j = 0; j < len; ++j) part[j] += row[j];
    }
    for (int64_t j = 0; j < len; ++j) acc[c0 + j] += static_cast<float>(part[j]);
  }
}

}  // namespace

namespace {
void linear_forward_f32(float* out, const float* inp, const float* w, const float* bias, int64_t M,
                        int64_t K, int64_t N) {
  SP_CHECK(out && inp && w, "linear_forward: null out/inp/w");
  float beta = 0.0f;
  if (bias) {
    // Seed every output row with the bias and let sgemm add the product (beta = 1).
#pragma omp parallel for schedule(static) if (M * N > 65536)
    for (int64_t r = 0; r < M; ++r) {
      float* o = out + r * N;
      for (int64_t j = 0; j < N; ++j) o[j] = bias[j];
    }
    beta = 1.0f;
  }
  const BlasThreadsFor team(2 * M * N * K);  // a decode step's products run on one thread
  if (M == 1) {
    // One row (a decode step): out = w·inp as a matrix-vector product, which streams w
    // once; sgemm would first copy ("pack") all of w, doubling the memory traffic of what
    // is a weight-streaming bound.
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(N), static_cast<int>(K), 1.0f, w,
                static_cast<int>(K), inp, 1, beta, out, 1);
    return;
  }
  // At most kGemmMaxRows rows per call: OpenBLAS touches its pack buffer in proportion to
  // the rows of this product (core/memory.hpp). Rows are independent; the pieces agree
  // with one call to rounding (OpenBLAS's blocking of the rows moves, tests/test_ops).
  for (int64_t r0 = 0; r0 < M; r0 += kGemmMaxRows) {
    const int64_t rows = M - r0 < kGemmMaxRows ? M - r0 : kGemmMaxRows;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(N), static_cast<int>(K), 1.0f, inp + r0 * K, static_cast<int>(K),
                w, static_cast<int>(K), beta, out + r0 * N, static_cast<int>(N));
  }
}
}  // namespace

template <class O, class I>
void linear_forward(O* out, const I* inp, const float* w, const float* bias, int64_t M, int64_t K,
                    int64_t N, float* scratch) {
  check_dims("linear_forward", M, K, N);
  const PhaseScope phase(Phase::linear);
  if constexpr (std::is_same_v<O, float> && std::is_same_v<I, float>) {
    linear_forward_f32(out, inp, w, bias, M, K, N);
  } else {
    SP_CHECK(scratch, "linear_forward: bf16 storage needs linear_scratch_floats(K, N) of scratch");
    SP_CHECK(out && inp && w, "linear_forward: null out/inp/w");
    float* a = scratch;                    // (kLinearRows, K) fp32 input rows
    float* c = scratch + kLinearRows * K;  // (kLinearRows, N) fp32 output rows
    for (int64_t r0 = 0; r0 < M; r0 += kLinearRows) {
      const int64_t m = std::min(kLinearRows, M - r0);
      const float* x = a;
      if constexpr (std::is_same_v<I, float>)
        x = inp + r0 * K;
      else
        convert(a, inp + r0 * K, m * K);
      if constexpr (std::is_same_v<O, float>) {
        linear_forward_f32(out + r0 * N, x, w, bias, m, K, N);
      } else {
        linear_forward_f32(c, x, w, bias, m, K, N);
        convert(out + r0 * N, c, m * N);
      }
    }
  }
}

template <class S>
void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const S* inp,
                     const float* w, int64_t M, int64_t K, int64_t N, float* scratch) {
  check_dims("linear_backward", M, K, N);
  SP_CHECK(dw && dout && inp && w, "linear_backward: null dw/dout/inp/w");
  const PhaseScope phase(Phase::linear);
  const BlasThreadsFor team(2 * M * N * K);
  if (dinp) {
    // dinp (M, K) += dout (M, N) · w (N, K), at most kGemmMaxRows rows per call as in the
    // forward.
    for (int64_t r0 = 0; r0 < M; r0 += kGemmMaxRows) {
      const int64_t rows = M - r0 < kGemmMaxRows ? M - r0 : kGemmMaxRows;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                  static_cast<int>(K), static_cast<int>(N), 1.0f, dout + r0 * N,
                  static_cast<int>(N), w, static_cast<int>(K), 1.0f, dinp + r0 * K,
                  static_cast<int>(K));
    }
  }
  // dw is left whole in fp32: its rows are the reduction (pieces would change the sum's
  // order), and this product's packing does not grow with M (+0.3–1 MB at M = 16384).
  // dw (N, K) += doutᵀ (N, M) · inp (M, K), over all M rows at once or chunk by chunk.
  auto dw_rows = [&](const float* x, const float* dy, int64_t m) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(N), static_cast<int>(K),
                static_cast<int>(m), 1.0f, dy, static_cast<int>(N), x, static_cast<int>(K), 1.0f,
                dw, static_cast<int>(K));
  };
  if constexpr (std::is_same_v<S, float>) {
    dw_rows(inp, dout, M);
  } else {
    SP_CHECK(scratch, "linear_backward: bf16 storage needs linear_scratch_floats(K, N) of scratch");
    for (int64_t r0 = 0; r0 < M; r0 += kLinearRows) {
      const int64_t m = std::min(kLinearRows, M - r0);
      convert(scratch, inp + r0 * K, m * K);
      dw_rows(scratch, dout + r0 * N, m);
    }
  }
  if (dbias) add_column_sums(dbias, dout, M, N);
}

template void linear_forward(float*, const float*, const float*, const float*, int64_t, int64_t,
                             int64_t, float*);
template void linear_forward(bf16*, const bf16*, const float*, const float*, int64_t, int64_t,
                             int64_t, float*);
template void linear_forward(float*, const bf16*, const float*, const float*, int64_t, int64_t,
                             int64_t, float*);
template void linear_backward(float*, float*, float*, const float*, const float*, const float*,
                              int64_t, int64_t, int64_t, float*);
template void linear_backward(float*, float*, float*, const float*, const bf16*, const float*,
                              int64_t, int64_t, int64_t, float*);

}  // namespace seqpar

namespace seqpar {

void bias_forward(float* out, const float* bias, int64_t M, int64_t N) {
  SP_CHECK(out && bias && M > 0 && N > 0, "bias_forward: null pointer or non-positive dims M=", M,
           " N=", N);
#pragma omp parallel for schedule(static) if (M * N > 65536)
  for (int64_t r = 0; r < M; ++r)
    for (int64_t j = 0; j < N; ++j) out[r * N + j] += bias[j];
}

void bias_backward(float* dbias, const float* dout, int64_t M, int64_t N) {
  SP_CHECK(dbias && dout && M > 0 && N > 0,
           "bias_backward: null pointer or non-positive dims M=", M, " N=", N);
  add_column_sums(dbias, dout, M, N);
}

}  // namespace seqpar
