// core/bf16.hpp's bulk conversions compiled for one ISA (-march=x86-64, haswell or
// skylake-avx512, tests/CMakeLists.txt), in a shared module of its own that
// test_bf16_isa.cpp loads only once the CPU has been found to have that ISA. Everything
// here is hidden (-fvisibility=hidden) but the two entry points, so nothing of this module
// stands in for a function of the test binary, and the binary runs none of its code
// before the check.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <string>

#include "../bf16_convert_check.hpp"

#define SEQPAR_MODULE_API extern "C" __attribute__((visibility("default")))

// The conversion path this module was compiled with ("scalar", "avx2", "avx512f", ...).
SEQPAR_MODULE_API const char* seqpar_bf16_isa_path() { return seqpar::bf16_isa(); }

// Runs the bulk check (bf16_check::bulk_mismatches); copies its report, NUL-terminated and
// cut to n bytes, into `report`. Returns 1 when every conversion agrees, else 0.
SEQPAR_MODULE_API int seqpar_bf16_isa_check(char* report, size_t n) {
  const std::string r = seqpar::bf16_check::bulk_mismatches();
  if (n > 0) {
    const size_t k = std::min(r.size(), n - 1);
    std::memcpy(report, r.data(), k);
    report[k] = '\0';
  }
  return r.empty() ? 1 : 0;
}
