// bfloat16 storage: the upper 16 bits of an IEEE fp32 (1 sign, 8 exponent, 7 mantissa
// bits), so fp32 → bf16 is a rounding of the mantissa and bf16 → fp32 is exact (a shift).
// Used to STORE tensors (saved activations, strategy communication buffers); arithmetic
// always runs in fp32 (docs/precision.md).
//
// fp32 → bf16, the one rule every path below implements bit for bit (so a run gives the same
// numbers on an AVX-512 BF16, an AVX-512F, an AVX2 and a plain x86-64 build):
//  * round to nearest, ties to even:  bits = (u + 0x7FFF + ((u >> 16) & 1)) >> 16;
//  * NaN stays NaN, quieted and with its sign and top payload:  (u >> 16) | 0x0040;
//    ±inf stays ±inf (the rounding above leaves it alone), a finite value that rounds past
//    the largest bf16 becomes ±inf (the carry runs into the exponent, as IEEE RNE does);
//  * subnormal inputs (exponent field 0) become a zero of the same sign. This is what
//    VCVTNEPS2BF16 (AVX512_BF16) does in hardware; the other paths do the same so the
//    result never depends on the CPU. |x| < 2^−126 ≈ 1.2e−38 is far below anything an
//    activation resolves next to values of order 1.
// Compile-time dispatch (the build uses -march=native unless SEQPAR_NATIVE=OFF):
// __AVX512BF16__ → vcvtneps2bf16 (16 floats), else __AVX512F__ → the rule in 512-bit integer
// ops, else __AVX2__ → the same in 256-bit ops, else scalar. bf16 → fp32 widens and shifts.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>

#include "core/names.hpp"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace seqpar {

struct bf16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2);

// Storage precision of saved activations and strategy communication buffers.
enum class Precision { fp32, bf16 };
template <>
struct EnumNames<Precision> {
  static constexpr const char* what = "precision";
  static constexpr std::pair<Precision, const char*> table[] = {{Precision::fp32, "fp32"},
                                                                {Precision::bf16, "bf16"}};
};

// The scalar reference of the rule above, written without branches so loops that call it
// (the element-wise kernels' stores) vectorise.
inline uint16_t bf16_bits_ref(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x0040u;
  const uint32_t zero = (u >> 16) & 0x8000u;
  const bool is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  const bool is_sub = (u & 0x7F800000u) == 0;
  return uint16_t(is_nan ? nan : is_sub ? zero : rounded);
}

inline bf16 to_bf16(float f) { return bf16{bf16_bits_ref(f)}; }
inline float to_float(bf16 h) { return std::bit_cast<float>(uint32_t(h.bits) << 16); }

// Load / store through a storage type: kernels templated on S (float or bf16) read and
// write their tensors with these and compute in fp32.
inline float load(float x) { return x; }
inline float load(bf16 x) { return to_float(x); }
inline void store(float& dst, float v) { dst = v; }
inline void store(bf16& dst, float v) { dst = to_bf16(v); }

// Which conversion path this translation unit was compiled with.
inline const char* bf16_isa() {
#if defined(__AVX512BF16__)
  return "avx512bf16";
#elif defined(__AVX512F__)
  return "avx512f";
#elif defined(__AVX2__)
  return "avx2";
#else
  return "scalar";
#endif
}

// GCC 12 reports -Wmaybe-uninitialized inside avx512fintrin.h for the unmasked forms of
// vpmovzxwd / vpslld / vpmovdw (their pass-through operand is _mm512_undefined: GCC bug
// 105593, fixed in GCC 13); the code below never reads an undefined lane.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace detail {
#if defined(__AVX512F__) && !defined(__AVX512BF16__)
// The rule on 16 lanes: u (16 × u32) → 16 × u32 holding the bf16 bits.
inline __m512i bf16_round16(__m512i u) {
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
  const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7F800000));
  const __mmask16 is_sub =
      _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7F800000));  // exponent field 0
  const __m512i hi = _mm512_srli_epi32(u, 16);
  __m512i r =
      _mm512_mask_mov_epi32(rounded, is_sub, _mm512_and_si512(hi, _mm512_set1_epi32(0x8000)));
  return _mm512_mask_mov_epi32(r, is_nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x0040)));
}
#endif
#if defined(__AVX2__) && !defined(__AVX512F__)
inline __m256i bf16_round8(__m256i u) {
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF));
  // Signed compare is right here: abs and 0x7F800000 are both non-negative as int32.
  const __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F800000));
  const __m256i is_sub = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7F800000)),
                                            _mm256_setzero_si256());
  const __m256i hi = _mm256_srli_epi32(u, 16);
  __m256i r = _mm256_blendv_epi8(rounded, _mm256_and_si256(hi, _mm256_set1_epi32(0x8000)), is_sub);
  return _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x0040)), is_nan);
}
#endif
}  // namespace detail

// dst[i] = bf16(src[i]), i < n. dst and src must not overlap.
inline void to_bf16(bf16* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512BF16__)
  for (; i + 16 <= n; i += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), std::bit_cast<__m256i>(h));
  }
#elif defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512i r = detail::bf16_round16(_mm512_loadu_si512(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(r));
  }
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m256i r =
        detail::bf16_round8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    // Every lane is ≤ 0xFFFF, so the unsigned saturating pack is exact; it packs within
    // 128-bit halves, so the two 64-bit results are gathered into the low half.
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(p));
  }
#endif
  for (; i < n; ++i) dst[i] = to_bf16(src[i]);
}

// dst[i] = float(src[i]) (exact), i < n. dst and src must not overlap.
inline void to_float(float* dst, const bf16* src, int64_t n) {
  int64_t i = 0;
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512i w =
        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(w, 16));
  }
#elif defined(__AVX2__)
  for (; i + 8 <= n; i += 8) {
    const __m256i w =
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_slli_epi32(w, 16));
  }
#endif
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// Copies between storage types (a plain copy when they agree).
inline void convert(float* dst, const float* src, int64_t n) {
  if (dst != src) std::memmove(dst, src, sizeof(float) * size_t(n));
}
inline void convert(bf16* dst, const float* src, int64_t n) { to_bf16(dst, src, n); }
inline void convert(float* dst, const bf16* src, int64_t n) { to_float(dst, src, n); }

}  // namespace seqpar
