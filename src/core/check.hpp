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
  // Every rank of the job knows of this error and is unwinding with it (see
  // agree_or_throw in comm/): nobody is left waiting in a collective.
  bool agreed = false;
};

// A usage error: a flag, config value or shape the user chose that cannot run (the
// command line exits 2 for these, 1 for every other Error).
struct UsageError : Error {
  using Error::Error;
};

// Rank shown in error messages; -1 until an MPI communicator exists.
inline int& error_rank() {
  static int rank = -1;
  return rank;
}

namespace detail {
template <class E = Error, class... Args>
[[noreturn]] void fail(const char* file, int line, const char* cond, const Args&... args) {
  std::ostringstream os;
  if (error_rank() >= 0) os << "[rank " << error_rank() << "] ";
  os << file << ":" << line << ": ";
  if constexpr (sizeof...(Args) > 0) {
    (os << ... << args);
  } else {
    os << "check failed: " << cond;
  }
  throw E(os.str());
}
}  // namespace detail

}  // namespace seqpar

// SP_CHECK(cond, "q has ", rows, " rows, expected T=", T);
#define SP_CHECK(cond, ...)                                                        \
  do {                                                                             \
    if (!(cond)) ::seqpar::detail::fail(__FILE__, __LINE__, #cond, ##__VA_ARGS__); \
  } while (0)

#define SP_FAIL(...) ::seqpar::detail::fail(__FILE__, __LINE__, "", __VA_ARGS__)

// As SP_CHECK / SP_FAIL, throwing seqpar::UsageError (a value the user chose).
#define SP_CHECK_USAGE(cond, ...)                                                             \
  do {                                                                                        \
    if (!(cond))                                                                              \
      ::seqpar::detail::fail<::seqpar::UsageError>(__FILE__, __LINE__, #cond, ##__VA_ARGS__); \
  } while (0)
#define SP_FAIL_USAGE(...) \
  ::seqpar::detail::fail<::seqpar::UsageError>(__FILE__, __LINE__, "", __VA_ARGS__)
