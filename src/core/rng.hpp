// Counter-based RNG (Philox4x32-10, Salmon et al. 2011). A random number is a pure
// function of (seed, counter), so dropout masks are keyed by global coordinates
// (step, layer, site, token, feature) and do not depend on how tokens are sharded
// across ranks: 1 rank and N ranks draw identical masks.
#pragma once
#include <array>
#include <cstdint>

namespace seqpar {

using u32x4 = std::array<uint32_t, 4>;

inline u32x4 philox4x32(u32x4 ctr, uint64_t seed) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(M0) * ctr[0];
    uint64_t p1 = static_cast<uint64_t>(M1) * ctr[2];
    ctr = {static_cast<uint32_t>(p1 >> 32) ^ ctr[1] ^ k0, static_cast<uint32_t>(p1),
           static_cast<uint32_t>(p0 >> 32) ^ ctr[3] ^ k1, static_cast<uint32_t>(p0)};
    k0 += W0;
    k1 += W1;
  }
  return ctr;
}

// Uniform in [0, 1) with 24 random bits.
inline float u32_to_unit(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

// Where a random number is used; part of the counter so sites never share a stream.
enum class RngSite : uint32_t {
  embed_dropout = 1,
  attn_out_dropout = 2,
  mlp_out_dropout = 3,
  attn_prob_dropout = 4,
  mlm_mask = 5,
  data = 6,
  init = 7,
};

// Counter layout: {a, b, step, layer<<16 | head<<4 | site}. For activation dropout
// a = global token index, b = feature/4 (4 lanes per call); for attention-probability
// dropout a = global query position, b = global key position.
inline u32x4 rng_counter(uint32_t a, uint32_t b, uint32_t step, uint32_t layer, uint32_t head,
                         RngSite site) {
  return {a, b, step, (layer << 16) | ((head & 0xFFFu) << 4) | static_cast<uint32_t>(site)};
}

// One uniform draw keyed by global coordinates.
inline float rng_uniform(uint64_t seed, uint32_t step, uint32_t layer, RngSite site, uint32_t token,
                         uint32_t feature, uint32_t head = 0) {
  u32x4 r = philox4x32(rng_counter(token, feature >> 2, step, layer, head, site), seed);
  return u32_to_unit(r[feature & 3]);
}

}  // namespace seqpar
