// Elementwise and gather/scatter kernels: GELU (tanh form), residual add, token embedding,
// rotary position embedding (RoPE) and dropout keyed by global coordinates.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.hpp"
#include "kernels/ops.hpp"

namespace seqpar {
namespace {
// Below this many elements a loop runs on the calling thread: a parallel region costs
// a few microseconds, more than the work it would split.
constexpr int64_t kParallelMin = 32768;
}  // namespace

// ---- GELU ---------------------------------------------------------------------------
// Same float operation order as PyTorch's CPU gelu(approximate="tanh"):
//   y  = 0.5·x·(1 + tanh(β·(x + κx³))),  β = √(2/π), κ = 0.044715
//   y' = 0.5·(1 + tanh(u)) + 0.5·x·(1 − tanh²(u))·β·(1 + 3κx²),  u = β·(x + κx³)
namespace {
constexpr float kGeluBeta = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluKappa = 0.044715f;
}  // namespace

template <class S>
void gelu_forward(S* out, const S* inp, int64_t n) {
  SP_CHECK(n > 0, "gelu_forward: n must be positive, got ", n);
  SP_CHECK(out && inp, "gelu_forward: null out/inp");
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float x = load(inp[i]);
    const float inner = kGeluBeta * (x + kGeluKappa * (x * x * x));
    store(out[i], 0.5f * x * (1.0f + std::tanh(inner)));
  }
}

template <class S>
void gelu_backward(float* dinp, const S* inp, const float* dout, int64_t n) {
  SP_CHECK(n > 0, "gelu_backward: n must be positive, got ", n);
  SP_CHECK(dinp && inp && dout, "gelu_backward: null dinp/inp/dout");
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    const float x = load(inp[i]);
    const float x_sq = x * x;
    const float inner = kGeluBeta * (x + kGeluKappa * (x_sq * x));
    const float t = std::tanh(inner);
    const float left_derivative = 0.5f * (1.0f + t);
    const float right_derivative =
        0.5f * x * (1.0f - t * t) * (kGeluBeta * (1.0f + 3.0f * kGeluKappa * x_sq));
    dinp[i] += dout[i] * (left_derivative + right_derivative);
  }
}

// ---- residual -----------------------------------------------------------------------
template <class S>
void residual_forward(S* out, const S* a, const S* b, int64_t n) {
  SP_CHECK(n > 0, "residual_forward: n must be positive, got ", n);
  SP_CHECK(out && a && b, "residual_forward: null out/a/b");
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) store(out[i], load(a[i]) + load(b[i]));
}

void residual_backward(float* da, float* db, const float* dout, int64_t n) {
  SP_CHECK(n > 0, "residual_backward: n must be positive, got ", n);
  SP_CHECK(da && db && dout, "residual_backward: null da/db/dout");
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

// ---- token embedding ----------------------------------------------------------------
template <class S>
void embedding_forward(S* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C,
                       int64_t V) {
  SP_CHECK(N > 0 && C > 0 && V > 0, "embedding_forward: dims must be positive, got N=", N, " C=", C,
           " V=", V);
  SP_CHECK(out && tokens && wte, "embedding_forward: null out/tokens/wte");
  // Validate first, on one thread: an exception must not leave an OpenMP region.
  for (int64_t i = 0; i < N; ++i) {
    SP_CHECK(tokens[i] >= 0 && tokens[i] < V, "embedding_forward: token at position ", i, " is ",
             tokens[i], ", expected in [0, ", V, ")");
  }
#pragma omp parallel for schedule(static) if (N * C > kParallelMin)
  for (int64_t i = 0; i < N; ++i) {
    convert(out + i * C, wte + static_cast<int64_t>(tokens[i]) * C, C);
  }
}

void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C) {
  SP_CHECK(N > 0 && C > 0, "embedding_backward: dims must be positive, got N=", N, " C=", C);
  SP_CHECK(dwte && dout && tokens, "embedding_backward: null dwte/dout/tokens");
  for (int64_t i = 0; i < N; ++i) {
    SP_CHECK(tokens[i] >= 0, "embedding_backward: token at position ", i, " is ", tokens[i],
             ", expected >= 0");
  }
  // Repeated tokens add into the same row, so rows cannot be split across threads without
  // races. Columns are split instead: each chunk scatters all rows in order, which keeps
  // the summation order (and the result) independent of the thread count.
  constexpr int64_t kChunk = 64;
  const int64_t n_chunks = (C + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (N * C > kParallelMin && n_chunks > 1)
  for (int64_t ch = 0; ch < n_chunks; ++ch) {
    const int64_t c0 = ch * kChunk;
    const int64_t len = (C - c0 < kChunk) ? C - c0 : kChunk;
    for (int64_t i = 0; i < N; ++i) {
      float* d = dwte + static_cast<int64_t>(tokens[i]) * C + c0;
      const float* g = dout + i * C + c0;
      for (int64_t j = 0; j < len; ++j) d[j] += g[j];
    }
  }
}

// ---- rotary position embedding --------------------------------------------------------
// Pair i of a head, (x[2i], x[2i+1]), rotates by φ = pos·θ^(−2i/d):
//   forward  (R(φ)):  x0' = x0·cosφ − x1·sinφ,   x1' = x0·sinφ + x1·cosφ
//   backward (R(φ)ᵀ = R(−φ)), applied to the gradient in place.
// φ is formed and reduced in double: at pos ~ 1e5 a float angle would already be off by
// ~1e-2 rad. pos is (T), shared by every batch row, or (B, ·) per row (pos_bstride > 0).
namespace {
// One token's rotation: pairs (v[2i], v[2i+1]) of each of its nh heads by the angles
// whose cos and sign·sin cs holds.
template <class S>
inline void rope_token(S* tok, const float* cs, int64_t nh, int64_t d) {
  const int64_t half = d / 2;
  for (int64_t h = 0; h < nh; ++h) {
    S* v = tok + h * d;
    for (int64_t i = 0; i < half; ++i) {
      const float c = cs[2 * i], s = cs[2 * i + 1];
      const float x0 = load(v[2 * i]), x1 = load(v[2 * i + 1]);
      store(v[2 * i], x0 * c - x1 * s);
      store(v[2 * i + 1], x0 * s + x1 * c);
    }
  }
}

// m·cos φ and sign·m·sin φ, in double before the rounding (m = 1 leaves them unchanged).
void rope_angles(float* cs, int64_t p, const RopeFreqs& f, float sign) {
  const std::vector<double>& inv_freq = f.inv_freq;
  for (size_t i = 0; i < inv_freq.size(); ++i) {
    const double phi = static_cast<double>(p) * inv_freq[i];
    cs[2 * i] = static_cast<float>(f.mscale * std::cos(phi));
    cs[2 * i + 1] = sign * static_cast<float>(f.mscale * std::sin(phi));
  }
}

template <class S>
void rope_apply(S* x, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                int64_t stride, const RopeFreqs& f, int64_t pos_bstride, float sign,
                const char* who) {
  SP_CHECK(B > 0 && T > 0 && nh > 0 && d > 0, who, ": dims must be positive, got B=", B, " T=", T,
           " nh=", nh, " d=", d);
  SP_CHECK(d % 2 == 0, who, ": head dim d must be even for pairwise rotation, got ", d);
  SP_CHECK(stride >= nh * d, who, ": token stride ", stride, " is smaller than nh·d = ", nh * d);
  SP_CHECK(int64_t(f.inv_freq.size()) == d / 2, who, ": ", f.inv_freq.size(),
           " frequencies, expected d/2 = ", d / 2);
  SP_CHECK(pos_bstride == 0 || pos_bstride >= T, who, ": position batch stride ", pos_bstride,
           " must be 0 (shared positions) or at least T=", T);
  SP_CHECK(x && pos, who, ": null x/pos");
  const int64_t half = d / 2;
#pragma omp parallel if (B * T * nh * d > kParallelMin)
  {
    std::vector<float> cs(2 * half);  // cos, sin of the half angles for one token
    if (pos_bstride == 0) {
      // Shared positions: the angles of token t serve every batch row.
#pragma omp for schedule(static)
      for (int64_t t = 0; t < T; ++t) {
        rope_angles(cs.data(), pos[t], f, sign);
        for (int64_t b = 0; b < B; ++b) rope_token(x + (b * T + t) * stride, cs.data(), nh, d);
      }
    } else {
#pragma omp for schedule(static)
      for (int64_t r = 0; r < B * T; ++r) {
        const int64_t b = r / T, t = r % T;
        rope_angles(cs.data(), pos[b * pos_bstride + t], f, sign);
        rope_token(x + r * stride, cs.data(), nh, d);
      }
    }
  }
}
}  // namespace

template <class S>
void rope_forward(S* x, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                  int64_t stride, const RopeFreqs& f, int64_t pos_bstride) {
  rope_apply(x, pos, B, T, nh, d, stride, f, pos_bstride, 1.0f, "rope_forward");
}

void rope_backward(float* dx, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                   int64_t stride, const RopeFreqs& f, int64_t pos_bstride) {
  rope_apply(dx, pos, B, T, nh, d, stride, f, pos_bstride, -1.0f, "rope_backward");
}

namespace {
RopeFreqs unscaled(float theta, int64_t d, const char* who) {
  SP_CHECK(theta > 0.0f, who, ": theta must be positive, got ", theta);
  SP_CHECK(d > 0 && d % 2 == 0, who, ": head dim d must be even and positive, got ", d);
  return rope_frequencies(theta, d, RopeScalingParams{});
}
}  // namespace

template <class S>
void rope_forward(S* x, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                  int64_t stride, float theta, int64_t pos_bstride) {
  rope_forward(x, pos, B, T, nh, d, stride, unscaled(theta, d, "rope_forward"), pos_bstride);
}

void rope_backward(float* dx, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                   int64_t stride, float theta, int64_t pos_bstride) {
  rope_backward(dx, pos, B, T, nh, d, stride, unscaled(theta, d, "rope_backward"), pos_bstride);
}

// ---- dropout ------------------------------------------------------------------------
// keep(r, c) = u(seed, step, layer, site, row_key[r], c) ≥ p,  y = x·keep/(1−p).
// One Philox call yields the uniforms of 4 consecutive features (lanes c&3 of counter
// c>>2), exactly what rng_uniform() returns feature by feature.
namespace {
void check_dropout(const void* a, const void* b, const int64_t* row_key, int64_t N, int64_t C,
                   const DropoutKey& key, const char* who) {
  SP_CHECK(N > 0 && C > 0, who, ": dims must be positive, got N=", N, " C=", C);
  SP_CHECK(a && b && row_key, who, ": null pointer argument");
  SP_CHECK(key.p >= 0.0f && key.p < 1.0f, who, ": p must be in [0, 1), got ", key.p);
}

// y (N, C) = x·keep·scale, or y += x·keep·scale when Accumulate.
// Y, X: float, or S for the forward (in place on a stored activation).
template <bool Accumulate, class Y, class X>
void dropout_apply(Y* y, const X* x, const int64_t* row_key, int64_t N, int64_t C,
                   const DropoutKey& key) {
  const float scale = 1.0f / (1.0f - key.p);
#pragma omp parallel for schedule(static) if (N * C > kParallelMin / 4)
  for (int64_t r = 0; r < N; ++r) {
    const uint32_t token = static_cast<uint32_t>(row_key[r]);
    const X* xr = x + r * C;
    Y* yr = y + r * C;
    for (int64_t c0 = 0; c0 < C; c0 += 4) {
      const u32x4 bits = philox4x32(
          rng_counter(token, static_cast<uint32_t>(c0 >> 2), key.step, key.layer, 0, key.site),
          key.seed);
      const int64_t len = (C - c0 < 4) ? C - c0 : 4;
      for (int64_t j = 0; j < len; ++j) {
        const bool keep = u32_to_unit(bits[j]) >= key.p;
        const float v = keep ? load(xr[c0 + j]) * scale : 0.0f;
        if constexpr (Accumulate) {
          yr[c0 + j] += v;
        } else {
          store(yr[c0 + j], v);
        }
      }
    }
  }
}
}  // namespace

template <class S>
void dropout_forward(S* out, const S* inp, const int64_t* row_key, int64_t N, int64_t C,
                     const DropoutKey& key) {
  check_dropout(out, inp, row_key, N, C, key, "dropout_forward");
  if (key.p == 0.0f) {
    if (out != inp) std::memcpy(out, inp, N * C * sizeof(S));
    return;
  }
  dropout_apply<false>(out, inp, row_key, N, C, key);
}

void dropout_backward(float* dinp, const float* dout, const int64_t* row_key, int64_t N, int64_t C,
                      const DropoutKey& key) {
  check_dropout(dinp, dout, row_key, N, C, key, "dropout_backward");
  if (key.p == 0.0f) {
    const int64_t n = N * C;
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) dinp[i] += dout[i];
    return;
  }
  dropout_apply<true>(dinp, dout, row_key, N, C, key);
}

#define SEQPAR_INSTANTIATE(S)                                                                   \
  template void gelu_forward(S*, const S*, int64_t);                                            \
  template void gelu_backward(float*, const S*, const float*, int64_t);                         \
  template void residual_forward(S*, const S*, const S*, int64_t);                              \
  template void embedding_forward(S*, const int32_t*, const float*, int64_t, int64_t, int64_t); \
  template void rope_forward(S*, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                             float, int64_t);                                                   \
  template void rope_forward(S*, const int64_t*, int64_t, int64_t, int64_t, int64_t, int64_t,   \
                             const RopeFreqs&, int64_t);                                        \
  template void dropout_forward(S*, const S*, const int64_t*, int64_t, int64_t, const DropoutKey&);
SEQPAR_INSTANTIATE(float)
SEQPAR_INSTANTIATE(bf16)
#undef SEQPAR_INSTANTIATE

}  // namespace seqpar
