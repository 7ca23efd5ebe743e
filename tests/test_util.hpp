// Small helpers shared by the single-process tests: whole-file reads and writes, and an
// expectation that a call throws with given words in its message.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>

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
