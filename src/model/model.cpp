// The model's construction and its compute: the layers' forward and backward (attention
// through the strategy, row-parallel linears under tp), the embedding and the loss. The
// other concerns live beside it (see model.hpp's opening comment).
#include "model/model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/profile.hpp"
#include "core/rng.hpp"
#include "kernels/ops.hpp"

namespace seqpar {

Model::Model(const ModelConfig& cfg, int B, int T, Arena& arena, const ModelParallel& par)
    : cfg_(cfg), B_(B), T_(T), par_(par), arena_(arena) {
  cfg_.validate();
  SP_CHECK(B >= 1, "batch B must be >= 1, got ", B);
  SP_CHECK(T >= 1, "local tokens T must be >= 1, got ", T);
  tp_ = par_.tp.size();
  tp_rank_ = par_.tp.rank();
  seq_par_ = par_.tp_sequence_parallel;
  N_ = int64_t(B) * T;
  // Megatron sequence parallelism: tp rank t holds ⌊N/tp⌋ + [t < N mod tp] consecutive rows
  // of the flattened (B·T) shard (any N ≥ tp; uneven splits move by all-gather-v and
  // reduce-scatter-v).
  SP_CHECK(!seq_par_ || N_ >= tp_, "the ", B, "×", T, " = ", N_,
           " rows of the sequence shard are fewer than tp=", tp_,
           " (Megatron sequence parallelism gives every tp rank at least one row)");
  R_ = seq_par_ ? N_ / tp_ + (tp_rank_ < N_ % tp_ ? 1 : 0) : N_;
  SP_CHECK_USAGE(par_.precision == Precision::fp32 || tp_ == 1 || cfg_.C % 2 == 0,
                 "--precision bf16 with tp=", tp_, " needs an even width C (got ", cfg_.C,
                 "): the Megatron all-gathers move bf16 rows as pairs of elements");
  specs_ = param_specs(cfg_, tp_, tp_rank_);
  Ht_ = cfg_.H / tp_;
  Hkvt_ = kv_heads_per_rank(cfg_, tp_);
  Ft_ = cfg_.F / tp_;
  std::tie(v0_, Vt_) = vocab_range(cfg_.V, tp_, tp_rank_);
  n_params_ = specs_.back().offset + specs_.back().numel;
  n_repl_ = 0;
  for (const auto& s : specs_)
    if (s.replicated) n_repl_ = s.offset + s.numel;
  if (par_.sharded) {
    src_params_ = par_.sharded->holds_params() ? par_.sharded : nullptr;
    src_grads_ = par_.sharded->holds_grads() ? par_.sharded : nullptr;
    for (int u = 0; u <= cfg_.n_layer; ++u) unit_specs_.push_back(unit_specs(specs_, u));
  }
  // Held by a ParamSource: the views are set unit by unit as it hands the blocks over. An
  // inference model reads another model's block and has no gradients.
  if (!src_params_ && !par_.shared_params)
    params_ = Buffer(arena, Mem::params, n_params_, "parameters");
  if (!src_grads_ && !par_.inference) grads_ = Buffer(arena, Mem::grads, n_params_, "gradients");
  pv_ = param_views(specs_, cfg_.n_layer, par_.shared_params ? par_.shared_params : params_.data());
  gv_ = param_views(specs_, cfg_.n_layer, grads_.data());
  layout_buffers();
  // MPI's temporaries for the tp collectives of a layer (comm.hpp: Comm::scratch_bytes), on
  // the N·C floats of the sequence shard's rows: under Megatron sequence parallelism the
  // all-gather before a column-parallel linear and the reduce-scatter after a row-parallel
  // one, without it the all-reduce; and the loss's all-reduces of N floats (per token).
  if (tp_ > 1) {
    const Comm& tp = *par_.tp.comm;
    const uint64_t rows = uint64_t(N_) * cfg_.C * sizeof(float);
    const uint64_t s =
        seq_par_
            ? std::max(tp.scratch_bytes(N_ % tp_ == 0 ? Coll::allgather : Coll::allgatherv, rows),
                       tp.scratch_bytes(Coll::reduce_scatter, rows))
            : tp.scratch_bytes(Coll::allreduce, rows);
    arena.note_outside(std::max(s, tp.scratch_bytes(Coll::allreduce, uint64_t(N_) * sizeof(float))),
                       "tensor-parallel row collectives");
  }
  // One strategy instance serves every layer: strategies keep no state between forward
  // and backward beyond what the model passes back (O, LSE).
  SpSetup sp = par_.sp;
  // The materialised baseline keeps P of every layer unless its core is recomputed.
  sp.materialized_layers = par_.recompute == Recompute::none ? cfg_.n_layer : 1;
  sp.precision = par_.precision;
  attn_.push_back(par_.attention
                      ? par_.attention(arena, sp, B, T, Ht_, Hkvt_, cfg_.d())
                      : make_attention(par_.strategy, arena, sp, B, T, Ht_, Hkvt_, cfg_.d()));
}

Model::~Model() = default;

void Model::zero_grad() {
  SP_CHECK(!par_.inference, "an inference model has no gradients");
  // A ParamSource hands out zeroed gradient blocks itself (grad()).
  if (!arena_.dry_run() && grads_.data()) std::memset(grads_.data(), 0, sizeof(float) * n_params_);
}

AttnShard Model::shard(int l, const Batch& b, const StepContext& ctx, const float* qkv) const {
  AttnShard s{qkv,
              b.pos.data(),
              B_,
              T_,
              Ht_,
              Hkvt_,
              cfg_.d(),
              b.L,
              cfg_.causal(),
              ctx.train ? cfg_.attn_dropout : 0.0f,
              ctx.seed,
              ctx.step,
              uint32_t(l)};
  s.head_offset = tp_rank_ * Ht_;  // global head index of local head 0 (dropout keys)
  if (!b.mask.trivial()) s.mask = &b.mask;
  return s;
}

template <class S>
const float* Model::qkv_f32(const LayerActs& a, float* buf) const {
  if constexpr (std::is_same_v<S, float>) {
    return static_cast<const float*>(a.qkv);
  } else {
    const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * cfg_.d();
    to_float(buf, static_cast<const S*>(a.qkv), N_ * Wt);
    return buf;
  }
}

// The strategies take fp32 QKV and write fp32 O (their score tiles and merges are fp32
// whatever the storage): under bf16, QKV is widened into dqkv_ and O written into datt_
// (both idle until backward), then O rounded into the stored a.att.
template <class S>
void Model::attention_forward(int l, const Batch& b, const StepContext& ctx, LayerActs& a) {
  const float* qkv = qkv_f32<S>(a, dqkv_);
  const PhaseScope phase(Phase::attention_fwd);
  if constexpr (std::is_same_v<S, float>) {
    attn_[0]->forward(shard(l, b, ctx, qkv), static_cast<float*>(a.att), a.lse);
  } else {
    attn_[0]->forward(shard(l, b, ctx, qkv), datt_, a.lse);
    to_bf16(static_cast<S*>(a.att), datt_, N_ * int64_t(Ht_) * cfg_.d());
  }
}

// LayerNorm (gpt, bert) or RMSNorm (llama) over this rank's R rows. RMSNorm has no mean
// and no bias: `mean` and `b` are unused. Backward accumulates into dinp and dw (db).
template <class O, class I>
void Model::norm_forward(O* out, float* mean, float* rstd, const I* in, const float* w,
                         const float* b) {
  if (cfg_.llama())
    rmsnorm_forward(out, rstd, in, w, R_, cfg_.C, cfg_.norm_eps);
  else
    layernorm_forward(out, mean, rstd, in, w, b, R_, cfg_.C);
}

template <class S>
void Model::norm_backward(float* dinp, float* dw, float* db, const float* dout, const S* inp,
                          const float* w, const float* mean, const float* rstd) {
  if (cfg_.llama())
    rmsnorm_backward(dinp, dw, dout, inp, w, rstd, R_, cfg_.C);
  else
    layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, R_, cfg_.C);
}

const RopeFreqs& Model::rope_freqs(const Batch& b) {
  // Only dynamic scaling depends on the length: every other type computes once.
  const int64_t L =
      cfg_.rope_scaling == RopeScaling::dynamic ? (b.rope_len > 0 ? b.rope_len : b.L) : 0;
  if (L != rope_L_) {
    rope_ = rope_frequencies(cfg_.rope_theta, cfg_.d(), cfg_.rope_params(), L);
    rope_L_ = L;
  }
  return rope_;
}

template <class S>
void Model::layer_forward(int l, const Batch& b, const StepContext& ctx, LayerActs& a, S* next) {
  const int64_t N = N_, R = R_, C = cfg_.C, d = cfg_.d();
  const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * d, HDt = int64_t(Ht_) * d, Ft = Ft_;
  const LayerParams& P = pv_.layers[l];
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  const int64_t* keys = b.row_key.data() + row_begin();
  S *x_in = static_cast<S*>(a.x_in), *ln1 = static_cast<S*>(a.ln1), *qkv = static_cast<S*>(a.qkv);
  S *att = static_cast<S*>(a.att), *x_mid = static_cast<S*>(a.x_mid), *ln2 = static_cast<S*>(a.ln2);
  S *fc1 = static_cast<S*>(a.fc1), *gelu = static_cast<S*>(a.gelu);
  float* ls = lin_scratch_;
  // Attention block: LN on this rank's rows; all-gather the sequence (in S: full_ holds S
  // rows); column-parallel QKV.
  norm_forward(ln1, a.ln1_mean, a.ln1_rstd, x_in, P.ln1_w, P.ln1_b);
  const bool sp = tp_ > 1 && seq_par_;  // Megatron sequence parallelism in the tp group
  S* full = reinterpret_cast<S*>(full_);
  const S* in = ln1;
  if (sp) {
    gather_rows_s(ln1, full, C);
    in = full;
  }
  linear_forward(qkv, in, P.qkv_w, P.qkv_b, N, C, Wt, ls);
  const int64_t* rp = b.rope_pos.empty() ? b.pos.data() : b.rope_pos.data();
  const int64_t rps = b.rope_pos.empty() ? 0 : T_;  // per-row positions (documents reset)
  const RopeFreqs& rf = rope_freqs(b);
  rope_forward(qkv, rp, B_, T_, Ht_, d, Wt, rf, rps);
  rope_forward(qkv + Ht_ * d, rp, B_, T_, Hkvt_, d, Wt, rf, rps);
  attention_forward<S>(l, b, ctx, a);
  // Row-parallel proj: partial sums over this rank's heads, reduce-scattered to rows.
  row_parallel_forward(x_mid, att, P.proj_w, P.proj_b, HDt);
  if (p_drop > 0)
    dropout_forward(x_mid, x_mid, keys, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, uint32_t(l), RngSite::attn_out_dropout});
  residual_forward(x_mid, x_in, x_mid, R * C);
  // MLP block, same pattern with FC1 column-parallel and FC2 row-parallel.
  norm_forward(ln2, a.ln2_mean, a.ln2_rstd, x_mid, P.ln2_w, P.ln2_b);
  in = ln2;
  if (sp) {
    gather_rows_s(ln2, full, C);
    in = full;
  }
  if (cfg_.llama()) {  // SwiGLU: one product for [gate | up], then silu(gate)·up
    linear_forward(fc1, in, P.fc1_w, nullptr, N, C, 2 * Ft, ls);
    swiglu_forward(gelu, fc1, N, Ft);
  } else {
    linear_forward(fc1, in, P.fc1_w, P.fc1_b, N, C, Ft, ls);
    gelu_forward(gelu, fc1, N * Ft);
  }
  row_parallel_forward(next, gelu, P.fc2_w, P.fc2_b, Ft);
  if (p_drop > 0)
    dropout_forward(next, next, keys, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, uint32_t(l), RngSite::mlp_out_dropout});
  residual_forward(next, x_mid, next, R * C);
}

// ---- embedding and loss: replicated at tp = 1, vocabulary-parallel under tp ------------
//
// Vocabulary parallelism (Megatron): tp rank r holds vocabulary rows [v0, v0 + Vt) of the
// embedding and of the head.
//  embedding: each rank looks up the tokens it holds (0 for the others) for all N rows of
//    the shard; the partial rows are summed over tp (reduce-scattered to this rank's R rows
//    under sequence parallelism, all-reduced otherwise).
//  loss: the head sees the final norm's output for all N rows; each rank computes, over its
//    Vt logits per row, m = max, s = Σ exp(z − m) and the target logit z_t if it holds the
//    target; then over tp  M = max_r m_r,  S = Σ_r s_r·exp(m_r − M),  Z = Σ_r z_t,r, and
//    lse = M + log S, loss = lse − Z. Backward: ∂loss/∂z = softmax(z) − onehot = exp(z −
//    lse) − onehot on each rank's shard; ∂/∂x sums the shards' products over tp (reduce-
//    scattered to R rows, or all-reduced).

const float* Model::head_input() {
  if (tp_ > 1 && seq_par_) {
    gather_rows(lnf_, full_, cfg_.C);
    return full_;
  }
  return lnf_;  // R = N
}

void Model::embed_forward(const Batch& b) {
  const int64_t C = cfg_.C, V = cfg_.V;
  if (tp_ == 1) {
    if (par_.precision == Precision::bf16)
      embedding_forward(static_cast<bf16*>(la_[0].x_in), b.tokens.data(), pv_.wte, R_, C, V);
    else
      embedding_forward(static_cast<float*>(la_[0].x_in), b.tokens.data(), pv_.wte, R_, C, V);
    return;
  }
  // tp > 1: the partial rows are summed in fp32 (in x itself, or in dln_ under bf16, free
  // in forward) and stored once.
  const bool bf = par_.precision == Precision::bf16;
  float* x = bf ? dln_ : static_cast<float*>(la_[0].x_in);
  float* part = seq_par_ ? full_ : x;  // (N, C)
  for (int64_t i = 0; i < N_; ++i) {
    const int32_t tok = b.tokens[i];
    SP_CHECK(tok >= 0 && tok < V, "token at row ", i, " is ", tok, ", expected in [0, ", V, ")");
    float* o = part + i * C;
    if (tok >= v0_ && tok < v0_ + Vt_)
      std::memcpy(o, pv_.wte + (tok - v0_) * C, sizeof(float) * C);
    else
      std::memset(o, 0, sizeof(float) * C);
  }
  if (seq_par_)
    reduce_scatter_rows(full_, x, C);
  else
    allreduce_rows(x, C);
  if (bf) to_bf16(static_cast<bf16*>(la_[0].x_in), x, R_ * C);
}

void Model::embed_backward(const Batch& b, const float* dx) {
  const int64_t C = cfg_.C;
  if (tp_ == 1) {
    embedding_backward(gv_.wte, dx, b.tokens.data(), R_, C);
    return;
  }
  const float* full = dx;  // (N, C): identical on every tp rank without sequence parallelism
  if (seq_par_) {
    gather_rows(dx, dfull_, C);
    full = dfull_;
  }
  for (int64_t i = 0; i < N_; ++i) {
    const int32_t tok = b.tokens[i];
    if (tok < v0_ || tok >= v0_ + Vt_) continue;
    float* g = gv_.wte + (tok - v0_) * C;
    for (int64_t c = 0; c < C; ++c) g[c] += full[i * C + c];
  }
}

double Model::loss_forward(const Batch& b) {
  const PhaseScope phase(Phase::loss);
  const int64_t N = N_, C = cfg_.C, Vt = Vt_;
  const int32_t* tg = b.targets.data();  // (N) the whole sp shard
  const float* x = head_input();
  if (par_.loss == LossImpl::fused) {
    fused_xent_stats(xent_m_, xent_s_, xent_zt_, x, pv_.head, tg, N, C, Vt, v0_, par_.loss_chunks,
                     xent_scratch_);
  } else {
    linear_forward(logits_, x, pv_.head, nullptr, N, C, Vt);
    for (int64_t i = 0; i < N; ++i) {
      const float* z = logits_ + i * Vt;
      const float m = *std::max_element(z, z + Vt);
      double s = 0.0;
      for (int64_t j = 0; j < Vt; ++j) s += std::exp(double(z[j]) - m);
      xent_m_[i] = m;
      xent_s_[i] = float(s);
      xent_zt_[i] = tg[i] >= v0_ && tg[i] < v0_ + Vt ? z[tg[i] - v0_] : 0.0f;
    }
  }
  if (tp_ > 1) {
    // Combine the shards' statistics (see above): M, then S rescaled to M, then Z.
    std::memcpy(dlosses_, xent_m_, sizeof(float) * N);  // dlosses_: free until backward
    par_.tp.comm->allreduce_max(xent_m_, size_t(N));
    for (int64_t i = 0; i < N; ++i) xent_s_[i] *= std::exp(dlosses_[i] - xent_m_[i]);
    par_.tp.comm->allreduce_sum(xent_s_, size_t(N));
    par_.tp.comm->allreduce_sum(xent_zt_, size_t(N));
  }
  const int64_t rb = row_begin();
  double sum = 0.0;
  for (int64_t i = 0; i < N; ++i) lse_[i] = xent_m_[i] + std::log(xent_s_[i]);
  for (int64_t i = 0; i < R_; ++i) {
    const int64_t g = rb + i;
    losses_[i] = tg[g] >= 0 ? lse_[g] - xent_zt_[g] : 0.0f;
    sum += losses_[i];
  }
  return sum;
}

void Model::loss_backward(const Batch& b, float loss_scale) {
  const PhaseScope phase(Phase::loss);
  const int64_t N = N_, C = cfg_.C, Vt = Vt_;
  const int32_t* tg = b.targets.data();
  // Every row's loss is counted once in the global sum, so every rank takes loss_scale for
  // all N rows of its vocabulary shard.
  for (int64_t i = 0; i < N; ++i) dlosses_[i] = tg[i] >= 0 ? loss_scale : 0.0f;
  const float* x = head_input();
  const bool sp = tp_ > 1 && seq_par_;
  float* dx = sp ? dfull_ : dln_;  // (N, C)
  std::memset(dx, 0, sizeof(float) * N * C);
  if (par_.loss == LossImpl::fused) {
    fused_xent_backward(dx, gv_.head, x, pv_.head, tg, lse_, dlosses_, N, C, Vt, v0_,
                        par_.loss_chunks, xent_scratch_);
  } else {
    for (int64_t i = 0; i < N; ++i) {
      const float* z = logits_ + i * Vt;
      float* dz = dlogits_ + i * Vt;
      for (int64_t j = 0; j < Vt; ++j)
        dz[j] = (std::exp(z[j] - lse_[i]) - float(tg[i] == v0_ + j)) * dlosses_[i];
    }
    linear_backward(dx, gv_.head, nullptr, dlogits_, x, pv_.head, N, C, Vt);
  }
  if (sp)
    reduce_scatter_rows(dfull_, dln_, C);
  else if (tp_ > 1)
    allreduce_rows(dln_, C);
}

double Model::forward(const Batch& b, const StepContext& ctx) {
  SP_CHECK(b.B == B_ && b.T == T_, "batch shard is (", b.B, ", ", b.T,
           "), the model was built for (", B_, ", ", T_, ")");
  SP_CHECK(b.rope_pos.empty() || b.rope_pos.size() == size_t(B_) * T_, "batch has ",
           b.rope_pos.size(), " RoPE positions, expected none or B·T = ", int64_t(B_) * T_);
  if (!b.mask.trivial()) {
    SP_CHECK(b.mask.B == B_ && b.mask.L == b.L, "batch mask is for (B, L) = (", b.mask.B, ", ",
             b.mask.L, "), the batch is (", B_, ", ", b.L, ")");
    b.mask.check();
  }
  if (arena_.dry_run()) return 0.0;
  // --profile: what no narrower scope (linear, attention, loss, comm) claims is the
  // layers' element-wise work.
  const PhaseScope phase(Phase::norm_act);
  const int n = cfg_.n_layer;
  if (src_params_) set_unit_views(pv_, 0, src_params_->fetch(0, n > 0 ? 1 : -1));
  embed_forward(b);
  if (par_.precision == Precision::bf16)
    forward_layers<bf16>(b, ctx);
  else
    forward_layers<float>(b, ctx);
  if (par_.inference) return 0.0;  // generation reads logits() of the rows it needs
  return loss_forward(b);
}

// Embedding dropout, the layers and the final norm (which reads the stored residual and
// writes fp32 for the head).
template <class S>
void Model::forward_layers(const Batch& b, const StepContext& ctx) {
  const int64_t R = R_, C = cfg_.C, rb = row_begin();
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  S* x0 = static_cast<S*>(la_[0].x_in);
  if (p_drop > 0)
    dropout_forward(x0, x0, b.row_key.data() + rb, R, C,
                    DropoutKey{p_drop, ctx.seed, ctx.step, 0, RngSite::embed_dropout});
  const int n = cfg_.n_layer;
  for (int l = 0; l < n; ++l) {
    // ZeRO 3: this layer's parameters gathered, the next one's gather posted; dropped after.
    if (src_params_) set_unit_views(pv_, 1 + l, src_params_->fetch(1 + l, l + 1 < n ? 2 + l : -1));
    layer_forward<S>(l, b, ctx, la_[l], static_cast<S*>(l + 1 < n ? la_[l + 1].x_in : x_out_));
    if (src_params_) src_params_->drop(1 + l);
  }
  norm_forward(lnf_, lnf_mean_, lnf_rstd_, static_cast<const S*>(x_out_), pv_.lnf_w, pv_.lnf_b);
}

void Model::backward(const Batch& b, const StepContext& ctx, float loss_scale) {
  SP_CHECK(!par_.inference, "an inference model has no backward pass");
  if (arena_.dry_run()) return;
  const PhaseScope phase(Phase::norm_act);
  const int64_t R = R_, C = cfg_.C, rb = row_begin();
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  if (src_grads_) set_unit_views(gv_, 0, src_grads_->grad(0));
  loss_backward(b, loss_scale);
  std::memset(dx_, 0, sizeof(float) * R * C);
  const bool bf = par_.precision == Precision::bf16;
  if (bf)
    norm_backward(dx_, gv_.lnf_w, gv_.lnf_b, dln_, static_cast<const bf16*>(x_out_), pv_.lnf_w,
                  lnf_mean_, lnf_rstd_);
  else
    norm_backward(dx_, gv_.lnf_w, gv_.lnf_b, dln_, static_cast<const float*>(x_out_), pv_.lnf_w,
                  lnf_mean_, lnf_rstd_);
  for (int l = cfg_.n_layer - 1; l >= 0; --l) {
    // ZeRO 3: the layer's parameters gathered again (the previous layer's posted); ZeRO 2:
    // its gradient block handed out, and reduce-scattered once the layer is done.
    if (src_params_) set_unit_views(pv_, 1 + l, src_params_->fetch(1 + l, l > 0 ? l : -1));
    if (src_grads_) set_unit_views(gv_, 1 + l, src_grads_->grad(1 + l));
    if (bf)
      layer_backward<bf16>(l, b, ctx);
    else
      layer_backward<float>(l, b, ctx);
    if (src_grads_) src_grads_->grad_done(1 + l);
    if (src_params_) src_params_->drop(1 + l);
  }
  std::memset(dtmp_, 0, sizeof(float) * R * C);
  dropout_backward(dtmp_, dx_, b.row_key.data() + rb, R, C,
                   DropoutKey{p_drop, ctx.seed, ctx.step, 0, RngSite::embed_dropout});
  embed_backward(b, dtmp_);
  if (src_grads_) src_grads_->grad_done(0);
}

// One layer's backward: on entry dx_ = ∂loss/∂(layer output), on exit ∂loss/∂x_in.
// Saved S tensors are read through the kernels' storage type; every gradient is fp32.
template <class S>
void Model::layer_backward(int l, const Batch& b, const StepContext& ctx) {
  const int64_t N = N_, R = R_, C = cfg_.C, d = cfg_.d(), rb = row_begin();
  const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * d, HDt = int64_t(Ht_) * d, Ft = Ft_;
  const float p_drop = ctx.train ? cfg_.dropout : 0.0f;
  const int64_t* keys = b.row_key.data() + rb;
  auto key = [&](uint32_t layer, RngSite site) {
    return DropoutKey{p_drop, ctx.seed, ctx.step, layer, site};
  };
  auto zero = [](float* x, int64_t n) { std::memset(x, 0, sizeof(float) * n); };
  // tp: Megatron sequence parallelism (sharded rows, gather / reduce-scatter);
  // ar: plain tensor parallelism (all rows everywhere, all-reduce of input gradients).
  const bool tp = tp_ > 1 && seq_par_, ar = tp_ > 1 && !seq_par_;
  float* ls = lin_scratch_;
  const LayerParams& P = pv_.layers[l];
  LayerParams& G = gv_.layers[l];
  LayerActs& a = la_[l];
  if (par_.recompute == Recompute::full)
    layer_forward<S>(l, b, ctx, a, reinterpret_cast<S*>(dtmp_));
  if (par_.recompute == Recompute::selective) attention_forward<S>(l, b, ctx, a);
  const S *x_in = static_cast<S*>(a.x_in), *ln1 = static_cast<S*>(a.ln1);
  const S *att = static_cast<S*>(a.att), *x_mid = static_cast<S*>(a.x_mid);
  const S *ln2 = static_cast<S*>(a.ln2), *fc1 = static_cast<S*>(a.fc1);
  const S* gelu = static_cast<S*>(a.gelu);
  // dx_ = ∂loss/∂(layer output): into the residual (x_mid) and through dropout(fc2(·)).
  zero(dtmp_, R * C);
  dropout_backward(dtmp_, dx_, keys, R, C, key(l, RngSite::mlp_out_dropout));
  const float* dnext = dtmp_;
  if (tp) {
    if (G.fc2_b) bias_backward(G.fc2_b, dtmp_, R, C);
    gather_rows(dtmp_, dfull_, C);  // backward of the reduce-scatter
    dnext = dfull_;
  }
  zero(dgelu_, N * Ft);
  linear_backward(dgelu_, G.fc2_w, tp ? nullptr : G.fc2_b, dnext, gelu, P.fc2_w, N, Ft, C, ls);
  const int64_t F1t = cfg_.llama() ? 2 * Ft : Ft;
  if (cfg_.llama()) {
    swiglu_backward(dfc1_, dgelu_, fc1, N, Ft);
  } else {
    zero(dfc1_, N * Ft);
    gelu_backward(dfc1_, fc1, dgelu_, N * Ft);
  }
  S* full = reinterpret_cast<S*>(full_);  // gathered S rows
  if (tp) {
    gather_rows_s(ln2, full, C);  // the input was kept sharded: gather it again
    zero(dfull_, N * C);
    linear_backward(dfull_, G.fc1_w, G.fc1_b, dfc1_, full, P.fc1_w, N, C, F1t, ls);
    reduce_scatter_rows(dfull_, dln_, C);  // backward of the all-gather
  } else {
    zero(dln_, R * C);
    linear_backward(dln_, G.fc1_w, G.fc1_b, dfc1_, ln2, P.fc1_w, N, C, F1t, ls);
    if (ar) allreduce_rows(dln_, C);  // each rank holds its F/t columns' share
  }
  norm_backward(dx_, G.ln2_w, G.ln2_b, dln_, x_mid, P.ln2_w, a.ln2_mean, a.ln2_rstd);
  // dx_ = ∂loss/∂x_mid.
  zero(dtmp_, R * C);
  dropout_backward(dtmp_, dx_, keys, R, C, key(l, RngSite::attn_out_dropout));
  dnext = dtmp_;
  if (tp) {
    if (G.proj_b) bias_backward(G.proj_b, dtmp_, R, C);
    gather_rows(dtmp_, dfull_, C);
    dnext = dfull_;
  }
  zero(datt_, N * HDt);
  linear_backward(datt_, G.proj_w, tp ? nullptr : G.proj_b, dnext, att, P.proj_w, N, HDt, C, ls);
  zero(dqkv_, N * Wt);
  // The strategies read fp32 QKV and O: under bf16 widened into dfc1_ and dgelu_ (free now).
  const float* o32 = reinterpret_cast<const float*>(att);
  if constexpr (!std::is_same_v<S, float>) {
    to_float(bwd_o32_, att, N * HDt);
    o32 = bwd_o32_;
  }
  {
    const PhaseScope phase(Phase::attention_bwd);
    attn_[0]->backward(shard(l, b, ctx, qkv_f32<S>(a, bwd_qkv32_)), o32, a.lse, datt_, dqkv_);
  }
  const int64_t* rp = b.rope_pos.empty() ? b.pos.data() : b.rope_pos.data();
  const int64_t rps = b.rope_pos.empty() ? 0 : T_;
  const RopeFreqs& rf = rope_freqs(b);
  rope_backward(dqkv_, rp, B_, T_, Ht_, d, Wt, rf, rps);
  rope_backward(dqkv_ + Ht_ * d, rp, B_, T_, Hkvt_, d, Wt, rf, rps);
  if (tp) {
    gather_rows_s(ln1, full, C);
    zero(dfull_, N * C);
    linear_backward(dfull_, G.qkv_w, G.qkv_b, dqkv_, full, P.qkv_w, N, C, Wt, ls);
    reduce_scatter_rows(dfull_, dln_, C);
  } else {
    zero(dln_, R * C);
    linear_backward(dln_, G.qkv_w, G.qkv_b, dqkv_, ln1, P.qkv_w, N, C, Wt, ls);
    if (ar) allreduce_rows(dln_, C);
  }
  norm_backward(dx_, G.ln1_w, G.ln1_b, dln_, x_in, P.ln1_w, a.ln1_mean, a.ln1_rstd);
  // dx_ = ∂loss/∂x_in.
}

}  // namespace seqpar
