// Always-on checks (independent of NDEBUG). A failed check throws seqpar::Error whose
// message carries file:line, the failed condition, a caller-supplied explanation and,
// once comm/ has set it, the MPI rank of the process that failed.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace seqpar {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Rank shown in error messages; -1 until an MPI communicator exists.
inline int& error_rank() {
  static int rank = -1;
  return rank;
}

namespace detail {
template <class... Args>
[[noreturn]] void fail(const char* file, int line, const char* cond, const Args&... args) {
  std::ostringstream os;
  if (error_rank() >= 0) os << "[rank " << error_rank() << "] ";
  os << file << ":" << line << ": ";
  if constexpr (sizeof...(Args) > 0) {
    (os << ... << args);
  } else {
    os << "check failed: " << cond;
  }
  throw Error(os.str());
}
}  // namespace detail

}  // namespace seqpar

// SP_CHECK(cond, "q has ", rows, " rows, expected T=", T);
#define SP_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) ::seqpar::detail::fail(__FILE__, __LINE__, #cond, ##__VA_ARGS__); \
  } while (0)

#define SP_FAIL(...) ::seqpar::detail::fail(__FILE__, __LINE__, "", __VA_ARGS__)
