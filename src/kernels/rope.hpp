// RoPE frequencies, with the context-extension scalings Hugging Face calls `rope_scaling`.
// Pair i of a head (i < d/2) rotates by pos·ω_i, with the unscaled ω_i = θ^(−2i/d); the
// kernel multiplies cos and sin by the attention temperature m (so q·k scales by m²).
//   none     ω_i = θ^(−2i/d), m = 1
//   linear   ω_i / s (position interpolation, Chen et al. 2023: positions divided by s)
//   dynamic  NTK-aware: θ' = θ·(s·L/L0 − (s − 1))^(d/(d−2)) when L > L0, else θ;
//            ω_i = θ'^(−2i/d). L is the length of the sequence being processed (Batch).
//   yarn     (Peng et al. 2023) per pair a ramp between ω_i (extrapolation, fast pairs)
//            and ω_i/s (interpolation, slow pairs): with the correction dimension
//            c(r) = d·ln(L0/(2π·r)) / (2·ln θ), lo = max(⌊c(β_fast)⌋, 0),
//            hi = min(⌈c(β_slow)⌉, d − 1), γ_i = clamp((i − lo)/(hi − lo), 0, 1):
//            ω'_i = (ω_i/s)·γ_i + ω_i·(1 − γ_i); m = attention_factor, or 0.1·ln s + 1.
//   llama3   by wavelength λ_i = 2π/ω_i: λ_i < L0/high → ω_i; λ_i > L0/low → ω_i/s;
//            between, with t = (L0/λ_i − low)/(high − low): ω'_i = (1 − t)·ω_i/s + t·ω_i.
// s is the factor, L0 the original (pre-extension) context length. docs/llama.md has the
// defaults and the sources.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "core/names.hpp"

namespace seqpar {

enum class RopeScaling { none, linear, dynamic, yarn, llama3 };
template <>
struct EnumNames<RopeScaling> {
  static constexpr const char* what = "RoPE scaling";
  static constexpr std::pair<RopeScaling, const char*> table[] = {{RopeScaling::none, "none"},
                                                                  {RopeScaling::linear, "linear"},
                                                                  {RopeScaling::dynamic, "dynamic"},
                                                                  {RopeScaling::yarn, "yarn"},
                                                                  {RopeScaling::llama3, "llama3"}};
};

// The scaling's parameters, Hugging Face's rope_scaling keys (factor, original_max_position_
// embeddings, beta_fast, beta_slow, attention_factor, low_freq_factor, high_freq_factor).
struct RopeScalingParams {
  RopeScaling type = RopeScaling::none;
  double factor = 1.0;            // s
  int64_t original_len = 0;       // L0 (dynamic, yarn, llama3)
  double beta_fast = 32.0;        // yarn: rotations below which pairs extrapolate
  double beta_slow = 1.0;         // yarn: rotations above which pairs interpolate
  double attention_factor = 0;    // yarn: m; 0 = 0.1·ln s + 1
  double low_freq_factor = 1.0;   // llama3
  double high_freq_factor = 4.0;  // llama3
};

// What the kernel rotates by: ω_i for the d/2 pairs of a head, and the temperature m that
// multiplies cos and sin.
struct RopeFreqs {
  std::vector<double> inv_freq;  // (d/2)
  double mscale = 1.0;
};

// In double precision. L: the processed sequence length (dynamic only; ignored otherwise).
RopeFreqs rope_frequencies(double theta, int64_t d, const RopeScalingParams& p, int64_t L = 0);

}  // namespace seqpar
