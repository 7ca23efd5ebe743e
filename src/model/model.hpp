// Transformer (pre-LayerNorm blocks, rotary positions, tied input/output embedding).
//
//   x₀ = dropout(wte[tokens])
//   per layer l:  a  = x + dropout(proj(attention(rope(qkv(ln1(x))))))
//                 x' = a + dropout(fc2(gelu(fc1(ln2(a)))))
//   logits = lnf(x_L) · wteᵀ;  loss = token-weighted cross-entropy
// gpt: causal attention, next-token targets; bert: bidirectional attention, masked-LM
// targets (the loss only counts masked positions).
//
// Memory follows llm.c: parameters, gradients and activations each live in ONE arena
// block with a struct of views into it, sizes computed in one place (param_specs /
// the ActLayout); nothing is allocated inside a step. The model sees only its local
// shard of B×T tokens with their global positions; the attention strategy does the rest.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.hpp"
#include "model/config.hpp"
#include "parallel/attention.hpp"

namespace seqpar {

class Comm;

struct ParamSpec {
  std::string name;            // safetensors / PyTorch name, e.g. "layers.0.attn.qkv.weight"
  std::vector<int64_t> shape;  // PyTorch layout (out, in) for linears
  int64_t offset = 0;          // floats from the start of the parameter block
  int64_t numel = 0;
  bool decay = false;          // AdamW weight decay applies (matrices, not biases/LN)
};
std::vector<ParamSpec> param_specs(const ModelConfig& c);

// Views into the parameter (or gradient) block.
struct LayerParams {
  float* ln1_w;   // (C)
  float* ln1_b;   // (C)
  float* qkv_w;   // ((H + 2Hkv)·d, C)
  float* qkv_b;   // ((H + 2Hkv)·d)
  float* proj_w;  // (C, C)
  float* proj_b;  // (C)
  float* ln2_w;   // (C)
  float* ln2_b;   // (C)
  float* fc1_w;   // (F, C)
  float* fc1_b;   // (F)
  float* fc2_w;   // (C, F)
  float* fc2_b;   // (C)
};
struct ParamViews {
  float* wte;    // (V, C), tied with the output head
  float* lnf_w;  // (C)
  float* lnf_b;  // (C)
  std::vector<LayerParams> layers;
};
ParamViews param_views(const ModelConfig& c, float* block);

// Per-step inputs of this rank's shard.
struct Batch {
  int B = 0, T = 0;             // local shard shape
  int64_t L = 0;                // global sequence length
  std::vector<int32_t> tokens;  // (B, T) input tokens
  std::vector<int32_t> targets; // (B, T) target per position, −1 = not counted
  std::vector<int64_t> pos;     // (T) global positions of the shard's tokens
  std::vector<int64_t> row_key; // (B, T) global token id: sample·L + position (RNG key)
};

struct StepContext {
  uint64_t seed = 0;
  uint32_t step = 0;
  bool train = true;  // dropout on
};

class Model {
 public:
  // Allocates parameters, gradients, activations for a B×T shard and the strategy's
  // buffers from `arena`. `sp` is the sequence-parallel group (default: single rank).
  Model(const ModelConfig& cfg, int B, int T, Arena& arena, const std::string& strategy = "local",
        const SpSetup& sp = SpSetup{});
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  int64_t num_params() const { return n_params_; }
  float* params() { return params_.data(); }
  float* grads() { return grads_.data(); }
  ParamViews& pv() { return pv_; }

  // GPT-2 style init from the counter-based RNG (same weights on every rank).
  void init_weights(uint64_t seed);

  // Forward: fills per-token losses (B, T) (0 where target < 0); returns the local
  // SUM of losses (the caller normalises by the global count of counted tokens).
  double forward(const Batch& b, const StepContext& ctx);
  // Backward of Σ losses · loss_scale (loss_scale = 1 / global counted tokens).
  // Accumulates (+=) into grads(); call zero_grad() first.
  void backward(const Batch& b, const StepContext& ctx, float loss_scale);
  void zero_grad();

  const float* logits() const { return logits_; }  // (B, T, V) after forward
  const float* losses() const { return losses_; }  // (B, T)

 private:
  struct LayerActs {
    float* x_in;    // (B, T, C) residual stream entering the layer
    float* ln1;     // (B, T, C)
    float* ln1_mean; float* ln1_rstd;  // (B, T)
    float* qkv;     // (B, T, (H + 2Hkv)·d), after rotary
    float* att;     // (B, T, H·d)
    float* lse;     // (B, H, T)
    float* x_mid;   // (B, T, C) residual after attention
    float* ln2;     // (B, T, C)
    float* ln2_mean; float* ln2_rstd;  // (B, T)
    float* fc1;     // (B, T, F) pre-activation
    float* gelu;    // (B, T, F)
  };
  void layout_acts();

  ModelConfig cfg_;
  int B_, T_;
  Arena& arena_;
  std::vector<ParamSpec> specs_;
  int64_t n_params_ = 0;
  Buffer params_, grads_, acts_, scratch_;
  ParamViews pv_, gv_;
  std::vector<LayerActs> la_;
  float* x_out_;     // (B, T, C) residual after the last layer
  float* lnf_;       // (B, T, C)
  float* lnf_mean_; float* lnf_rstd_;  // (B, T)
  float* logits_;    // (B, T, V)
  float* losses_;    // (B, T)
  // backward scratch (reused by every layer)
  float* dx_;        // (B, T, C) gradient of the residual stream
  float* dtmp_;      // (B, T, C)
  float* dln_;       // (B, T, C)
  float* dqkv_;      // (B, T, (H + 2Hkv)·d)
  float* datt_;      // (B, T, H·d)
  float* dfc1_;      // (B, T, F)
  float* dgelu_;     // (B, T, F)
  float* dlogits_;   // (B, T, V)
  float* dlosses_;   // (B, T)
  std::unique_ptr<AttentionStrategy> attn_;
};

}  // namespace seqpar
