// Double-precision references for src/kernels/ops.hpp, written for obviousness rather than
// speed: one loop nest per formula, no parallelism, no tricks. Used only by tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numbers>
#include <random>
#include <vector>

#include "core/rng.hpp"
#include "kernels/ops.hpp"

namespace seqpar::naive {

// max|a − b| / max|b| over a tensor (max|a − b| when b is all zero). ±∞ must agree exactly
// (the LSE of a row that sees no key is −∞ in both); any NaN gives +∞, since std::max
// would drop it.
inline double norm_err(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i]) || std::isinf(a[i])) {
      if (a[i] != b[i]) return INFINITY;
      continue;
    }
    if (std::isnan(a[i]) || std::isnan(b[i])) return INFINITY;
    num = std::max(num, std::abs(double{a[i]} - b[i]));
    den = std::max(den, std::abs(double{b[i]}));
  }
  return den > 0 ? num / den : num;
}

// Document ids (B, L) of packed rows: row b cycles through the document lengths
// lens[b mod lens.size()] until L tokens are covered (the last document may be cut).
inline std::vector<int64_t> cycled_doc_ids(int B, int64_t L,
                                           const std::vector<std::vector<int64_t>>& lens) {
  std::vector<int64_t> ids(size_t(B) * L);
  for (int b = 0; b < B; ++b) {
    const auto& ls = lens[b % lens.size()];
    int64_t id = 0, left = ls[0];
    size_t k = 0;
    for (int64_t i = 0; i < L; ++i) {
      if (left == 0) ++id, k = (k + 1) % ls.size(), left = ls[k];
      ids[size_t(b) * L + i] = id;
      --left;
    }
  }
  return ids;
}

// out (M, N) = inp (M, K) · wᵀ (w is (N, K)) + bias (N, may be null)
inline void linear_forward(double* out, const double* inp, const double* w, const double* bias,
                           int64_t M, int64_t K, int64_t N) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? bias[n] : 0.0;
      for (int64_t k = 0; k < K; ++k) s += inp[m * K + k] * w[n * K + k];
      out[m * N + n] = s;
    }
  }
}

// One row of layernorm: y = (x − μ)/√(σ² + 1e-5)·w + b, biased σ².
inline void layernorm_row(double* y, double* mean, double* rstd, const double* x, const double* w,
                          const double* b, int64_t C) {
  double mu = 0.0;
  for (int64_t c = 0; c < C; ++c) mu += x[c];
  mu /= static_cast<double>(C);
  double var = 0.0;
  for (int64_t c = 0; c < C; ++c) var += (x[c] - mu) * (x[c] - mu);
  var /= static_cast<double>(C);
  const double rs = 1.0 / std::sqrt(var + 1e-5);
  for (int64_t c = 0; c < C; ++c) y[c] = (x[c] - mu) * rs * w[c] + b[c];
  if (mean) *mean = mu;
  if (rstd) *rstd = rs;
}

// One row of RMSNorm: y = x/√(mean(x²) + eps)·w.
inline void rmsnorm_row(double* y, double* rstd, const double* x, const double* w, int64_t C,
                        double eps) {
  double ms = 0.0;
  for (int64_t c = 0; c < C; ++c) ms += x[c] * x[c];
  ms /= static_cast<double>(C);
  const double rs = 1.0 / std::sqrt(ms + eps);
  for (int64_t c = 0; c < C; ++c) y[c] = x[c] * rs * w[c];
  if (rstd) *rstd = rs;
}

// SwiGLU of one (gate, up) pair: silu(g)·u, silu(g) = g/(1 + e^(−g)).
inline double swiglu(double g, double u) { return g / (1.0 + std::exp(-g)) * u; }

// gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
inline double gelu(double x) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}

// RoPE on x (B, T, nh, d) with token stride `stride`; pair i rotates by pos[t]·θ^(−2i/d).
inline void rope_forward(double* x, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                         int64_t stride, double theta) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < nh; ++h)
        for (int64_t i = 0; i < d / 2; ++i) {
          double* v = x + (b * T + t) * stride + h * d + 2 * i;
          const double phi = static_cast<double>(pos[t]) * std::pow(theta, -2.0 * i / d);
          const double x0 = v[0], x1 = v[1];
          v[0] = x0 * std::cos(phi) - x1 * std::sin(phi);
          v[1] = x0 * std::sin(phi) + x1 * std::cos(phi);
        }
}

// The dropout keep decision, straight from the header's definition.
inline bool dropout_keep(const DropoutKey& key, int64_t row_key, int64_t c) {
  return rng_uniform(key.seed, key.step, key.layer, key.site, static_cast<uint32_t>(row_key),
                     static_cast<uint32_t>(c)) >= key.p;
}

// loss = log Σ_j exp(z_j) − z_target (max-subtracted so exp never overflows); 0 if target < 0.
inline double crossentropy_row(const double* z, int32_t target, int64_t V) {
  if (target < 0) return 0.0;
  double m = z[0];
  for (int64_t j = 1; j < V; ++j) m = std::max(m, z[j]);
  double s = 0.0;
  for (int64_t j = 0; j < V; ++j) s += std::exp(z[j] - m);
  return m + std::log(s) - z[target];
}

// AdamW as torch.optim.AdamW documents it (decoupled decay first, then the Adam step).
inline void adamw_update(double* w, const double* g, double* m, double* v, int64_t n, double lr,
                         double beta1, double beta2, double eps, double wd, int64_t t) {
  for (int64_t i = 0; i < n; ++i) {
    w[i] *= 1.0 - lr * wd;
    m[i] = beta1 * m[i] + (1.0 - beta1) * g[i];
    v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i];
    const double mhat = m[i] / (1.0 - std::pow(beta1, static_cast<double>(t)));
    const double vhat = v[i] / (1.0 - std::pow(beta2, static_cast<double>(t)));
    w[i] -= lr * mhat / (std::sqrt(vhat) + eps);
  }
}

// Central differences: g[i] = (L(x + h·e_i) − L(x − h·e_i)) / 2h, where loss_at(i) evaluates
// (the part of) the double loss that x[i] influences, reading x as modified.
inline std::vector<double> fd_grad(std::vector<double>& x,
                                   const std::function<double(size_t)>& loss_at, double h) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double s = x[i];
    x[i] = s + h;
    const double lp = loss_at(i);
    x[i] = s - h;
    const double lm = loss_at(i);
    x[i] = s;
    g[i] = (lp - lm) / (2.0 * h);
  }
  return g;
}

// Normal(shift, scale²) floats from a fixed seed; the same float vector widened to double.
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f, float shift = 0.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = shift + scale * dist(gen);
  return v;
}
inline std::vector<double> to_d(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// a + b in double: what a backward that accumulates (+=) must leave in a gradient buffer
// that held a before it added b.
template <class T>
std::vector<double> plus(const std::vector<float>& a, const std::vector<T>& b) {
  std::vector<double> r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = static_cast<double>(a[i]) + b[i];
  return r;
}

}  // namespace seqpar::naive
