// bf16 storage (core/bf16.hpp): the rounding rule on hand-picked values, the build's bulk
// conversion path against the scalar reference, and every kernel that reads or writes a
// storage type S run with S = bf16 against the double references of naive_ops.hpp.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "bf16_convert_check.hpp"
#include "core/bf16.hpp"

namespace seqpar {
namespace {

uint16_t bits(float f) { return to_bf16(f).bits; }
float f32(uint32_t u) { return std::bit_cast<float>(u); }

TEST(Bf16, RoundsToNearestTiesToEven) {
  EXPECT_EQ(bits(1.0f), 0x3F80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(bits(f32(0x3F808000)), 0x3F80);
  // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
  EXPECT_EQ(bits(f32(0x3F818000)), 0x3F82);
  EXPECT_EQ(bits(f32(0x3F808001)), 0x3F81);  // just above the tie: up
  EXPECT_EQ(bits(f32(0x3F807FFF)), 0x3F80);  // just below: down
  EXPECT_EQ(bits(-1.0f), 0xBF80);
  EXPECT_EQ(bits(f32(0xBF818000)), 0xBF82);  // sign-magnitude: the same on negatives
  // The carry of a mantissa of ones runs into the exponent: 2 − 2^-9·… rounds to 2.
  EXPECT_EQ(bits(f32(0x3FFFFFFF)), 0x4000);
}

TEST(Bf16, InfNanOverflowAndSubnormals) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(bits(inf), 0x7F80);
  EXPECT_EQ(bits(-inf), 0xFF80);
  EXPECT_EQ(bits(std::numeric_limits<float>::max()), 0x7F80);  // rounds past bf16's max: inf
  EXPECT_EQ(bits(f32(0x7F7F7FFF)), 0x7F7F);                     // bf16's max stays finite
  // NaN stays NaN (quiet, sign kept), including payloads whose rounding would carry into inf
  // or into the sign.
  for (uint32_t u : {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFF800001u, 0xFFFFFFFFu}) {
    const float back = to_float(to_bf16(f32(u)));
    EXPECT_TRUE(std::isnan(back)) << std::hex << u;
    EXPECT_EQ(std::signbit(back), bool(u >> 31)) << std::hex << u;
    EXPECT_EQ(bits(f32(u)) & 0x0040, 0x0040) << "quiet bit, " << std::hex << u;
  }
  // Subnormals flush to a zero of the same sign (what VCVTNEPS2BF16 does).
  EXPECT_EQ(bits(f32(0x00000001)), 0x0000);
  EXPECT_EQ(bits(f32(0x007FFFFF)), 0x0000);
  EXPECT_EQ(bits(f32(0x807FFFFF)), 0x8000);
  EXPECT_EQ(bits(f32(0x00800000)), 0x0080);  // the smallest normal stays
  EXPECT_EQ(bits(0.0f), 0x0000);
  EXPECT_EQ(bits(-0.0f), 0x8000);
}

TEST(Bf16, RelativeErrorIsAtMostHalfAnUlp) {
  // |bf16(x) − x| ≤ 2^-9·|x| for normal x: 8 significant bits, round to nearest.
  for (float x : {3.14159265f, -2.71828f, 1e-20f, 6.02e23f, 0.1f, 65504.0f}) {
    EXPECT_LE(std::fabs(to_float(to_bf16(x)) - x), std::ldexp(std::fabs(x), -9)) << x;
  }
}

TEST(Bf16, BulkConversionsMatchTheScalarReference) {
  std::printf("bf16 conversion path of this build: %s\n", bf16_isa());
  bf16_check::check_bulk_matches_reference();
}

}  // namespace
}  // namespace seqpar
