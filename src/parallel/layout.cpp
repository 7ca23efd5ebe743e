#include "parallel/layout.hpp"

#include <numeric>

#include "core/check.hpp"

namespace seqpar {

const char* layout_name(ShardLayout l) {
  switch (l) {
    case ShardLayout::contiguous: return "contiguous";
    case ShardLayout::zigzag: return "zigzag";
    case ShardLayout::striped: return "striped";
  }
  return "?";
}

int64_t stripe_width(int64_t L, int N) { return std::gcd(L / N, kStripe); }

ShardLayout parse_layout(const std::string& s) {
  if (s == "contiguous") return ShardLayout::contiguous;
  if (s == "zigzag") return ShardLayout::zigzag;
  if (s == "striped") return ShardLayout::striped;
  SP_FAIL_USAGE("unknown shard layout '", s, "' (expected contiguous, zigzag or striped)");
}

void check_shardable(int64_t L, int N, ShardLayout layout) {
  SP_CHECK_USAGE(N >= 1, "sequence-parallel degree must be >= 1, got ", N);
  SP_CHECK_USAGE(L >= 1, "sequence length must be >= 1, got ", L);
  const int64_t parts = layout == ShardLayout::zigzag ? 2 * int64_t(N) : N;
  SP_CHECK_USAGE(L % parts == 0, "sequence length L=", L, " does not divide into ", parts,
                 layout == ShardLayout::zigzag ? " zigzag chunks (2·sp)" : " shards (sp)",
                 " for sp=", N, "; choose L a multiple of ", parts);
}

std::vector<int64_t> shard_positions(int64_t L, int N, int r, ShardLayout layout) {
  check_shardable(L, N, layout);
  SP_CHECK(r >= 0 && r < N, "rank ", r, " outside the sequence-parallel group of ", N);
  std::vector<int64_t> pos;
  pos.reserve(L / N);
  if (layout == ShardLayout::contiguous) {
    const int64_t T = L / N;
    for (int64_t i = 0; i < T; ++i) pos.push_back(r * T + i);
  } else if (layout == ShardLayout::striped) {
    const int64_t c = stripe_width(L, N), stripes = L / c;
    for (int64_t j = r; j < stripes; j += N)
      for (int64_t i = 0; i < c; ++i) pos.push_back(j * c + i);
  } else {
    const int64_t c = L / (2 * N);
    for (int64_t i = 0; i < c; ++i) pos.push_back(r * c + i);
    for (int64_t i = 0; i < c; ++i) pos.push_back((2 * N - 1 - r) * c + i);
  }
  return pos;
}

}  // namespace seqpar
