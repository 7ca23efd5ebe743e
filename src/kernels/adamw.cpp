// AdamW with the operation order of PyTorch's torch.optim.AdamW (single-tensor CPU path),
// so results can be compared with PyTorch fixtures to float rounding:
//   w ← w·(1 − lr·λ)                              (decoupled weight decay, first)
//   m ← m + (1−β1)·(g − m)                        (exp_avg.lerp_(g, 1−β1))
//   v ← β2·v + (1−β2)·g²
//   w ← w − (lr/(1−β1ᵗ)) · m / (√v/√(1−β2ᵗ) + ε)
// Scalars derived from the hyper-parameters are formed in double (as Python does) and
// rounded to float once, as PyTorch does when it applies them to float tensors.
// This equals the header's w −= lr·(m̂/(√v̂ + ε) + λ·w) up to rounding.
#include <cmath>

#include "core/check.hpp"
#include "kernels/ops.hpp"

namespace seqpar {
namespace {
constexpr int64_t kParallelMin = 32768;
}  // namespace

void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t t) {
  SP_CHECK(n > 0, "adamw_update: n must be positive, got ", n);
  SP_CHECK(t >= 1, "adamw_update: step count t must be >= 1, got ", t);
  SP_CHECK(w && g && m && v, "adamw_update: null w/g/m/v");
  SP_CHECK(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f,
           "adamw_update: betas must be in [0, 1), got ", beta1, ", ", beta2);
  const double td = static_cast<double>(t);
  const double bias_correction1 = 1.0 - std::pow(static_cast<double>(beta1), td);
  const double bias_correction2 = 1.0 - std::pow(static_cast<double>(beta2), td);
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  const float w1 = static_cast<float>(1.0 - static_cast<double>(beta1));  // lerp weight
  const float w2 = static_cast<float>(1.0 - static_cast<double>(beta2));
  const float step_size = static_cast<float>(static_cast<double>(lr) / bias_correction1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    float wi = w[i] * decay;
    // torch.lerp: weight < 0.5 → start + weight·(end − start); else end − (end − start)·(1 −
    // weight)
    const float mi = w1 < 0.5f ? m[i] + w1 * (gi - m[i]) : gi - (gi - m[i]) * (1.0f - w1);
    const float vi = v[i] * beta2 + w2 * gi * gi;
    const float denom = std::sqrt(vi) / bc2_sqrt + eps;
    wi += -step_size * (mi / denom);
    w[i] = wi;
    m[i] = mi;
    v[i] = vi;
  }
}

double sum_squares(const float* g, int64_t n) {
  SP_CHECK(n > 0, "sum_squares: n must be positive, got ", n);
  SP_CHECK(g, "sum_squares: null g");
  // Each g² is exact in double (24-bit mantissa squared fits in 53 bits); only the order
  // of the additions depends on the thread count, at the 1e-16 relative level.
  double acc = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : acc) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const double x = g[i];
    acc += x * x;
  }
  return acc;
}

void scale_inplace(float* g, int64_t n, float s) {
  SP_CHECK(n > 0, "scale_inplace: n must be positive, got ", n);
  SP_CHECK(g, "scale_inplace: null g");
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) g[i] *= s;
}

}  // namespace seqpar
