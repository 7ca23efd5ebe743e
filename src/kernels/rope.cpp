#include "kernels/rope.hpp"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/check.hpp"

namespace seqpar {

namespace {

// The pair index whose wavelength makes `rotations` turns over L0 tokens (YaRN's
// "correction dimension"): L0/(2π·r) = θ^(2i/d) solved for i.
double yarn_correction_dim(double rotations, int64_t d, double theta, double L0) {
  return double(d) * std::log(L0 / (rotations * 2.0 * std::numbers::pi)) / (2.0 * std::log(theta));
}

}  // namespace

RopeFreqs rope_frequencies(double theta, int64_t d, const RopeScalingParams& p, int64_t L) {
  SP_CHECK(theta > 0 && d > 0 && d % 2 == 0, "rope_frequencies: theta=", theta, " d=", d,
           " (expected θ > 0 and d even)");
  const int64_t half = d / 2;
  const double s = p.factor, L0 = double(p.original_len);
  SP_CHECK(p.type == RopeScaling::none || s > 0, "rope_frequencies: factor ", s,
           " must be positive");
  SP_CHECK(p.type == RopeScaling::none || p.type == RopeScaling::linear || L0 > 0,
           "rope_frequencies: ", enum_name(p.type), " needs the original length L0, got ", L0);
  RopeFreqs f;
  f.inv_freq.resize(size_t(half));
  double base = theta;
  if (p.type == RopeScaling::dynamic && double(L) > L0) {
    SP_CHECK(d > 2, "rope_frequencies: dynamic scaling needs d > 2, got d=", d);
    base = theta * std::pow(s * double(L) / L0 - (s - 1.0), double(d) / double(d - 2));
  }
  for (int64_t i = 0; i < half; ++i)
    f.inv_freq[size_t(i)] = std::pow(base, -2.0 * static_cast<double>(i) / double(d));
  switch (p.type) {
    case RopeScaling::none:
    case RopeScaling::dynamic:
      break;
    case RopeScaling::linear:
      for (double& w : f.inv_freq) w /= s;
      break;
    case RopeScaling::yarn: {
      double lo = std::floor(yarn_correction_dim(p.beta_fast, d, theta, L0));
      double hi = std::ceil(yarn_correction_dim(p.beta_slow, d, theta, L0));
      lo = std::max(lo, 0.0);
      hi = std::min(hi, double(d - 1));
      if (lo == hi) hi += 0.001;  // as Hugging Face: no division by zero, a step ramp
      for (int64_t i = 0; i < half; ++i) {
        const double g = std::clamp((double(i) - lo) / (hi - lo), 0.0, 1.0);
        double& w = f.inv_freq[size_t(i)];
        w = (w / s) * g + w * (1.0 - g);
      }
      f.mscale =
          p.attention_factor > 0 ? p.attention_factor : (s > 1 ? 0.1 * std::log(s) + 1.0 : 1.0);
      break;
    }
    case RopeScaling::llama3: {
      const double low_wavelen = L0 / p.low_freq_factor, high_wavelen = L0 / p.high_freq_factor;
      for (double& w : f.inv_freq) {
        const double wavelen = 2.0 * std::numbers::pi / w;
        if (wavelen < high_wavelen) continue;  // high frequency: kept
        if (wavelen > low_wavelen) {           // low frequency: interpolated
          w /= s;
          continue;
        }
        const double t =
            (L0 / wavelen - p.low_freq_factor) / (p.high_freq_factor - p.low_freq_factor);
        w = (1.0 - t) * w / s + t * w;
      }
      break;
    }
  }
  return f;
}

}  // namespace seqpar
