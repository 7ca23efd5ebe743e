// LayerNorm over the last dimension C (biased variance, eps = 1e-5, as torch.nn.LayerNorm).
//   forward:  μ = mean(x),  rstd = 1/√(mean((x−μ)²) + eps),  x̂ = (x−μ)·rstd,  y = x̂·w + b
//   backward: with g = w∘dy,
//             dx += rstd·(g − mean(g) − x̂·mean(g∘x̂)),  dw += Σ_rows dy∘x̂,  db += Σ_rows dy
// Row statistics are accumulated in double (two-pass variance) and stored as float.
#include <cmath>

#include "core/check.hpp"
#include "kernels/ops.hpp"

namespace seqpar {
namespace {
constexpr double kEps = 1e-5;
constexpr int64_t kParallelMin =
    32768;  // below this many elements threads cost more than they save
}  // namespace

template <class O, class I>
void layernorm_forward(O* out, float* mean, float* rstd, const I* inp, const float* w,
                       const float* b, int64_t N, int64_t C) {
  SP_CHECK(N > 0 && C > 0, "layernorm_forward: dims must be positive, got N=", N, " C=", C);
  SP_CHECK(out && mean && rstd && inp && w && b, "layernorm_forward: null pointer argument");
#pragma omp parallel for schedule(static) if (N * C > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const I* x = inp + r * C;
    double s = 0.0;
    for (int64_t c = 0; c < C; ++c) s += load(x[c]);
    const double mu = s / static_cast<double>(C);
    double ss = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const double dx = load(x[c]) - mu;
      ss += dx * dx;
    }
    const double rs = 1.0 / std::sqrt(ss / static_cast<double>(C) + kEps);
    // x̂ in double: with a float mean, x − μ would lose ulp(|μ|)/σ relative accuracy on
    // rows whose spread is small next to their mean.
    O* o = out + r * C;
    for (int64_t c = 0; c < C; ++c)
      store(o[c], static_cast<float>((load(x[c]) - mu) * rs) * w[c] + b[c]);
    mean[r] = static_cast<float>(mu);
    rstd[r] = static_cast<float>(rs);
  }
}

template <class S>
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const S* inp,
                        const float* w, const float* mean, const float* rstd, int64_t N,
                        int64_t C) {
  SP_CHECK(N > 0 && C > 0, "layernorm_backward: dims must be positive, got N=", N, " C=", C);
  SP_CHECK(dinp && dw && db && dout && inp && w && mean && rstd,
           "layernorm_backward: null pointer argument");
  // dx: rows are independent.
#pragma omp parallel for schedule(static) if (N * C > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const S* x = inp + r * C;
    const float* dy = dout + r * C;
    const float mu = mean[r], rs = rstd[r];
    double g_sum = 0.0, gx_sum = 0.0;
    for (int64_t c = 0; c < C; ++c) {
      const float g = w[c] * dy[c];
      g_sum += g;
      gx_sum += static_cast<double>(g) * ((load(x[c]) - mu) * rs);
    }
    const float g_mean = static_cast<float>(g_sum / static_cast<double>(C));
    const float gx_mean = static_cast<float>(gx_sum / static_cast<double>(C));
    float* dx = dinp + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (load(x[c]) - mu) * rs;
      dx[c] += rs * (w[c] * dy[c] - g_mean - xhat * gx_mean);
    }
  }
  // dw, db: reductions over rows. Columns are split into fixed chunks and each chunk walks
  // the rows in order, so the result does not depend on the thread count.
  constexpr int64_t kChunk = 64;
  const int64_t n_chunks = (C + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (N * C > kParallelMin && n_chunks > 1)
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t c0 = ch * kChunk;
    const int64_t len = (C - c0 < kChunk) ? C - c0 : kChunk;
    double pw[kChunk] = {}, pb[kChunk] = {};
    for (int64_t r = 0; r < N; ++r) {
      const S* x = inp + r * C + c0;
      const float* dy = dout + r * C + c0;
      const float mu = mean[r], rs = rstd[r];
      for (int64_t j = 0; j < len; ++j) {
        pw[j] += static_cast<double>(dy[j]) * ((load(x[j]) - mu) * rs);
        pb[j] += dy[j];
      }
    }
    for (int64_t j = 0; j < len; ++j) {
      dw[c0 + j] += static_cast<float>(pw[j]);
      db[c0 + j] += static_cast<float>(pb[j]);
    }
  }
}

template void layernorm_forward(float*, float*, float*, const float*, const float*, const float*,
                                int64_t, int64_t);
template void layernorm_forward(bf16*, float*, float*, const bf16*, const float*, const float*,
                                int64_t, int64_t);
template void layernorm_forward(float*, float*, float*, const bf16*, const float*, const float*,
                                int64_t, int64_t);
template void layernorm_backward(float*, float*, float*, const float*, const float*, const float*,
                                 const float*, const float*, int64_t, int64_t);
template void layernorm_backward(float*, float*, float*, const float*, const bf16*, const float*,
                                 const float*, const float*, int64_t, int64_t);

}  // namespace seqpar
