// SwiGLU, the LLaMA feed-forward activation (Shazeer 2020), on a fused gate|up projection:
// per row, gu = [g (F) | u (F)] and
//   out = silu(g)·u,  silu(g) = g·σ(g),  σ(g) = 1/(1 + e^(−g))
//   d g = dout·u·σ(g)·(1 + g·(1 − σ(g))),  d u = dout·silu(g)
// σ through 1/(1 + e^(−g)) saturates cleanly: e^(−g) = inf for g < −88 gives σ = 0 and
// silu = g·0 = 0, never inf·0.
#include <cmath>

#include "core/check.hpp"
#include "kernels/ops.hpp"

namespace seqpar {
namespace {
constexpr int64_t kParallelMin = 32768;  // elements; below this one thread is faster

inline float sigmoid(float g) { return 1.0f / (1.0f + std::exp(-g)); }
}  // namespace

template <class S>
void swiglu_forward(S* out, const S* gu, int64_t N, int64_t F) {
  SP_CHECK(N > 0 && F > 0, "swiglu_forward: dims must be positive, got N=", N, " F=", F);
  SP_CHECK(out && gu, "swiglu_forward: null out/gu");
#pragma omp parallel for schedule(static) if (N * F > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const S* g = gu + r * 2 * F;
    const S* u = g + F;
    S* o = out + r * F;
    for (int64_t c = 0; c < F; ++c) {
      const float gc = load(g[c]);
      store(o[c], gc * sigmoid(gc) * load(u[c]));
    }
  }
}

template <class S>
void swiglu_backward(float* dgu, const float* dout, const S* gu, int64_t N, int64_t F) {
  SP_CHECK(N > 0 && F > 0, "swiglu_backward: dims must be positive, got N=", N, " F=", F);
  SP_CHECK(dgu && dout && gu, "swiglu_backward: null dgu/dout/gu");
  SP_CHECK(static_cast<const void*>(dgu) != static_cast<const void*>(gu),
           "swiglu_backward: dgu must not alias gu (it is overwritten)");
#pragma omp parallel for schedule(static) if (N * F > kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    const S* g = gu + r * 2 * F;
    const S* u = g + F;
    const float* dy = dout + r * F;
    float* dg = dgu + r * 2 * F;
    float* du = dg + F;
    for (int64_t c = 0; c < F; ++c) {
      const float gc = load(g[c]), uc = load(u[c]);
      const float sg = sigmoid(gc);
      dg[c] = dy[c] * uc * sg * (1.0f + gc * (1.0f - sg));
      du[c] = dy[c] * gc * sg;
    }
  }
}

template void swiglu_forward(float*, const float*, int64_t, int64_t);
template void swiglu_forward(bf16*, const bf16*, int64_t, int64_t);
template void swiglu_backward(float*, const float*, const float*, int64_t, int64_t);
template void swiglu_backward(float*, const float*, const bf16*, int64_t, int64_t);

}  // namespace seqpar
