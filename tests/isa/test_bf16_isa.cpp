// core/bf16.hpp compiled for another ISA than the build's (see tests/CMakeLists.txt): the
// bulk conversions of that path agree bit for bit with the scalar reference.
//
// The code built for the ISA lives in a shared module (bf16_isa_module.cpp, built with
// -march=… and hidden symbols), loaded with dlopen() only after __builtin_cpu_supports()
// has found the ISA; this binary itself is built for plain x86-64. Compiling the test
// itself with -march=skylake-avx512, as before, let the compiler use AVX-512 anywhere in
// it: under AddressSanitizer the file's static initializer (gtest's registration of the
// test) poisoned its stack with an EVEX `vpbroadcastb`, which died with SIGILL on an AVX2
// CPU before the check could run; and inline functions (gtest's, the standard library's)
// compiled for the ISA could stand in for the binary's own copies at link time. A module
// shares no code with the binary and runs none before dlopen(). Without the ISA: a skip,
// with the reason (ctest shows it as skipped).
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string_view>

namespace seqpar {
namespace {

// Whether this CPU runs code built for SEQPAR_EXPECT_ISA.
bool cpu_has_expected_isa() {
  constexpr std::string_view isa = SEQPAR_EXPECT_ISA;
  if constexpr (isa == "avx512f") return __builtin_cpu_supports("avx512f");
  if constexpr (isa == "avx2") return __builtin_cpu_supports("avx2");
  return true;  // "scalar": plain x86-64
}

TEST(Bf16Isa, BulkConversionsMatchTheScalarReference) {
  if (!cpu_has_expected_isa())
    GTEST_SKIP() << "this CPU has no " << SEQPAR_EXPECT_ISA << ": the module built for it ("
                 << SEQPAR_ISA_MODULE << ") is not loaded";
  void* module = dlopen(SEQPAR_ISA_MODULE, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(module, nullptr) << "dlopen: " << dlerror();
  using PathFn = const char* (*)();
  using CheckFn = int (*)(char*, size_t);
  auto path = reinterpret_cast<PathFn>(dlsym(module, "seqpar_bf16_isa_path"));
  auto check = reinterpret_cast<CheckFn>(dlsym(module, "seqpar_bf16_isa_check"));
  ASSERT_NE(path, nullptr) << dlerror();
  ASSERT_NE(check, nullptr) << dlerror();
  std::printf("bf16 conversion path: %s\n", path());
  EXPECT_STREQ(path(), SEQPAR_EXPECT_ISA);
  char report[4096];
  EXPECT_EQ(check(report, sizeof report), 1) << report;
}

}  // namespace
}  // namespace seqpar
