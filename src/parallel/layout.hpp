// Which global token positions a rank of the sequence-parallel group holds.
//   contiguous: rank r holds [r·T, (r+1)·T), T = L/N.
//   zigzag:     the sequence is cut into 2N chunks of L/(2N); rank r holds chunks r and
//               2N−1−r, so under a causal mask every rank does the same attention work.
// Uneven lengths are refused (on every rank, before any work) with the values named.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace seqpar {

enum class ShardLayout { contiguous, zigzag, striped };
// striped: the sequence is cut into stripes of c = gcd(L/N, kStripe) tokens, and rank r
// holds stripes r, r + N, r + 2N, … Every rank then holds an even sample of every part of
// the sequence, so under any mask (causal, packed documents, windows) the work per rank
// is close to even; the price is that every block is needed by every rank (no skipped
// ring hops) and key tiles span N stripes (fewer skipped tiles than contiguous shards).
constexpr int64_t kStripe = 64;  // the kernel's query tile
int64_t stripe_width(int64_t L, int N);
const char* layout_name(ShardLayout l);
ShardLayout parse_layout(const std::string& s);

// Throws seqpar::Error if L cannot be split over N ranks in this layout.
void check_shardable(int64_t L, int N, ShardLayout layout);
// (T) global positions of rank r's tokens, T = L/N, in increasing order.
std::vector<int64_t> shard_positions(int64_t L, int N, int r, ShardLayout layout);

}  // namespace seqpar
