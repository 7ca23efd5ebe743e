// FNV-1a 64: the content hash of every file seqpar writes and checks (checkpoint
// manifests, token-file headers, tokenizer models), and its printed form.
//   h = 0xcbf29ce484222325; for each byte b: h = (h ^ b) · 0x100000001b3  (mod 2^64)
// Not cryptographic: it detects damage (truncation, flipped bytes), not tampering.
#pragma once
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace seqpar {

constexpr uint64_t kFnv1a64Basis = 0xcbf29ce484222325ull;
constexpr uint64_t kFnv1a64Prime = 0x100000001b3ull;

// One shot; to continue a stream, pass the previous result as `h`.
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnv1a64Basis) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * kFnv1a64Prime;
  return h;
}

// Incremental: update() with the bytes in order; value() equals fnv1a64 of them all.
class Fnv1a64 {
 public:
  void update(const void* data, size_t n) { h_ = fnv1a64(data, n, h_); }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = kFnv1a64Basis;
};

// A hash as 16 lowercase hex digits, zero-padded (printf "%016llx"): how manifests store
// it and how errors and tools print it.
inline std::string hash_hex(uint64_t h) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) s[size_t(i)] = kDigits[h & 0xf];
  return s;
}

// The inverse of hash_hex: hex digits (either case, no "0x") of a value below 2^64,
// nothing else. False, and *out untouched, for anything else.
inline bool parse_hash_hex(std::string_view s, uint64_t* out) {
  uint64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size()) return false;
  *out = v;
  return true;
}

}  // namespace seqpar
