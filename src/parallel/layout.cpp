#include "parallel/layout.hpp"

#include <algorithm>
#include <numeric>

#include "core/check.hpp"

namespace seqpar {

int64_t stripe_width(int64_t L, int N) {
  if (L % N == 0) return std::gcd(L / N, kStripe);  // even shards: T/c whole stripes each
  const int64_t cap = std::max<int64_t>(1, std::min<int64_t>(kStripe, L / N));
  int64_t c = 1;
  while (2 * c <= cap) c *= 2;
  return c;
}

void check_shardable(int64_t L, int N, ShardLayout) {
  SP_CHECK_USAGE(N >= 1, "sequence-parallel degree must be >= 1, got ", N);
  SP_CHECK_USAGE(L >= N, "sequence length L=", L,
                 " is shorter than the sequence-parallel degree sp=", N,
                 ": every rank needs at least one token; choose L >= ", N);
}

namespace {
// Start and length of part c when n tokens are cut into k parts differing by at most one.
int64_t part_begin(int64_t n, int64_t k, int64_t c) { return c * (n / k) + std::min(c, n % k); }
int64_t part_len(int64_t n, int64_t k, int64_t c) { return n / k + (c < n % k ? 1 : 0); }
}  // namespace

std::vector<int64_t> shard_positions(int64_t L, int N, int r, ShardLayout layout) {
  check_shardable(L, N, layout);
  SP_CHECK(r >= 0 && r < N, "rank ", r, " outside the sequence-parallel group of ", N);
  std::vector<int64_t> pos;
  pos.reserve(size_t(L / N + 1));
  auto add_part = [&](int64_t k, int64_t c) {
    const int64_t b = part_begin(L, k, c), n = part_len(L, k, c);
    for (int64_t i = 0; i < n; ++i) pos.push_back(b + i);
  };
  switch (layout) {
    case ShardLayout::contiguous:
      add_part(N, r);
      break;
    case ShardLayout::zigzag:
      add_part(2 * int64_t(N), r);
      add_part(2 * int64_t(N), 2 * int64_t(N) - 1 - r);
      break;
    case ShardLayout::striped: {
      const int64_t c = stripe_width(L, N);
      for (int64_t j0 = int64_t(r) * c; j0 < L; j0 += int64_t(N) * c)
        for (int64_t i = j0; i < std::min(L, j0 + c); ++i) pos.push_back(i);
      break;
    }
  }
  return pos;
}

int64_t shard_len(int64_t L, int N, int r, ShardLayout layout) {
  check_shardable(L, N, layout);
  switch (layout) {
    case ShardLayout::contiguous:
      return part_len(L, N, r);
    case ShardLayout::zigzag:
      return part_len(L, 2 * int64_t(N), r) + part_len(L, 2 * int64_t(N), 2 * int64_t(N) - 1 - r);
    case ShardLayout::striped:
      break;
  }
  return int64_t(shard_positions(L, N, r, layout).size());
}

int64_t max_shard_len(int64_t L, int N, ShardLayout layout) {
  int64_t m = 0;
  for (int r = 0; r < N; ++r) m = std::max(m, shard_len(L, N, r, layout));
  return m;
}

}  // namespace seqpar
