// `materialized`: textbook attention that stores the T×T probabilities P of every head of
// every layer, the baseline of the Megatron-LM sequence-parallelism paper (Korthikanti
// et al. 2022), whose per-layer activation formula sbh(34 + 5as/h) counts exactly these
// score-sized tensors. It exists so that published memory can be reproduced next to the
// blocked kernel's; it is single-rank along the sequence (sp = 1) and runs on the H/t
// heads of a tensor-parallel rank.
//
//   S = Q Kᵀ·scale (−∞ outside [lo, hi]),  P = softmax(S) (kept),  LSE = logsumexp(S)
//   O = P̃ V with P̃ = P·keep/(1−p) (the keep mask is regenerated from the RNG, not kept)
// Backward from the kept P: dV = P̃ᵀ dO,  dP̃ = dO Vᵀ,  dP = dP̃·keep/(1−p),
//   Δ = rowsum(dO∘O),  dS = P∘(dP − Δ),  dQ = dS K·scale,  dK = dSᵀ Q·scale.
// [lo, hi] is query i's visible key range (parallel/mask.hpp: documents, window, causal;
// causal alone (−∞, pos_i]), applied element by element; masked P is 0, so backward needs
// no mask of its own. Nothing is skipped: the T×T GEMMs run in full, as the baseline's do.
// Memory: P is (B, H, T, T) floats per kept layer (SpSetup::materialized_layers: every
// layer without recomputation, one buffer when the attention core is recomputed), plus a
// T×T tile per thread in backward.
#include <cblas.h>
#include <omp.h>

#include <cmath>
#include <limits>

#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
namespace {

class MaterializedAttention final : public AttentionStrategy {
 public:
  MaterializedAttention(Arena& arena, const SpSetup& sp, int B, int T, int H, int Hkv, int d)
      : B_(B),
        T_(T),
        H_(H),
        Hkv_(Hkv),
        d_(d),
        nt_(num_threads()),
        layers_(std::max(1, sp.materialized_layers)) {
    SP_CHECK(sp.sp_size() == 1, "strategy 'materialized' keeps whole T×T score matrices and ",
             "runs with sp=1 only, got sp=", sp.sp_size());
    SP_CHECK(H % Hkv == 0, "materialized: H=", H, " not divisible by Hkv=", Hkv);
    const size_t per_layer = size_t(B) * H * T * T;
    for (int l = 0; l < layers_; ++l)
      probs_.emplace_back(arena, Mem::acts, per_layer, "attention probabilities P");
    tiles_ = Buffer(arena, Mem::scratch, size_t(nt_) * T * T, "materialized dP tiles");
    delta_ = Buffer(arena, Mem::scratch, size_t(B) * H * T, "materialized delta");
  }

  const char* name() const override { return "materialized"; }
  uint64_t bytes_forward(const AttnShard&) const override { return 0; }
  uint64_t bytes_backward(const AttnShard&) const override { return 0; }

  void forward(const AttnShard& s, float* o, float* lse) override {
    check(s);
    bounds_.build(s.mask, s.pos, B_, T_, s.causal);
    const int T = T_, d = d_, G = H_ / Hkv_;
    const int64_t W = int64_t(H_ + 2 * Hkv_) * d, HD = int64_t(H_) * d;
    const float scale = 1.0f / std::sqrt(float(d));
    float* P = probs_[s.layer % layers_].data();
    const AttnParams key = dropout_key(s);
    BlasSingleThread single;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_)
    for (int bh = 0; bh < B_ * H_; ++bh) {
      const int b = bh / H_, h = bh % H_, hk = h / G;
      const float* q = s.qkv + int64_t(b) * T * W + int64_t(h) * d;
      const float* k = s.qkv + int64_t(b) * T * W + int64_t(H_ + hk) * d;
      const float* v = s.qkv + int64_t(b) * T * W + int64_t(H_ + Hkv_ + hk) * d;
      float* Pb = P + int64_t(bh) * T * T;
      // S (T, T) = Q Kᵀ·scale
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, d, scale, q, int(W), k, int(W),
                  0.0f, Pb, T);
      for (int i = 0; i < T; ++i) {
        float* row = Pb + int64_t(i) * T;
        int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
        if (bounds_.active()) {
          lo = bounds_.lo()[int64_t(b) * T + i];
          hi = bounds_.hi()[int64_t(b) * T + i];
        } else if (s.causal) {
          hi = s.pos[i];
        }
        float mx = -std::numeric_limits<float>::infinity();
        for (int j = 0; j < T; ++j) {
          if (s.pos[j] < lo || s.pos[j] > hi) row[j] = -std::numeric_limits<float>::infinity();
          mx = std::max(mx, row[j]);
        }
        double sum = 0;
        for (int j = 0; j < T; ++j) {
          row[j] = std::isinf(row[j]) ? 0.0f : std::exp(row[j] - mx);
          sum += row[j];
        }
        const float inv = float(1.0 / sum);
        for (int j = 0; j < T; ++j) row[j] *= inv;
        lse[(int64_t(b) * H_ + h) * T + i] = mx + float(std::log(sum));
        // O_i = Σ_j P̃_ij V_j
        float* oi = o + (int64_t(b) * T + i) * HD + int64_t(h) * d;
        for (int c = 0; c < d; ++c) oi[c] = 0.0f;
        for (int j = 0; j < T; ++j) {
          float pj = row[j];
          if (pj == 0.0f) continue;
          if (s.dropout_p > 0) pj *= attention_dropout_factor(key, h, s.pos[i], s.pos[j]);
          const float* vj = v + int64_t(j) * W;
          for (int c = 0; c < d; ++c) oi[c] += pj * vj[c];
        }
      }
    }
  }

  void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                float* dqkv) override {
    check(s);
    const int T = T_, d = d_, G = H_ / Hkv_;
    const int64_t W = int64_t(H_ + 2 * Hkv_) * d, HD = int64_t(H_) * d;
    const float scale = 1.0f / std::sqrt(float(d));
    const float* P = probs_[s.layer % layers_].data();
    const AttnParams key = dropout_key(s);
    float* delta = delta_.data();
    for (int b = 0; b < B_; ++b)
      for (int i = 0; i < T; ++i)
        for (int h = 0; h < H_; ++h) {
          const float* oi = o + (int64_t(b) * T + i) * HD + int64_t(h) * d;
          const float* gi = dout + (int64_t(b) * T + i) * HD + int64_t(h) * d;
          double acc = 0;
          for (int c = 0; c < d; ++c) acc += double(oi[c]) * gi[c];
          delta[(int64_t(b) * H_ + h) * T + i] = float(acc);
        }
    BlasSingleThread single;
    // One kv head per task (its G query heads), so dK/dV need no synchronisation.
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_)
    for (int bk = 0; bk < B_ * Hkv_; ++bk) {
      const int b = bk / Hkv_, hk = bk % Hkv_;
      float* dP = tiles_.data() + int64_t(omp_get_thread_num()) * T * T;
      const float* k = s.qkv + int64_t(b) * T * W + int64_t(H_ + hk) * d;
      const float* v = s.qkv + int64_t(b) * T * W + int64_t(H_ + Hkv_ + hk) * d;
      float* dk = dqkv + int64_t(b) * T * W + int64_t(H_ + hk) * d;
      float* dv = dqkv + int64_t(b) * T * W + int64_t(H_ + Hkv_ + hk) * d;
      for (int h = hk * G; h < (hk + 1) * G; ++h) {
        const float* Pb = P + (int64_t(b) * H_ + h) * T * T;
        const float* q = s.qkv + int64_t(b) * T * W + int64_t(h) * d;
        float* dq = dqkv + int64_t(b) * T * W + int64_t(h) * d;
        const float* g = dout + int64_t(b) * T * HD + int64_t(h) * d;
        // dP̃ (T, T) = dO Vᵀ
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, d, 1.0f, g, int(HD), v, int(W),
                    0.0f, dP, T);
        for (int i = 0; i < T; ++i) {
          const float dl = delta[(int64_t(b) * H_ + h) * T + i];
          for (int j = 0; j < T; ++j) {
            const float p = Pb[int64_t(i) * T + j];
            float keep = 1.0f;
            if (s.dropout_p > 0 && p != 0.0f)
              keep = attention_dropout_factor(key, h, s.pos[i], s.pos[j]);
            // dV += P̃ᵀ dO, row by row (P̃_ij scales dO_i into dV_j)
            const float pt = p * keep;
            if (pt != 0.0f) {
              const float* gi = g + int64_t(i) * HD;
              float* dvj = dv + int64_t(j) * W;
              for (int c = 0; c < d; ++c) dvj[c] += pt * gi[c];
            }
            dP[int64_t(i) * T + j] = p * (dP[int64_t(i) * T + j] * keep - dl);  // dS
          }
        }
        // dQ += dS K·scale;  dK += dSᵀ Q·scale
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, d, T, scale, dP, T, k, int(W),
                    1.0f, dq, int(W));
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, d, T, scale, dP, T, q, int(W), 1.0f,
                    dk, int(W));
      }
    }
  }

 private:
  void check(const AttnShard& s) const {
    SP_CHECK(s.B == B_ && s.T == T_ && s.H == H_ && s.Hkv == Hkv_ && s.d == d_,
             "materialized: shard B=", s.B, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " d=", s.d,
             " differs from the shape it was built for");
  }
  static AttnParams dropout_key(const AttnShard& s) { return shard_kernel_params(s); }

  int B_, T_, H_, Hkv_, d_, nt_, layers_;
  std::vector<Buffer> probs_;
  Buffer tiles_, delta_;
  MaskBounds bounds_;  // (B, T) visible key range of each query row (document mask, window)
};

}  // namespace

SEQPAR_STRATEGY_FACTORY(make_materialized_attention) {
  return std::make_unique<MaterializedAttention>(arena, sp, B, T, H, Hkv, d);
}

}  // namespace seqpar
