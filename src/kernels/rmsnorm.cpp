// RMSNorm over the last dimension C (LLaMA; Zhang & Sennrich 2019): no mean subtraction,
// no bias.
//   forward:  rstd = 1/√(mean(x²) + eps),  x̂ = x·rstd,  y = x̂·w
//   backward: with g = w∘dy (∂rstd/∂x_c = −rstd³·x_c/C),
//             dx += rstd·(g − x̂·mean(g∘x̂)),  dw += Σ_rows dy∘x̂
// Row statistics are accumulated in double and stored as float, as in layernorm.cpp.
#include <cmath>

#include "core/check.hpp"
#include "kernels/ops.hpp"

namespace seqpar {
namespace {
constexpr int64_t kParallelMin =
    32768;  // below this many elements threads cost more than they save
}  // namespace

template <class O, class I>
void rmsnorm_forward(O* out, float* rstd, const I* inp, const float* w, int64_t N, int64_t C,
                     float eps) {
  SP_CHECK(N > 0 && C > 0, "rmsnorm_forward: dims must be positive, got N=", N, " C=", C);
  SP_CHECK(out && rstd && inp && w, "rmsnorm_forward: null pointer argument");
  SP_CHECK(eps >= 0.0f, "rmsnorm_forward: eps must be non-negative, got ", eps);
#pragma omp parallel for schedule(static) if (N * C > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const I* x = inp + r * C;
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) ss += static_cast<double>(load(x[c])) * load(x[c]);
    const float rs = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(C) + eps));
    O* o = out + r * C;
    for (int64_t c = 0; c < C; ++c) store(o[c], (load(x[c]) * rs) * w[c]);
    rstd[r] = rs;
  }
}

template <class S>
void rmsnorm_backward(float* dinp, float* dw, const float* dout, const S* inp, const float* w,
                      const float* rstd, int64_t N, int64_t C) {
  SP_CHECK(N > 0 && C > 0, "rmsnorm_backward: dims must be positive, got N=", N, " C=", C);
  SP_CHECK(dinp && dw && dout && inp && w && rstd, "rmsnorm_backward: null pointer argument");
  // dx: rows are independent.
#pragma omp parallel for schedule(static) if (N * C > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const S* x = inp + r * C;
    const float* dy = dout + r * C;
    const float rs = rstd[r];
    double gx_sum = 0.0;
    for (int64_t c = 0; c < C; ++c) gx_sum += static_cast<double>(w[c] * dy[c]) * (load(x[c]) * rs);
    const float gx_mean = static_cast<float>(gx_sum / static_cast<double>(C));
    float* dx = dinp + r * C;
    for (int64_t c = 0; c < C; ++c) dx[c] += rs * (w[c] * dy[c] - (load(x[c]) * rs) * gx_mean);
  }
  // dw: a reduction over rows. Columns are split into fixed chunks and each chunk walks the
  // rows in order, so the result does not depend on the thread count.
  constexpr int64_t kChunk = 64;
  const int64_t n_chunks = (C + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (N * C > kParallelMin && n_chunks > 1)
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t c0 = ch * kChunk;
    const int64_t len = (C - c0 < kChunk) ? C - c0 : kChunk;
    double pw[kChunk] = {};
    for (int64_t r = 0; r < N; ++r) {
      const S* x = inp + r * C + c0;
      const float* dy = dout + r * C + c0;
      const float rs = rstd[r];
      for (int64_t j = 0; j < len; ++j) pw[j] += static_cast<double>(dy[j]) * (load(x[j]) * rs);
    }
    for (int64_t j = 0; j < len; ++j) dw[c0 + j] += static_cast<float>(pw[j]);
  }
}

template void rmsnorm_forward(float*, float*, const float*, const float*, int64_t, int64_t, float);
template void rmsnorm_forward(bf16*, float*, const bf16*, const float*, int64_t, int64_t, float);
template void rmsnorm_forward(float*, float*, const bf16*, const float*, int64_t, int64_t, float);
template void rmsnorm_backward(float*, float*, const float*, const float*, const float*,
                               const float*, int64_t, int64_t);
template void rmsnorm_backward(float*, float*, const float*, const bf16*, const float*,
                               const float*, int64_t, int64_t);

}  // namespace seqpar
