// RoPE scaling (kernels/rope.hpp): every type's frequencies against a double reference of
// its published definition written here independently (Chen et al. 2023 for linear; the
// NTK-aware base of Hugging Face's dynamic scaling; Peng et al. 2023 / Hugging Face's
// _compute_yarn_parameters for YaRN; Meta's Llama 3.1 rule for llama3), the rotated q/k of
// the kernel at positions far beyond the original length against a double rotation, the
// backward as the forward's transpose with the temperature in, the model rows' checks, the
// JSON round trip and the Hugging Face rope_scaling object.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "core/check.hpp"
#include "kernels/ops.hpp"
#include "kernels/rope.hpp"
#include "model/config.hpp"
#include "test_util.hpp"
#include "train/hf_export.hpp"

namespace seqpar {
namespace {

using test::expect_error;
using test::rel_err;
constexpr double kPi = std::numbers::pi;

// ---- references: the formulas, one pair at a time ----------------------------------------
struct Ref {
  std::vector<double> w;  // ω_i
  double m = 1.0;         // temperature on cos and sin
};

double omega(double base, int64_t i, int64_t d) { return 1.0 / std::pow(base, double(2 * i) / d); }

Ref ref_none(double theta, int64_t d) {
  Ref r;
  for (int64_t i = 0; i < d / 2; ++i) r.w.push_back(omega(theta, i, d));
  return r;
}

// Position interpolation: position p is read as p/s, so every ω shrinks by s.
Ref ref_linear(double theta, int64_t d, double s) {
  Ref r = ref_none(theta, d);
  for (double& w : r.w) w = w / s;
  return r;
}

// NTK-aware: only the base changes, and only past the original length.
Ref ref_dynamic(double theta, int64_t d, double s, double L0, double L) {
  const double base = L > L0 ? theta * std::pow(s * L / L0 - s + 1.0, double(d) / (d - 2)) : theta;
  return ref_none(base, d);
}

// YaRN "by parts": pair i turns r_i = L0·ω_i/(2π) times over the original context. The pair
// index at which r = β is i(β) = (d/2)·log_θ(L0/(2πβ)); Hugging Face floors i(β_fast),
// ceils i(β_slow), clamps them to [0, d−1] and ramps linearly in the index between them:
// below the ramp the pair keeps ω (extrapolates), above it takes ω/s (interpolates).
Ref ref_yarn(double theta, int64_t d, double s, double L0, double beta_fast, double beta_slow,
             double attention_factor) {
  auto index_of = [&](double beta) {
    return 0.5 * double(d) * (std::log(L0 / (2.0 * kPi * beta)) / std::log(theta));
  };
  double a = std::max(0.0, std::floor(index_of(beta_fast)));
  double b = std::min(double(d - 1), std::ceil(index_of(beta_slow)));
  if (a == b) b += 0.001;
  Ref r = ref_none(theta, d);
  for (int64_t i = 0; i < d / 2; ++i) {
    double ramp = (double(i) - a) / (b - a);
    ramp = ramp < 0 ? 0 : (ramp > 1 ? 1 : ramp);  // 0: extrapolate, 1: interpolate
    r.w[i] = ramp * (r.w[i] / s) + (1.0 - ramp) * r.w[i];
  }
  r.m = attention_factor > 0 ? attention_factor : 1.0 + 0.1 * std::log(s);
  return r;
}

// Llama 3.1: wavelength λ = 2π/ω against L0/high and L0/low.
Ref ref_llama3(double theta, int64_t d, double s, double L0, double low, double high) {
  Ref r = ref_none(theta, d);
  for (double& w : r.w) {
    const double lambda = 2.0 * kPi / w;
    if (lambda > L0 / low) {
      w = w / s;
    } else if (lambda >= L0 / high) {
      const double t = (L0 / lambda - low) / (high - low);
      w = (1.0 - t) * (w / s) + t * w;
    }
  }
  return r;
}

void expect_freqs(const RopeFreqs& got, const Ref& want, const std::string& what) {
  ASSERT_EQ(got.inv_freq.size(), want.w.size()) << what;
  for (size_t i = 0; i < want.w.size(); ++i)
    EXPECT_NEAR(got.inv_freq[i], want.w[i], 1e-12 * want.w[i]) << what << " pair " << i;
  EXPECT_NEAR(got.mscale, want.m, 1e-14) << what;
}

RopeScalingParams params(RopeScaling t, double s, int64_t L0) {
  RopeScalingParams p;
  p.type = t;
  p.factor = s;
  p.original_len = L0;
  return p;
}

TEST(RopeScaling, NoneIsThePlainRope) {
  for (int64_t d : {2, 8, 64, 128}) {
    const RopeFreqs f = rope_frequencies(10000.0, d, RopeScalingParams{});
    for (int64_t i = 0; i < d / 2; ++i)  // the exact expression the kernel used before
      EXPECT_EQ(f.inv_freq[i], std::pow(10000.0, -2.0 * static_cast<double>(i) / d));
    EXPECT_EQ(f.mscale, 1.0);
  }
}

TEST(RopeScaling, LinearMatchesReference) {
  expect_freqs(rope_frequencies(10000.0, 64, params(RopeScaling::linear, 4.0, 0)),
               ref_linear(10000.0, 64, 4.0), "linear s=4");
  expect_freqs(rope_frequencies(500000.0, 128, params(RopeScaling::linear, 2.5, 0)),
               ref_linear(500000.0, 128, 2.5), "linear s=2.5");
}

TEST(RopeScaling, DynamicMatchesReferenceAndIsPlainUpToL0) {
  const auto p = params(RopeScaling::dynamic, 4.0, 512);
  // Up to L0 the base is θ: the unscaled frequencies exactly.
  for (int64_t L : {0, 1, 100, 512})
    expect_freqs(rope_frequencies(10000.0, 64, p, L), ref_none(10000.0, 64),
                 "dynamic L=" + std::to_string(L));
  for (int64_t L : {513, 2048, 8192, 100000})
    expect_freqs(rope_frequencies(10000.0, 64, p, L), ref_dynamic(10000.0, 64, 4.0, 512, L),
                 "dynamic L=" + std::to_string(L));
  // At L = s·L0 the base is θ·(s² − s + 1)^(d/(d−2)): the NTK formula with s_eff = s² − s + 1.
  const RopeFreqs f = rope_frequencies(10000.0, 64, p, 2048);
  const double base = 10000.0 * std::pow(13.0, 64.0 / 62.0);
  EXPECT_NEAR(f.inv_freq[31], std::pow(base, -62.0 / 64.0), 1e-15);
  EXPECT_EQ(f.inv_freq[0], 1.0);  // pair 0 never scales
}

TEST(RopeScaling, YarnMatchesReference) {
  struct Case {
    double theta;
    int64_t d;
    double s;
    int64_t L0;
    double bf, bs, af;
  };
  for (const Case& c :
       {Case{10000.0, 64, 16.0, 512, 32, 1, 0}, Case{10000.0, 128, 4.0, 4096, 32, 1, 0},
        Case{500000.0, 128, 8.0, 8192, 16, 2, 0}, Case{10000.0, 8, 2.0, 64, 32, 1, 0},
        Case{10000.0, 64, 16.0, 512, 32, 1, 1.25}}) {
    RopeScalingParams p = params(RopeScaling::yarn, c.s, c.L0);
    p.beta_fast = c.bf, p.beta_slow = c.bs, p.attention_factor = c.af;
    const std::string what = "yarn d=" + std::to_string(c.d) + " s=" + std::to_string(c.s);
    const RopeFreqs f = rope_frequencies(c.theta, c.d, p);
    expect_freqs(f, ref_yarn(c.theta, c.d, c.s, double(c.L0), c.bf, c.bs, c.af), what);
    // The highest-frequency pair extrapolates, the lowest interpolates (for these cases).
    EXPECT_EQ(f.inv_freq[0], 1.0) << what;
    EXPECT_NEAR(f.inv_freq.back(), omega(c.theta, c.d / 2 - 1, c.d) / c.s, 1e-15) << what;
  }
  // The temperature: 0.1·ln(16) + 1 = 1.2773 (YaRN eq. 22's √(1/t) with s = 16).
  EXPECT_NEAR(rope_frequencies(10000.0, 64, params(RopeScaling::yarn, 16.0, 512)).mscale,
              1.2772588722239781, 1e-15);
  EXPECT_EQ(rope_frequencies(10000.0, 64, params(RopeScaling::yarn, 1.0, 512)).mscale, 1.0);
}

TEST(RopeScaling, Llama3MatchesReference) {
  // Llama 3.1's published setting: θ = 500000, d = 128, s = 8, L0 = 8192, low 1, high 4.
  RopeScalingParams p = params(RopeScaling::llama3, 8.0, 8192);
  const RopeFreqs f = rope_frequencies(500000.0, 128, p);
  expect_freqs(f, ref_llama3(500000.0, 128, 8.0, 8192, 1.0, 4.0), "llama3.1");
  // All three regimes occur: kept, smoothed, divided by s.
  int kept = 0, divided = 0, smoothed = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const double w = omega(500000.0, i, 128);
    if (f.inv_freq[i] == w)
      ++kept;
    else if (std::fabs(f.inv_freq[i] - w / 8.0) < 1e-18)
      ++divided;
    else
      ++smoothed;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(divided, 0);
  EXPECT_GT(smoothed, 0);
  p.low_freq_factor = 2.0, p.high_freq_factor = 8.0;
  expect_freqs(rope_frequencies(10000.0, 64, p), ref_llama3(10000.0, 64, 8.0, 8192, 2.0, 8.0),
               "llama3 low 2 high 8");
}

// The kernel rotates q/k by the scaled frequencies at positions far beyond L0, with the
// temperature on cos and sin, as a double rotation with the reference's ω and m does.
TEST(RopeScaling, KernelRotatesByScaledFrequencies) {
  const int64_t B = 2, T = 7, nh = 3, d = 16, stride = nh * d + 5, L0 = 64;
  const std::vector<int64_t> pos = {0, 1, 37, L0 - 1, L0, 5 * L0 + 3, 1000 * L0 + 11};
  RopeScalingParams yarn = params(RopeScaling::yarn, 8.0, L0);
  RopeScalingParams llama3 = params(RopeScaling::llama3, 8.0, L0);
  llama3.high_freq_factor = 16.0;  // with L0 = 64 and d = 16, all three regimes
  const std::vector<std::pair<RopeScalingParams, Ref>> cases = {
      {params(RopeScaling::linear, 8.0, 0), ref_linear(10000.0, d, 8.0)},
      {params(RopeScaling::dynamic, 8.0, L0), ref_dynamic(10000.0, d, 8.0, L0, 8 * L0)},
      {yarn, ref_yarn(10000.0, d, 8.0, L0, 32, 1, 0)},
      {llama3, ref_llama3(10000.0, d, 8.0, L0, 1.0, 16.0)}};
  std::mt19937 gen(7);
  std::normal_distribution<float> nd;
  for (const auto& [p, ref] : cases) {
    const RopeFreqs f = rope_frequencies(10000.0, d, p, 8 * L0);
    std::vector<float> x(size_t(B * T * stride));
    for (float& v : x) v = nd(gen);
    std::vector<double> want(x.begin(), x.end());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < nh; ++h)
          for (int64_t i = 0; i < d / 2; ++i) {
            double* v = &want[size_t((b * T + t) * stride + h * d + 2 * i)];
            const double phi = double(pos[t]) * ref.w[i];
            const double c = ref.m * std::cos(phi), s = ref.m * std::sin(phi);
            const double x0 = v[0], x1 = v[1];
            v[0] = x0 * c - x1 * s;
            v[1] = x0 * s + x1 * c;
          }
    std::vector<float> got = x;
    rope_forward(got.data(), pos.data(), B, T, nh, d, stride, f);
    // cos and sin rounded to float, products and sums in float: a few ulp of |x|.
    EXPECT_LT(rel_err(got, want), 2e-6) << enum_name(p.type);

    // Backward is the transpose (m·R(φ))ᵀ = m·R(−φ): <R, f(x)> = <fᵀ(R), x>.
    std::vector<float> R(x.size());
    for (float& v : R) v = nd(gen);
    std::vector<float> bR = R;
    rope_backward(bR.data(), pos.data(), B, T, nh, d, stride, f);
    double lhs = 0, rhs = 0, scale = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      lhs += double(R[i]) * got[i];
      rhs += double(bR[i]) * x[i];
      scale += std::fabs(double(R[i]) * x[i]);
    }
    EXPECT_LT(std::fabs(lhs - rhs) / scale, 1e-6) << enum_name(p.type);
    // And backward(forward(x)) = m²·x on the heads; the padding past nh·d is untouched.
    rope_backward(got.data(), pos.data(), B, T, nh, d, stride, f);
    std::vector<double> x_m2(x.begin(), x.end());
    for (size_t i = 0; i < x_m2.size(); ++i)
      if (int64_t(i) % stride < nh * d) x_m2[i] *= f.mscale * f.mscale;
    EXPECT_LT(rel_err(got, x_m2), 4e-6) << enum_name(p.type);
  }
}

// ---- the model rows ------------------------------------------------------------------
ModelConfig llama_cfg() {
  ModelConfig c;
  c.kind = ModelKind::llama;
  c.C = 64, c.H = 4, c.Hkv = 2, c.F = 176, c.V = 256;
  return c;
}

TEST(RopeScaling, ConfigRefusesNonsense) {
  ModelConfig c = llama_cfg();
  c.rope_factor = 4;
  expect_error<UsageError>([&] { c.validate(); }, {"--rope-factor", "none"});
  c = llama_cfg();
  c.rope_original_len = 512;
  expect_error<UsageError>([&] { c.validate(); }, {"--rope-original-len"});
  for (RopeScaling t : {RopeScaling::dynamic, RopeScaling::yarn, RopeScaling::llama3}) {
    c = llama_cfg();
    c.rope_scaling = t, c.rope_factor = 4;
    expect_error<UsageError>([&] { c.validate(); }, {"--rope-original-len", enum_name(t)});
  }
  c = llama_cfg();
  c.rope_scaling = RopeScaling::linear, c.rope_factor = 4, c.rope_original_len = 512;
  expect_error<UsageError>([&] { c.validate(); }, {"--rope-original-len", "linear"});
  c = llama_cfg();
  c.rope_scaling = RopeScaling::llama3, c.rope_factor = 8, c.rope_original_len = 512;
  c.rope_low_freq_factor = 4, c.rope_high_freq_factor = 4;
  expect_error<UsageError>([&] { c.validate(); }, {"--rope-low-freq-factor"});
  c = llama_cfg();
  c.rope_scaling = RopeScaling::yarn, c.rope_factor = 8, c.rope_original_len = 512;
  c.rope_beta_fast = 1, c.rope_beta_slow = 2;
  expect_error<UsageError>([&] { c.validate(); }, {"--rope-beta-fast"});
  c = llama_cfg();
  c.rope_scaling = RopeScaling::linear, c.rope_factor = 4, c.rope_beta_fast = 16;
  expect_error<UsageError>([&] { c.validate(); }, {"--rope-beta-fast", "linear"});
  c = llama_cfg();
  c.rope_scaling = RopeScaling::yarn, c.rope_factor = 0.5f, c.rope_original_len = 512;
  expect_error<UsageError>([&] { c.validate(); }, {"rope_factor"});
  c = llama_cfg();
  c.rope_scaling = RopeScaling::yarn, c.rope_factor = 8, c.rope_original_len = 512;
  c.rope_beta_fast = 16, c.rope_beta_slow = 2, c.rope_attention_factor = 1.5f;
  EXPECT_NO_THROW(c.validate());
}

TEST(RopeScaling, ConfigRoundTripsThroughJson) {
  ModelConfig c = llama_cfg();
  c.rope_scaling = RopeScaling::llama3, c.rope_factor = 8, c.rope_original_len = 8192;
  c.rope_low_freq_factor = 1.5f, c.rope_high_freq_factor = 6;
  const nlohmann::json j = c.to_json();
  EXPECT_EQ(j.at("rope_scaling"), "llama3");
  EXPECT_EQ(j.at("rope_original_len"), 8192);
  const ModelConfig back = ModelConfig::from_json(j);
  EXPECT_EQ(back.to_json(), j);
  EXPECT_EQ(back.rope_scaling, RopeScaling::llama3);
  EXPECT_EQ(back.rope_high_freq_factor, 6.0f);
  // A manifest written before the rows existed reads as no scaling.
  nlohmann::json old = j;
  for (const char* k :
       {"rope_scaling", "rope_factor", "rope_original_len", "rope_beta_fast", "rope_beta_slow",
        "rope_attention_factor", "rope_low_freq_factor", "rope_high_freq_factor"})
    old.erase(k);
  EXPECT_EQ(ModelConfig::from_json(old).rope_scaling, RopeScaling::none);
  expect_error<UsageError>(
      [&] {
        nlohmann::json bad = j;
        bad["rope_scaling"] = "ntk";
        ModelConfig::from_json(bad);
      },
      {"ntk"});
}

TEST(RopeScaling, HuggingFaceObject) {
  ModelConfig c = llama_cfg();
  EXPECT_TRUE(hf_rope_scaling(c).is_null());
  c.rope_scaling = RopeScaling::yarn, c.rope_factor = 16, c.rope_original_len = 512;
  nlohmann::json r = hf_rope_scaling(c);
  EXPECT_EQ(r, (nlohmann::json{{"rope_type", "yarn"},
                               {"factor", 16.0},
                               {"original_max_position_embeddings", 512},
                               {"beta_fast", 32.0},
                               {"beta_slow", 1.0}}));
  c.rope_attention_factor = 1.5f;
  EXPECT_EQ(hf_rope_scaling(c).at("attention_factor"), 1.5);
  c = llama_cfg();
  c.rope_scaling = RopeScaling::llama3, c.rope_factor = 8, c.rope_original_len = 8192;
  r = hf_rope_scaling(c);
  EXPECT_EQ(r.at("rope_type"), "llama3");
  EXPECT_EQ(r.at("low_freq_factor"), 1.0);
  EXPECT_EQ(r.at("high_freq_factor"), 4.0);
  c = llama_cfg();
  c.rope_scaling = RopeScaling::linear, c.rope_factor = 2;
  EXPECT_EQ(hf_rope_scaling(c), (nlohmann::json{{"rope_type", "linear"}, {"factor", 2.0}}));
}

}  // namespace
}  // namespace seqpar
