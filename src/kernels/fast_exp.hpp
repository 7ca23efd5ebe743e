// exp for float that the compiler vectorises (glibc's expf is a scalar call unless the
// build uses -ffast-math, which this project does not): the row passes of the fused
// cross-entropy spend their time here, and the SIMD form is ~10× faster per element.
//
//   e^x = 2^n · e^r,  n = round(x·log₂e),  r = x − n·ln2 (Cody–Waite: ln2 in two parts, so r
//   is exact to ~1 ulp), |r| ≤ ln2/2;  e^r = 1 + r + r²·P(r), P the Cephes degree-5 minimax
//   polynomial;  2^n built in the exponent bits.
// Accuracy: ≤ 2 ulp of the exact e^x on [−87.33, 88] (tests/test_llama_ops.cpp checks it).
// x is clamped to [−88, 88] first. n = −127 (x < −87.68, e^x < 2⁻¹²⁶·0.71) gives exponent
// bits 0, so the result is exactly 0 there (expf gives subnormals below 1.2e-38); x > 88
// gives e^88. NaN propagates.
// Branch-free on purpose: selects written as `x < lo ? lo : x` and an integer clamp
// if-convert, so GCC vectorises loops calling this even under an `omp simd reduction`
// (a `cond ? 0 : p·2ⁿ` on the result did not, and left the loop scalar).
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace seqpar {

inline float exp_simd(float x) {
  constexpr float kLo = -88.0f, kHi = 88.0f;
  float xc = x < kLo ? kLo : x;
  xc = xc > kHi ? kHi : xc;
  const float n = std::nearbyint(xc * 1.44269504088896341f);  // in [−127, 127]
  float r = std::fma(n, -0.693145751953125f, xc);             // ln2 high part (exact times n)
  r = std::fma(n, -1.428606765330187045e-6f, r);              // ln2 low part
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r) + 1.0f;
  const int32_t biased = std::max(static_cast<int32_t>(n) + 127, 0);  // 0: the float 0
  return p * std::bit_cast<float>(biased << 23);
}

}  // namespace seqpar
