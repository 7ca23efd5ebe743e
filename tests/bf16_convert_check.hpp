// The bulk bf16 conversions of core/bf16.hpp (whatever ISA path this translation unit was
// compiled with) against the scalar reference bf16_bits_ref. Included by test_bf16.cpp (the
// build's -march) and by tests/isa/bf16_isa_module.cpp (built again for -march=x86-64,
// haswell and skylake-avx512, so the scalar, AVX2 and AVX-512F paths are checked on this
// machine too). No gtest here: the ISA module must not share code with the test binary
// that loads it (tests/isa/test_bf16_isa.cpp says why).
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "core/bf16.hpp"

namespace seqpar::bf16_check {

// Every upper half (sign, exponent, top mantissa) with lower halves that hit each rounding
// case: exact, just below / at / just above the tie, and the largest.
inline std::vector<float> patterns() {
  const uint32_t lows[] = {0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234, 0xC000};
  std::vector<float> v;
  v.reserve(65536 * 8);
  for (uint32_t hi = 0; hi < 65536; ++hi)
    for (uint32_t lo : lows) v.push_back(std::bit_cast<float>((hi << 16) | lo));
  return v;
}

// "" when to_bf16 agrees bit for bit with bf16_bits_ref on every pattern and to_float widens
// every result exactly; else the first disagreements (at most 5 of each kind) and the count.
inline std::string bulk_mismatches() {
  const std::vector<float> x = patterns();
  std::ostringstream out;
  // Odd length and an offset start: the vector loop and the scalar tail both run.
  for (size_t off : {size_t{0}, size_t{3}}) {
    const int64_t n = int64_t(x.size() - off - 5);
    std::vector<bf16> h(static_cast<size_t>(n));
    to_bf16(h.data(), x.data() + off, n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; ++i)
      if (h[size_t(i)].bits != bf16_bits_ref(x[off + size_t(i)]) && bad++ < 5)
        out << bf16_isa() << ": bits of " << std::hex << std::bit_cast<uint32_t>(x[off + size_t(i)])
            << " → " << h[size_t(i)].bits << ", reference " << bf16_bits_ref(x[off + size_t(i)])
            << std::dec << "\n";
    if (bad > 0)
      out << bf16_isa() << ": " << bad << " of " << n << " narrowed wrong (offset " << off << ")\n";
    std::vector<float> back(static_cast<size_t>(n));
    to_float(back.data(), h.data(), n);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n; ++i)
      if (std::bit_cast<uint32_t>(back[size_t(i)]) != uint32_t(h[size_t(i)].bits) << 16 &&
          wrong++ < 5)
        out << bf16_isa() << " widening at " << i << ": " << std::hex
            << std::bit_cast<uint32_t>(back[size_t(i)]) << ", expected "
            << (uint32_t(h[size_t(i)].bits) << 16) << std::dec << "\n";
    if (wrong > 0) out << bf16_isa() << ": " << wrong << " of " << n << " widened wrong\n";
  }
  return out.str();
}

}  // namespace seqpar::bf16_check
