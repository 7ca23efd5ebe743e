// Opening a token file: what the body checksum costs (issue 17, docs/data.md "Measured").
//
//   bench_token_file [tokens=500000000] [V=50000] [path=/tmp/seqpar_bench.tok] [iters=5] [keep]
//
// Writes a synthetic token file of `tokens` random ids below V in documents of 1000 tokens
// (uint16 for V <= 65536: 500 M tokens are 1.0 GB) with TokenFileWriter, which checksums
// the body as it streams, then reports, from the page cache (the file was just written):
//   open + validate   TokenFile(path): header, body checksum (XXH64) and the scan for
//                     tokens >= V in one pass, document table, EOS of every document
//   open, no scan     Options{.scan_body = false}: header and document table only
//   XXH64 alone       xxh64 of the mapped body, the hash's share of the first figure
// and the same three for data/kjv-bpe8k.tok when it exists. Times are the best of `iters`.
// The synthetic file is removed at the end, unless the last argument is "keep".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/file.hpp"
#include "core/xxh64.hpp"
#include "data/token_file.hpp"

using namespace seqpar;
using Clock = std::chrono::steady_clock;

namespace {

template <class Fn>
double best_of(int iters, Fn fn) {
  double best = 1e30;
  for (int i = 0; i < iters; ++i) {
    const auto t0 = Clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

void report(const std::string& path, int iters) {
  uint64_t n = 0, sum = 0;
  const double open = best_of(iters, [&] {
    TokenFile f(path);
    n = f.num_tokens();
  });
  const double header = best_of(iters, [&] { TokenFile f(path, {.scan_body = false}); });
  MappedFile m(path, "token file");
  const double hash = best_of(iters, [&] { sum = xxh64(m.data() + 64, m.size() - 64); });
  const double gb = double(m.size()) / 1e9;
  std::printf("%s: %.3f GB, %llu tokens (body XXH64 %016llx)\n", path.c_str(), gb,
              (unsigned long long)n, (unsigned long long)sum);
  std::printf("  open + validate  %9.2f ms  %6.1f GB/s\n", open * 1e3, gb / open);
  std::printf("  open, no scan    %9.2f ms\n", header * 1e3);
  std::printf("  XXH64 alone      %9.2f ms  %6.1f GB/s\n", hash * 1e3, gb / hash);
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t tokens = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 500000000ull;
  const uint32_t V = argc > 2 ? uint32_t(std::strtoul(argv[2], nullptr, 10)) : 50000;
  const std::string path = argc > 3 ? argv[3] : "/tmp/seqpar_bench.tok";
  const int iters = argc > 4 ? std::atoi(argv[4]) : 5;
  const bool keep = argc > 5 && std::string(argv[5]) == "keep";
  try {
    {
      const auto t0 = Clock::now();
      TokenFileWriter w(path, V, 0x1234, int32_t(V - 1));
      std::mt19937 rng(1);
      std::vector<int32_t> doc(999);
      for (uint64_t done = 0; done < tokens; done += doc.size() + 1) {
        doc.resize(size_t(std::min<uint64_t>(999, tokens - done - 1)));
        for (auto& t : doc) t = int32_t(rng() % (V - 1));
        w.add_document(doc.data(), doc.size());
      }
      w.finish();
      std::printf("wrote %s in %.1f s\n", path.c_str(),
                  std::chrono::duration<double>(Clock::now() - t0).count());
    }
    report(path, iters);
    if (!keep) std::filesystem::remove(path);
    const std::string kjv = std::string(SEQPAR_SOURCE_DIR) + "/data/kjv-bpe8k.tok";
    if (std::filesystem::exists(kjv)) report(kjv, iters * 20);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_token_file: %s\n", e.what());
    std::filesystem::remove(path);
    return 1;
  }
  return 0;
}
