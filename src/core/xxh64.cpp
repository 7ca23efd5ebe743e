#include "core/xxh64.hpp"

#include <bit>
#include <cstring>

namespace seqpar {

// The reference's words are little-endian; so are the token files this hashes.
static_assert(std::endian::native == std::endian::little, "XXH64 here reads little-endian words");

namespace {

constexpr uint64_t P1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t P2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t P3 = 0x165667B19E3779F9ull;
constexpr uint64_t P4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t P5 = 0x27D4EB2F165667C5ull;

uint64_t read64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
uint32_t read32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

uint64_t lane_round(uint64_t acc, uint64_t w) { return std::rotl(acc + w * P2, 31) * P1; }
uint64_t merge_round(uint64_t h, uint64_t lane) { return (h ^ lane_round(0, lane)) * P1 + P4; }

// Runs the four lanes over the whole stripes of p[0, n); returns the bytes consumed.
size_t stripes(uint64_t* lane, const unsigned char* p, size_t n) {
  uint64_t v0 = lane[0], v1 = lane[1], v2 = lane[2], v3 = lane[3];
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    v0 = lane_round(v0, read64(p + i));
    v1 = lane_round(v1, read64(p + i + 8));
    v2 = lane_round(v2, read64(p + i + 16));
    v3 = lane_round(v3, read64(p + i + 24));
  }
  lane[0] = v0, lane[1] = v1, lane[2] = v2, lane[3] = v3;
  return i;
}

// The last step: folds in the total length and the final n < 32 bytes, then avalanches.
uint64_t finish(uint64_t h, uint64_t total, const unsigned char* p, size_t n) {
  h += total;
  for (; n >= 8; p += 8, n -= 8) h = std::rotl(h ^ lane_round(0, read64(p)), 27) * P1 + P4;
  if (n >= 4) {
    h = std::rotl(h ^ (uint64_t(read32(p)) * P1), 23) * P2 + P3;
    p += 4, n -= 4;
  }
  for (; n > 0; ++p, --n) h = std::rotl(h ^ (uint64_t(*p) * P5), 11) * P1;
  h ^= h >> 33;
  h *= P2;
  h ^= h >> 29;
  h *= P3;
  h ^= h >> 32;
  return h;
}

uint64_t converge(const uint64_t* lane) {
  uint64_t h = std::rotl(lane[0], 1) + std::rotl(lane[1], 7) + std::rotl(lane[2], 12) +
               std::rotl(lane[3], 18);
  for (int k = 0; k < 4; ++k) h = merge_round(h, lane[k]);
  return h;
}

}  // namespace

void Xxh64::update(const void* data, size_t n) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  total_ += n;
  if (tail_size_ > 0) {  // complete the pending stripe first
    const size_t take = n < 32 - tail_size_ ? n : 32 - tail_size_;
    std::memcpy(tail_ + tail_size_, p, take);
    tail_size_ += take;
    p += take, n -= take;
    if (tail_size_ < 32) return;
    stripes(lane_, tail_, 32);
    tail_size_ = 0;
  }
  const size_t used = stripes(lane_, p, n);
  tail_size_ = n - used;
  if (tail_size_ > 0) std::memcpy(tail_, p + used, tail_size_);
}

uint64_t Xxh64::value() const {
  const uint64_t h = total_ >= 32 ? converge(lane_) : P5;  // seed 0 + P5
  return finish(h, total_, tail_, tail_size_);
}

uint64_t xxh64(const void* data, size_t n) {
  Xxh64 s;
  s.update(data, n);
  return s.value();
}

}  // namespace seqpar
