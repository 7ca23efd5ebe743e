// Always-on checks (independent of NDEBUG). Three kinds of failure, three audiences:
//   SP_CHECK / SP_FAIL              seqpar::Error: a broken invariant, a bug. The message
//                                   carries the source location for the developer, relative
//                                   to the repository ("src/train/data.cpp:201: ...": the
//                                   build maps the source root away, CMakeLists.txt).
//   SP_CHECK_USAGE / SP_FAIL_USAGE  seqpar::UsageError: a flag, config value or shape the
//                                   user chose cannot run. The message is for the user: no
//                                   source location.
//   SP_CHECK_INPUT / SP_FAIL_INPUT  seqpar::InputError: something outside the program is
//                                   wrong: a missing or unreadable file, corrupt data, a
//                                   failed read or write. For the user: no source location.
// Once comm/ has set it, every message starts with the rank that failed: "[rank 3] ...".
// With a message, the check's condition is not repeated; without one, it is the message.
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

// An input error: a bad or missing file, corrupt data, an I/O failure. An Error (the
// command line exits 1), told apart so that its message carries no source location.
struct InputError : Error {
  using Error::Error;
};

// Rank shown in error messages; -1 until an MPI communicator exists.
inline int& error_rank() {
  static int rank = -1;
  return rank;
}

namespace detail {
// `file` null: a message for the user, without the source location.
template <class E = Error, class... Args>
[[noreturn]] void fail(const char* file, int line, const char* cond, const Args&... args) {
  std::ostringstream os;
  if (error_rank() >= 0) os << "[rank " << error_rank() << "] ";
  if (file) os << file << ":" << line << ": ";
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
#define SP_CHECK_USAGE(cond, ...)                                                                \
  do {                                                                                           \
    if (!(cond)) ::seqpar::detail::fail<::seqpar::UsageError>(nullptr, 0, #cond, ##__VA_ARGS__); \
  } while (0)
#define SP_FAIL_USAGE(...) ::seqpar::detail::fail<::seqpar::UsageError>(nullptr, 0, "", __VA_ARGS__)

// As SP_CHECK / SP_FAIL, throwing seqpar::InputError (a file or data from outside).
#define SP_CHECK_INPUT(cond, ...)                                                                \
  do {                                                                                           \
    if (!(cond)) ::seqpar::detail::fail<::seqpar::InputError>(nullptr, 0, #cond, ##__VA_ARGS__); \
  } while (0)
#define SP_FAIL_INPUT(...) ::seqpar::detail::fail<::seqpar::InputError>(nullptr, 0, "", __VA_ARGS__)
