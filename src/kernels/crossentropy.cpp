// Softmax cross-entropy over rows of logits (N, V), max-subtracted so large logits do not
// overflow:  lse = m + log Σ_j exp(z_j − m),  m = max_j z_j;  loss = lse − z_target.
// Backward recomputes lse (nothing is saved) and adds (softmax(z) − onehot)·dloss.
// Rows with target < 0 are ignored: loss 0, no gradient.
#include <cmath>

#include "core/check.hpp"
#include "kernels/ops.hpp"

namespace seqpar {
namespace {

constexpr int64_t kParallelMin = 32768;

void check_targets(const int32_t* targets, int64_t N, int64_t V, const char* who) {
  // On one thread, before any parallel region: an exception must not leave OpenMP.
  for (int64_t i = 0; i < N; ++i) {
    SP_CHECK(targets[i] < V, who, ": target at index ", i, " is ", targets[i], ", expected in [0, ",
             V, ") or negative (ignored)");
  }
}

// log Σ_j exp(z_j) of one row, max-subtracted, summed in double.
float row_logsumexp(const float* z, int64_t V) {
  float m = z[0];
  for (int64_t j = 1; j < V; ++j) m = z[j] > m ? z[j] : m;
  double s = 0.0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(z[j] - m);
  return static_cast<float>(static_cast<double>(m) + std::log(s));
}

}  // namespace

void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N,
                          int64_t V) {
  SP_CHECK(N > 0 && V > 0, "crossentropy_forward: dims must be positive, got N=", N, " V=", V);
  SP_CHECK(losses && logits && targets, "crossentropy_forward: null losses/logits/targets");
  check_targets(targets, N, V, "crossentropy_forward");
#pragma omp parallel for schedule(static) if (N * V > kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] < 0) {
      losses[i] = 0.0f;
      continue;
    }
    const float* z = logits + i * V;
    losses[i] = row_logsumexp(z, V) - z[targets[i]];
  }
}

void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                           const float* dlosses, int64_t N, int64_t V) {
  SP_CHECK(N > 0 && V > 0, "crossentropy_backward: dims must be positive, got N=", N, " V=", V);
  SP_CHECK(dlogits && logits && targets && dlosses,
           "crossentropy_backward: null dlogits/logits/targets/dlosses");
  check_targets(targets, N, V, "crossentropy_backward");
#pragma omp parallel for schedule(static) if (N * V > kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    if (targets[i] < 0) continue;
    const float* z = logits + i * V;
    float* dz = dlogits + i * V;
    const float lse = row_logsumexp(z, V);
    const float dl = dlosses[i];
    for (int64_t j = 0; j < V; ++j) dz[j] += std::exp(z[j] - lse) * dl;
    dz[targets[i]] -= dl;
  }
}

}  // namespace seqpar
