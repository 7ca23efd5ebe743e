// Small helpers shared by the tests (single-process and multi-rank): whole-file reads and
// writes, a temporary directory, the normalised error fast paths are compared by, and an
// expectation that a call throws with given words in its message.
#pragma once
#include <gtest/gtest.h>
#include <stdlib.h>  // mkdtemp

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/check.hpp"

namespace seqpar::test {

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  EXPECT_TRUE(f.good()) << p;
  return std::string(std::istreambuf_iterator<char>(f), {});
}

inline void spit(const std::filesystem::path& p, const std::string& s) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(s.data(), static_cast<std::streamsize>(s.size()));
  ASSERT_TRUE(f.good()) << p;
}

// A new, empty directory $TMPDIR/seqpar_test_<tag>_XXXXXX, removed with all it holds when
// this goes out of scope. It is the path (dir / "x.tok", dir.string()). A test fixture
// holds one as a member: a fresh directory for every test, gone even when the test fails.
class TempDir : public std::filesystem::path {
 public:
  explicit TempDir(const std::string& tag) {
    std::string t =
        (std::filesystem::temp_directory_path() / ("seqpar_test_" + tag + "_XXXXXX")).string();
    if (mkdtemp(t.data()) == nullptr)
      throw std::runtime_error("mkdtemp " + t + ": " + std::strerror(errno));
    std::filesystem::path::operator=(t);
  }
  ~TempDir() {
    std::error_code ec;  // never throw from a destructor; a leftover in /tmp is harmless
    std::filesystem::remove_all(*this, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// max|a − b| / max|b| (the denominator floored at 1e-30): the error of `a` relative to the
// scale of the reference b, elementwise errors of small entries counting at the scale of
// the largest. A NaN or ±∞ in `a` gives +∞ (std::max would drop a NaN).
template <class T>
double rel_err(const float* a, const T* b, size_t n) {
  double num = 0.0, den = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return num / den;
}
template <class T>
double rel_err(const float* a, const std::vector<T>& b) {  // a: b.size() floats
  return rel_err(a, b.data(), b.size());
}
template <class T>
double rel_err(const std::vector<float>& a, const std::vector<T>& b) {
  EXPECT_EQ(a.size(), b.size()) << "rel_err of tensors of different sizes";
  return rel_err(a.data(), b.data(), std::min(a.size(), b.size()));
}

// Expects `fn` to throw E (seqpar::Error by default) whose message contains every one of
// `words`; another exception type fails the test.
template <class E = Error, class Fn>
void expect_error(Fn fn, std::initializer_list<std::string> words) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning '" << *words.begin() << "'";
  } catch (const E& e) {
    std::string m = e.what();
    for (const std::string& w : words)
      EXPECT_NE(m.find(w), std::string::npos) << "'" << w << "' not in: " << m;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

}  // namespace seqpar::test
