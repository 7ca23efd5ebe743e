// The Transformer: pre-norm blocks with rotary positions (RoPE), in three kinds.
//
//   x₀ = dropout(wte[tokens])
//   per layer l:  a  = x + dropout(proj(attention(rope(qkv(norm1(x))))))
//                 x' = a + dropout(fc2(act(fc1(norm2(a)))))
//   loss = token-weighted cross-entropy of head · normf(x_L)
//  * gpt: LayerNorm, GELU, biases; causal attention, next-token targets.
//  * bert: gpt's blocks with bidirectional attention and masked-LM targets (the loss only
//    counts masked positions).
//  * llama: RMSNorm, SwiGLU (fc1 = [gate | up], act = silu(gate)·up), no biases, grouped-
//    query attention (Hkv < H kv heads, each read by H/Hkv query heads), Hugging Face
//    parameter names (docs/llama.md).
// The head is the embedding (tied) or a V×C matrix of its own (--untie-embeddings; the
// default for llama: tie_embeddings in model/config.hpp). The loss is fused by default:
// hidden states go to the loss in chunks of tokens and vocabulary (kernels/fused_xent.hpp),
// never holding the (rows, V) logits; LossImpl::materialized keeps them (the reference).
//
// Parallelism the model is built for (the model never knows which attention strategy
// runs; it calls parallel/attention.hpp with its shard and the global positions):
//  * sequence parallel (sp): this rank holds T = L/sp tokens of each of B sequences;
//  * Megatron tensor + sequence parallel (tp = t, docs/megatron.md): the B·T rows of the
//    sp shard are split again into R = B·T/t rows per tp rank, on which embedding,
//    LayerNorm, dropout, residual, head and loss run; QKV and FC1 are column-parallel
//    (H/t heads, Hkv/t kv heads — or one kv head replicated on t/Hkv ranks when Hkv < t —
//    F/t columns), proj and FC2 row-parallel; the sequence is all-gathered before each
//    column-parallel linear and reduce-scattered after each row-parallel one. Embedding
//    and head are vocabulary-parallel: tp rank r holds Vt ≈ V/t vocabulary rows.
//
// Memory follows llm.c: parameters, gradients and activations each live in ONE arena
// block with views into it, sizes computed in one place; nothing is allocated inside a
// step. Activation recomputation (--recompute) decides what is kept per layer.
//
// Where each concern lives (model/):
//   model.hpp, model.cpp  Batch, ModelParallel, Model: construction, the layers' forward
//                         and backward, embedding, loss
//   param_specs.hpp/.cpp  parameter specs and their tensor-parallel shards, views into the
//                         block, shard/gather of a tensor (checkpoints), initial values
//   zero_units.hpp/.cpp   parameter units and the ParamSource interface (ZeRO)
//   activations.cpp       the layout of saved activations and scratch (layout_buffers)
//   megatron_rows.cpp     row collectives over the tp group, the row-parallel linear
//   infer_heads.cpp       argmax and logits after forward
//   (the enums' names: their EnumNames tables, core/names.hpp)
//   config.hpp/.cpp       ModelConfig
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.hpp"
#include "core/bf16.hpp"
#include "kernels/fused_xent.hpp"
#include "model/config.hpp"
#include "model/param_specs.hpp"
#include "model/zero_units.hpp"
#include "parallel/attention.hpp"

namespace seqpar {

class Comm;

enum class Recompute { none, selective, full };
template <>
struct EnumNames<Recompute> {
  static constexpr const char* what = "recompute mode";
  static constexpr std::pair<Recompute, const char*> table[] = {
      {Recompute::none, "none"}, {Recompute::selective, "selective"}, {Recompute::full, "full"}};
};
inline const char* recompute_name(Recompute r) { return enum_name(r); }
inline Recompute parse_recompute(const std::string& s) { return parse_enum<Recompute>(s); }

// Storage precision of the activations saved for backward (core/bf16.hpp, docs/precision.md).
inline const char* precision_name(Precision p) { return enum_name(p); }
inline Precision parse_precision(const std::string& s) { return parse_enum<Precision>(s); }

// Per-step inputs of this rank's sequence shard (all tp ranks of a group hold the same).
struct Batch {
  int B = 0, T = 0;              // sp shard shape
  int64_t L = 0;                 // global sequence length
  std::vector<int32_t> tokens;   // (B, T) input tokens
  std::vector<int32_t> targets;  // (B, T) target per position, −1 = not counted
  std::vector<int64_t> pos;      // (T) global positions of the shard's tokens
  std::vector<int64_t> row_key;  // (B, T) global token id: sample·L + position (RNG key)
  // Document masks and sliding window of the whole (B, L) batch, the same on every rank of
  // the sp group (packed documents, --window); the default (trivial) masks nothing beyond
  // causality. The model hands it to the attention strategy only when it is not trivial.
  SeqMask mask;
  // (B, T) RoPE positions when they restart at each document (--doc-positions reset);
  // empty: every row rotates by pos. Dropout keys, the mask and the strategies always use
  // the global positions pos.
  std::vector<int64_t> rope_pos;
  // The sequence length dynamic RoPE scaling scales its base for (kernels/rope.hpp); 0: L.
  // Generation sets the whole generation's length (prompt + new tokens), so the prompt's
  // cached keys and every decoded query rotate alike.
  int64_t rope_len = 0;
};

struct StepContext {
  uint64_t seed = 0;
  uint32_t step = 0;
  bool train = true;  // dropout on
};

// How the loss is computed: fused (hidden states straight to the loss in chunks of tokens
// and vocabulary, never holding the (rows, V) logits) or materialized (the logits and their
// gradient in full: the reference and the baseline).
enum class LossImpl { fused, materialized };
template <>
struct EnumNames<LossImpl> {
  static constexpr const char* what = "loss";
  static constexpr std::pair<LossImpl, const char*> table[] = {
      {LossImpl::fused, "fused"}, {LossImpl::materialized, "materialized"}};
};
inline const char* loss_name(LossImpl l) { return enum_name(l); }
inline LossImpl parse_loss(const std::string& s) { return parse_enum<LossImpl>(s); }

struct ModelParallel {
  Strategy strategy = Strategy::local;
  SpSetup sp;
  TpSetup tp;
  Recompute recompute = Recompute::none;
  // Megatron sequence parallelism inside the tp group (default). Off: plain tensor
  // parallelism — every tp rank holds all B·T rows for LayerNorm, dropout, residual and
  // head, and an all-reduce follows each row-parallel linear (and each column-parallel
  // input gradient) instead of the reduce-scatter / all-gather pair.
  bool tp_sequence_parallel = true;
  LossImpl loss = LossImpl::fused;
  XentChunks loss_chunks;  // fused loss chunk sizes (0: the kernel's defaults)
  // Storage type S of the saved activations (LayerActs' `S` fields, the final residual);
  // compute, statistics, gradients and parameters stay fp32.
  Precision precision = Precision::fp32;
  // Inference (infer/): the attention strategy is built by this factory instead of
  // make_attention(strategy, ...) (the KV-cache prefill and decode strategies), the
  // parameters are read from `shared_params` (another model's block with the same specs)
  // instead of a block of the model's own, and `inference` leaves out the gradient block.
  using AttentionFactory = std::function<std::unique_ptr<AttentionStrategy>(
      Arena&, const SpSetup&, int B, int T, int H, int Hkv, int d)>;
  AttentionFactory attention;
  float* shared_params = nullptr;
  bool inference = false;
  // Non-null: parameters (holds_params) and/or gradients (holds_grads) live there, and the
  // model allocates no block of its own for them (params() / grads() are then null).
  ParamSource* sharded = nullptr;
};

class Model {
 public:
  // Allocates parameters, gradients, activations for a B×T sp shard, and one attention
  // strategy per layer (with its buffers) from `arena`.
  Model(const ModelConfig& cfg, int B, int T, Arena& arena,
        const ModelParallel& par = ModelParallel{});
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  const std::vector<ParamSpec>& specs() const { return specs_; }
  int64_t num_params() const { return n_params_; }    // this rank's
  int64_t num_replicated() const { return n_repl_; }  // floats of the replicated range
  // null when a ParamSource holds them; an inference model reads another's block
  float* params() { return par_.shared_params ? par_.shared_params : params_.data(); }
  float* grads() { return grads_.data(); }  // null when a ParamSource holds them

  // This rank's rows of the flattened (B·T) shard: [row_begin(), row_begin() + rows()).
  int64_t rows() const { return R_; }
  // Rows split ⌊B·T/tp⌋ + [t < B·T mod tp] per tp rank t under Megatron sequence parallelism.
  int64_t row_begin() const;
  // (offset, floats) of the parameter block holding replicated kv heads (Hkv < t): their
  // gradients are partial on each replica and are summed over the t/Hkv ranks sharing the
  // head. Empty when kv heads are not replicated.
  std::vector<std::pair<int64_t, int64_t>> kv_replica_ranges() const;

  // True when every tp rank holds the same rows (tp > 1 without sequence parallelism):
  // losses must be counted once per tp group and replicated gradients are identical.
  bool rows_replicated_over_tp() const { return tp_ > 1 && !seq_par_; }

  // GPT-2 style init keyed by (parameter name, GLOBAL element index): the same weights
  // whatever the tensor-parallel layout.
  void init_weights(uint64_t seed);

  // Forward: fills per-row losses (rows()) (0 where target < 0); returns the local SUM.
  double forward(const Batch& b, const StepContext& ctx);
  // Backward of Σ losses · loss_scale. Accumulates (+=) into grads(); zero_grad() first.
  void backward(const Batch& b, const StepContext& ctx, float loss_scale);
  void zero_grad();

  // After forward. Logits of this rank's rows (rows(), V), recomputed from the final norm's
  // output, for tests and inspection. Collective over tp.
  std::vector<float> logits();
  // After forward, before backward: argmax token of rows `rows` (indices into the B·T sp
  // shard, the same list on every tp rank). Collective over tp.
  std::vector<int32_t> argmax(const std::vector<int64_t>& rows);
  const float* losses() const { return losses_; }  // (rows())

 private:
  // Saved tensors: `S` fields are of the storage type S (float or bf16, par_.precision),
  // the row statistics fp32.
  struct LayerActs {
    void* x_in;       // S (R, C) residual stream entering the layer
    void* ln1;        // S (R, C)
    float* ln1_mean;  // (R)
    float* ln1_rstd;  // (R)
    void* qkv;        // S (N, Wt) after rotary, N = B·T, Wt = (H + 2Hkv)·d / t
    void* att;        // S (N, H·d / t)
    float* lse;       // (B, H/t, T)
    void* x_mid;      // S (R, C) residual after attention
    void* ln2;        // S (R, C)
    float* ln2_mean;  // (R)
    float* ln2_rstd;  // (R)
    void* fc1;        // S (N, F/t) pre-activation
    void* gelu;       // S (N, F/t)
  };
  // Sizes every buffer (model/activations.cpp), then lays out the saved activations (acts_,
  // and work_ under recompute) and the backward scratch (scratch_), in that order.
  struct BufferDims;
  void layout_buffers();
  void layout_saved(const BufferDims& k);
  void layout_scratch(const BufferDims& k);
  // Points the views of unit u (0: embedding, head, final norm; 1 + l: layer l) at its
  // packed block (ParamSource).
  void set_unit_views(ParamViews& v, int u, float* block) const;
  template <class O, class I>
  void norm_forward(O* out, float* mean, float* rstd, const I* in, const float* w, const float* b);
  template <class S>
  void norm_backward(float* dinp, float* dw, float* db, const float* dout, const S* inp,
                     const float* w, const float* mean, const float* rstd);
  const float* head_input();  // the final norm's output for all N rows (gathered under tp·sp)
  void embed_forward(const Batch& b);
  void embed_backward(const Batch& b, const float* dx);  // dx (R, C)
  double loss_forward(const Batch& b);
  void loss_backward(const Batch& b, float loss_scale);  // leaves ∂loss/∂lnf (R, C) in dln_
  // S: the storage type (dispatched once per call by forward / backward).
  template <class S>
  void layer_forward(int l, const Batch& b, const StepContext& ctx, LayerActs& a, S* next);
  template <class S>
  void attention_forward(int l, const Batch& b, const StepContext& ctx, LayerActs& a);
  template <class S>
  void layer_backward(int l, const Batch& b, const StepContext& ctx);
  template <class S>
  void forward_layers(const Batch& b, const StepContext& ctx);
  // fp32 views of a layer's stored QKV / O for the attention strategies (which compute and
  // communicate from fp32 inputs): the stored tensors themselves when S = float, else
  // widened into the given fp32 buffers.
  template <class S>
  const float* qkv_f32(const LayerActs& a, float* buf) const;
  AttnShard shard(int l, const Batch& b, const StepContext& ctx, const float* qkv) const;
  // Megatron sequence-parallel collectives over the tp group.
  std::vector<int64_t> row_counts(int64_t width) const;  // floats per tp rank of (R_t, width)
  void gather_rows(const float* part, float* full, int64_t width);          // (R,·) → (N,·)
  void reduce_scatter_rows(const float* full, float* part, int64_t width);  // (N,·) → (R,·)
  void allreduce_rows(float* x, int64_t width);                             // (N,·) in place
  template <class S>
  void gather_rows_s(const S* part, S* full, int64_t width);  // gather_rows of S rows
  template <class S>
  void row_parallel_forward(S* out, const S* in, const float* w, const float* bias, int64_t K);

  ModelConfig cfg_;
  // The RoPE frequencies (kernels/rope.hpp) for the length rope_L_: computed once, again
  // only when dynamic scaling meets another length.
  const RopeFreqs& rope_freqs(const Batch& b);
  RopeFreqs rope_;
  int64_t rope_L_ = -1;
  int B_, T_;
  int64_t v0_ = 0, Vt_ = 0;  // this rank's vocabulary rows [v0, v0 + Vt) (all of V when tp = 1)
  int64_t N_, R_;            // sp-shard rows B·T, and this tp rank's rows N/t
  int tp_ = 1, tp_rank_ = 0;
  bool seq_par_ = true;  // Megatron sequence parallelism (meaningful when tp > 1)
  int Ht_, Hkvt_, Ft_;   // heads, kv heads, ffn columns on this tp rank
  ModelParallel par_;
  Arena& arena_;
  std::vector<ParamSpec> specs_;
  std::vector<std::vector<ParamSpec>> unit_specs_;  // per unit, packed offsets (ParamSource)
  ParamSource* src_params_ = nullptr;               // par_.sharded when it holds the parameters
  ParamSource* src_grads_ = nullptr;                // par_.sharded when it holds the gradients
  int64_t n_params_ = 0, n_repl_ = 0;
  Buffer params_, grads_, acts_, work_, scratch_;
  ParamViews pv_, gv_;
  std::vector<LayerActs> la_;  // per layer; under recompute some point into work_
  LayerActs wk_{};             // the working layer set (recompute full), or unused
  void* x_out_;                // S (R, C) residual after the last layer
  float* lnf_;                 // (R, C)
  float* lnf_mean_;            // (R)
  float* lnf_rstd_;            // (R)
  float* logits_;              // (N, Vt) materialized loss only
  float* lse_;                 // (N) log-sum-exp of each row's logits over the whole V
  float* losses_;              // (R)
  // backward scratch (reused by every layer)
  float* dx_;            // (R, C) gradient of the residual stream
  float* dtmp_;          // (R, C)
  float* dln_;           // (R, C)
  float* full_;          // (N, C) gathered LayerNorm output / row-parallel partial sums
  float* dfull_;         // (N, C)
  float* dqkv_;          // (N, Wt)
  float* datt_;          // (N, H·d/t)
  float* dfc1_;          // (N, F/t)
  float* dgelu_;         // (N, F/t)
  float* dlogits_;       // (N, Vt) materialized loss only
  float* dlosses_;       // (N)
  float* xent_m_;        // (N) loss statistics over this rank's vocabulary shard: max,
  float* xent_s_;        // (N)   Σ exp(z − max),
  float* xent_zt_;       // (N)   target logit (0 when the target is elsewhere)
  float* xent_scratch_;  // fused loss chunk logits
  float* row_logits_;    // (Vt) one row, for argmax
  float* lin_scratch_;   // bf16: fp32 row tiles of the linears (linear_scratch_floats)
  float* bwd_qkv32_;     // bf16: (N, Wt) QKV widened for the strategies' backward
  float* bwd_o32_;       // bf16: (N, H·d/t) O widened for the strategies' backward
  std::vector<std::unique_ptr<AttentionStrategy>> attn_;  // one per layer
};

}  // namespace seqpar
