// core/bf16.hpp compiled for another ISA than the build's (see tests/CMakeLists.txt): the
// bulk conversions of that path agree bit for bit with the scalar reference.
#include <cstdio>

#include "../bf16_convert_check.hpp"

namespace seqpar {
namespace {

TEST(Bf16Isa, BulkConversionsMatchTheScalarReference) {
  std::printf("bf16 conversion path: %s\n", bf16_isa());
#if defined(__AVX512F__)
  if (!__builtin_cpu_supports("avx512f")) GTEST_SKIP() << "this CPU has no AVX-512F";
#elif defined(__AVX2__)
  if (!__builtin_cpu_supports("avx2")) GTEST_SKIP() << "this CPU has no AVX2";
#endif
  EXPECT_STREQ(bf16_isa(), SEQPAR_EXPECT_ISA);
  bf16_check::check_bulk_matches_reference();
}

}  // namespace
}  // namespace seqpar
