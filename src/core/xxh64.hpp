// XXH64 (Yann Collet's xxHash, 64-bit, seed 0): the checksum of bulk data, the bodies of
// token files. FNV-1a (core/hash.hpp) stays the hash of small things (headers, manifests,
// models); on gigabytes it falls short twice over: byte by byte it is one dependent
// multiply per byte (< 1 GB/s), and fed whole words it only carries a change upwards
// (bit 63 of the state is bit 63 of the input, so two flips of bit 63 in two words
// cancel). XXH64 reads 32-byte stripes into four independent lanes,
//   lane = rotl(lane + w · P2, 31) · P1   for each 8-byte word w,
// which runs at memory bandwidth, and mixes every input bit into every output bit. It is
// the reference algorithm, so a file's checksum can be checked outside seqpar:
// `tail -c +65 data.tok | xxhsum -H1` prints the token-file body checksum (docs/data.md).
// Not cryptographic: it detects damage, not tampering.
#pragma once
#include <cstddef>
#include <cstdint>

namespace seqpar {

// Incremental: update() with the bytes in order, in pieces of any size; value() equals
// xxh64() of them all (and may be called at any point).
class Xxh64 {
 public:
  void update(const void* data, size_t n);
  uint64_t value() const;

 private:
  uint64_t lane_[4] = {0x9E3779B185EBCA87ull + 0xC2B2AE3D27D4EB4Full, 0xC2B2AE3D27D4EB4Full, 0,
                       0 - 0x9E3779B185EBCA87ull};  // seed 0: seed + P1 + P2, + P2, + 0, − P1
  unsigned char tail_[32];                          // bytes of a stripe not yet complete
  size_t tail_size_ = 0;
  uint64_t total_ = 0;  // bytes seen
};

// One shot.
uint64_t xxh64(const void* data, size_t n);

}  // namespace seqpar
