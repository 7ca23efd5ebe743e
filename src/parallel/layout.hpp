// Which global token positions a rank of the sequence-parallel group holds. Any L ≥ N
// splits (L ≥ 1 per rank); shards differ by at most one unit of the layout, and nothing is
// padded, so every strategy computes exactly the unsharded result.
//   contiguous: rank r holds T_r = ⌊L/N⌋ + [r < L mod N] consecutive tokens, in order.
//   zigzag:     the sequence is cut into 2N chunks, chunk c of ⌊L/2N⌋ + [c < L mod 2N]
//               tokens; rank r holds chunks r and 2N−1−r, so under a causal mask every rank
//               does the same attention work. Shards differ by at most one token.
//   striped:    stripes of c tokens (c = gcd(L/N, kStripe) when N divides L, so shards
//               are even; otherwise the largest power of two ≤ min(kStripe, ⌊L/N⌋)), the
//               last one possibly shorter, dealt round-robin: rank r holds stripes r,
//               r + N, r + 2N, … Every rank holds an even sample of every part of the
//               sequence, so under any mask (causal, packed documents, windows) the work per
//               rank is close to even; shards differ by at most one stripe. The price: every
//               block is needed by every rank (no skipped ring hops) and a key tile spans N
//               stripes (fewer skipped tiles than contiguous shards).
// Positions are returned in increasing order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/names.hpp"

namespace seqpar {

enum class ShardLayout { contiguous, zigzag, striped };
template <>
struct EnumNames<ShardLayout> {
  static constexpr const char* what = "shard layout";
  static constexpr std::pair<ShardLayout, const char*> table[] = {
      {ShardLayout::contiguous, "contiguous"},
      {ShardLayout::zigzag, "zigzag"},
      {ShardLayout::striped, "striped"}};
};
inline const char* layout_name(ShardLayout l) { return enum_name(l); }
inline ShardLayout parse_layout(const std::string& s) { return parse_enum<ShardLayout>(s); }

constexpr int64_t kStripe = 64;  // the kernel's query tile
// Stripe width of the striped layout for L tokens over N ranks.
int64_t stripe_width(int64_t L, int N);

// Throws seqpar::UsageError if L cannot be split over N ranks (L < N).
void check_shardable(int64_t L, int N, ShardLayout layout);
// Global positions of rank r's tokens, in increasing order.
std::vector<int64_t> shard_positions(int64_t L, int N, int r, ShardLayout layout);
// Number of tokens rank r holds: shard_positions(L, N, r, layout).size().
int64_t shard_len(int64_t L, int N, int r, ShardLayout layout);
// The largest shard over the N ranks (buffers sized for any rank's block).
int64_t max_shard_len(int64_t L, int N, ShardLayout layout);

}  // namespace seqpar
