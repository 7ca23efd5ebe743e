// Elementwise and row-wise kernels of the Transformer, llm.c style: free functions
// `<op>_forward` / `<op>_backward`, arguments ordered outputs, inputs, saved values,
// dimensions. Every backward ACCUMULATES (+=) into every gradient it writes (inputs
// and parameters), so callers zero gradient buffers once and micro-batches add up.
// One exception, stated at its declaration: swiglu_backward OVERWRITES dgu.
// Each op has a double-precision `_naive` reference in tests/.
//
// Storage type S (float or bf16, core/bf16.hpp): tensors that are activations (saved for
// backward, or read from a saved one) are `S*`; arithmetic is fp32 whatever S is, every
// value read through load() and written through store(). Gradients, parameters and row
// statistics stay float. One code path per kernel, instantiated for S = float and bf16.
#pragma once
#include <cstdint>

#include "core/bf16.hpp"
#include "core/rng.hpp"
#include "kernels/rope.hpp"

namespace seqpar {

// ---- linear (OpenBLAS sgemm) ------------------------------------------------------
// out (M, N) = inp (M, K) · wᵀ (w is (N, K), PyTorch layout) + bias (N) (bias may be null)
// O, I: storage types of out and inp (float, float), (bf16, bf16) or (float, bf16). A bf16
// inp is widened and a bf16 out rounded kLinearRows rows at a time through fp32 tiles in
// `scratch` (linear_scratch_floats(K, N) floats; unused, may be null, when both are float).
template <class O, class I>
void linear_forward(O* out, const I* inp, const float* w, const float* bias, int64_t M, int64_t K,
                    int64_t N, float* scratch = nullptr);
// dinp (M, K) += dout · w;  dw (N, K) += doutᵀ · inp;  dbias (N) += Σ_rows dout.
// dinp / dbias may be null (not needed). S = bf16: inp is widened kLinearRows rows at a time
// into `scratch` and dw accumulates the rows chunk by chunk.
template <class S>
void linear_backward(float* dinp, float* dw, float* dbias, const float* dout, const S* inp,
                     const float* w, int64_t M, int64_t K, int64_t N, float* scratch = nullptr);
// Rows per fp32 tile of the bf16 linear, and the scratch floats it needs for (K, N).
constexpr int64_t kLinearRows = 256;
inline int64_t linear_scratch_floats(int64_t K, int64_t N) { return kLinearRows * (K + N); }

// out (M, N) += bias (N) broadcast over rows; dbias (N) += Σ_rows dout (M, N). Used where a
// bias is added after a reduction (Megatron row-parallel linears add it once, after the
// reduce-scatter).
void bias_forward(float* out, const float* bias, int64_t M, int64_t N);
void bias_backward(float* dbias, const float* dout, int64_t M, int64_t N);

// ---- layernorm over the last dim C, eps = 1e-5 ---------------------------------------
// out = (inp − mean)·rstd·w + b; saves mean (N), rstd (N).
// O, I: storage types of out and inp (the final norm reads a stored residual and writes
// fp32 for the head).
template <class O, class I>
void layernorm_forward(O* out, float* mean, float* rstd, const I* inp, const float* w,
                       const float* b, int64_t N, int64_t C);
template <class S>
void layernorm_backward(float* dinp, float* dw, float* db, const float* dout, const S* inp,
                        const float* w, const float* mean, const float* rstd, int64_t N, int64_t C);

// ---- RMSNorm over the last dim C (LLaMA): y = x·rstd·w, rstd = 1/√(mean(x²) + eps) ----
// out (N, C); saves rstd (N). inp (N, C), w (C). LLaMA uses eps = 1e-5 or 1e-6.
template <class O, class I>
void rmsnorm_forward(O* out, float* rstd, const I* inp, const float* w, int64_t N, int64_t C,
                     float eps);
// With x̂ = x·rstd and g = w∘dout:  dinp (N, C) += rstd·(g − x̂·mean(g∘x̂)),
// dw (C) += Σ_rows dout∘x̂. Both ACCUMULATE (+=), as layernorm_backward does.
template <class S>
void rmsnorm_backward(float* dinp, float* dw, const float* dout, const S* inp, const float* w,
                      const float* rstd, int64_t N, int64_t C);

// ---- SwiGLU (LLaMA feed-forward activation) -----------------------------------------
// gu (N, 2F) holds per row [gate (F) | up (F)]; out (N, F) = silu(gate)·up,
// silu(g) = g·σ(g).
template <class S>
void swiglu_forward(S* out, const S* gu, int64_t N, int64_t F);
// dgu (N, 2F) is OVERWRITTEN (not accumulated) with [d gate | d up]:
//   d gate = dout·up·σ(g)·(1 + g·(1 − σ(g))),  d up = dout·silu(g).
// dout (N, F). dgu must not alias gu.
template <class S>
void swiglu_backward(float* dgu, const float* dout, const S* gu, int64_t N, int64_t F);

// ---- GELU, tanh approximation (PyTorch gelu(approximate="tanh")) ---------------------
// gelu(x) = 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
template <class S>
void gelu_forward(S* out, const S* inp, int64_t n);
template <class S>
void gelu_backward(float* dinp, const S* inp, const float* dout, int64_t n);

// ---- residual ---------------------------------------------------------------------
template <class S>
void residual_forward(S* out, const S* a, const S* b, int64_t n);            // out = a + b
void residual_backward(float* da, float* db, const float* dout, int64_t n);  // da,db += dout

// ---- token embedding (no position table: positions enter through RoPE) --------------
// out (N, C) = wte[tokens[i]]; tokens must be in [0, V).
template <class S>
void embedding_forward(S* out, const int32_t* tokens, const float* wte, int64_t N, int64_t C,
                       int64_t V);
void embedding_backward(float* dwte, const float* dout, const int32_t* tokens, int64_t N,
                        int64_t C);

// ---- rotary position embedding with global positions ---------------------------------
// For each token (b, t) and head, pairs (x[2i], x[2i+1]) rotate by angle
// pos[b·pos_bstride + t]·θ^(−2i/d). x is (B, T, nh, d) with token stride `stride` floats
// and batch stride T·stride. pos_bstride = 0 (the default): positions (T) shared by every
// batch row; pos_bstride = T: positions (B, T) per row (documents whose positions restart
// at each document start, --doc-positions reset).
// In place. Backward applies the inverse rotation to the gradient (in place).
// The RopeFreqs overloads rotate pair i by pos·f.inv_freq[i] and multiply cos and sin by
// f.mscale (RoPE scaling, kernels/rope.hpp); the θ overloads are the unscaled RoPE.
template <class S>
void rope_forward(S* x, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                  int64_t stride, const RopeFreqs& f, int64_t pos_bstride = 0);
void rope_backward(float* dx, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                   int64_t stride, const RopeFreqs& f, int64_t pos_bstride = 0);
template <class S>
void rope_forward(S* x, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                  int64_t stride, float theta, int64_t pos_bstride = 0);
void rope_backward(float* dx, const int64_t* pos, int64_t B, int64_t T, int64_t nh, int64_t d,
                   int64_t stride, float theta, int64_t pos_bstride = 0);

// ---- dropout keyed by global coordinates -------------------------------------------
// keep = u ≥ p with u = rng_uniform(seed, step, layer, site, row_key[r], c);
// out = inp·keep/(1−p). row_key is the global token id of each row (sample·L + position),
// so the mask is the same whatever the sharding. In place (out == inp) is allowed.
struct DropoutKey {
  float p = 0.0f;
  uint64_t seed = 0;
  uint32_t step = 0, layer = 0;
  RngSite site = RngSite::embed_dropout;
};
template <class S>
void dropout_forward(S* out, const S* inp, const int64_t* row_key, int64_t N, int64_t C,
                     const DropoutKey& key);
// dinp += dout·keep/(1−p)
void dropout_backward(float* dinp, const float* dout, const int64_t* row_key, int64_t N, int64_t C,
                      const DropoutKey& key);

// ---- softmax cross-entropy ---------------------------------------------------------
// losses[i] = logsumexp(logits[i]) − logits[i][targets[i]]; rows with targets[i] < 0 are
// ignored (loss 0). logits (N, V).
void crossentropy_forward(float* losses, const float* logits, const int32_t* targets, int64_t N,
                          int64_t V);
// dlogits[i] += (softmax(logits[i]) − onehot(targets[i]))·dlosses[i]; ignored rows get 0.
void crossentropy_backward(float* dlogits, const float* logits, const int32_t* targets,
                           const float* dlosses, int64_t N, int64_t V);

// ---- optimizer ---------------------------------------------------------------------
// AdamW (Loshchilov & Hutter), PyTorch semantics, t ≥ 1 is the step count:
//   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²;  m̂ = m/(1−β1ᵗ);  v̂ = v/(1−β2ᵗ)
//   w −= lr·(m̂/(√v̂ + ε) + λ·w)
void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t t);
// Σ g² in double (for the global gradient norm); scale g by s in place.
double sum_squares(const float* g, int64_t n);
void scale_inplace(float* g, int64_t n, float s);

}  // namespace seqpar
