#include "train/step.hpp"

#include <algorithm>
#include <cmath>
#include <optional>

#include "core/check.hpp"
#include "core/profile.hpp"
#include "kernels/ops.hpp"

namespace seqpar {

StepResult train_step(TrainState& state, Mesh& mesh, Comm& world, const TrainConfig& cfg,
                      const DataSource& src, const std::vector<int64_t>& pos, int64_t s,
                      uint64_t first_sample) {
  Model& model = state.model;
  const int B = cfg.batch, T = int(pos.size());
  const int64_t P = model.num_params(), P_repl = model.num_replicated();
  const int64_t R = model.rows(), rb = model.row_begin();
  const uint64_t first = first_sample + uint64_t(mesh.dp_rank) * B;
  std::optional<PhaseScope> phase(Phase::data);  // --profile (core/profile.hpp)
  Batch batch =
      make_batch(src, cfg.model.kind, cfg.seed, first, B, cfg.seq_len, pos, cfg.packing());
  apply_loss_on(batch, src, first, cfg.loss_on);  // --loss-on answer: the others count not
  StepContext ctx{cfg.seed, uint32_t(s), true};
  StepResult out;
  out.lr = lr_at(cfg, s);

  phase.reset();
  phase.emplace(Phase::optimizer);
  model.zero_grad();
  phase.reset();
  double local_loss = model.forward(batch, ctx);
  // Token-weighted loss over all ranks: Σ losses / Σ counted tokens.
  // This rank's rows: [rb, rb + R) of the flattened (B, T) shard (all of it when tp = 1).
  double sums[4] = {local_loss, 0.0, 0.0, 0.0};
  for (int64_t g = rb; g < rb + R; ++g) sums[1] += batch.targets[g] >= 0;
  // Without Megatron sequence parallelism every tp rank holds the same rows: count once.
  const bool count_rows = !model.rows_replicated_over_tp() || mesh.tp_rank == 0;
  // Retrieval accuracy on the answer positions of the sp shard (every tp rank asks for the
  // same rows: argmax is collective over tp), counted on the rank that owns each row.
  std::vector<int64_t> rows;
  std::vector<int32_t> want;
  for (int i = 0; i < B; ++i)
    for (int64_t ap : src.answer_positions(first + i, cfg.seq_len))
      for (int t = 0; t < T; ++t)
        if (pos[t] == ap) {
          rows.push_back(int64_t(i) * T + t);
          want.push_back(batch.targets[size_t(i) * T + t]);
        }
  const std::vector<int32_t> got = model.argmax(rows);
  for (size_t k = 0; k < rows.size(); ++k) {
    if (!count_rows || rows[k] < rb || rows[k] >= rb + R) continue;
    sums[2] += got[k] == want[k];
    sums[3] += 1;
  }
  if (!count_rows) sums[0] = sums[1] = 0.0;
  world.allreduce_sum(sums, 4);
  SP_CHECK(sums[1] > 0, "step ", s, " has no counted target tokens");
  model.backward(batch, ctx, float(1.0 / sums[1]));
  phase.emplace(Phase::optimizer);  // the gradient all-reduces inside are comm
  Zero* z = state.zero.get();
  const float wd = cfg.weight_decay;
  double gnorm = 0.0;
  if (!z) {
    // Replicated parameters: every rank holds a partial gradient, sum over the world.
    // Tensor-parallel shards: sum over the ranks holding the same shard.
    // (Without Megatron sequence parallelism they are already identical across tp.)
    (model.rows_replicated_over_tp() ? mesh.shard_comm : world)
        .allreduce_sum(model.grads(), size_t(P_repl));
    if (P > P_repl) mesh.shard_comm.allreduce_sum(model.grads() + P_repl, size_t(P - P_repl));
    // Replicated kv heads (Hkv < tp): each replica holds its query heads' share.
    const auto kv_ranges = model.kv_replica_ranges();
    for (auto [off, n] : kv_ranges) mesh.kv_comm.allreduce_sum(model.grads() + off, size_t(n));
    // ‖g‖² = Σ replicated (same on every rank) + Σ over the tp group of each rank's shards,
    // a replicated kv head counted once (on the first rank of its group).
    double ss_shard = sum_squares(model.grads() + P_repl, P - P_repl);
    if (mesh.kv_comm.rank() != 0)
      for (auto [off, n] : kv_ranges) ss_shard -= sum_squares(model.grads() + off, n);
    if (mesh.tp > 1) mesh.tp_comm.allreduce_sum(&ss_shard, 1);
    gnorm = std::sqrt(sum_squares(model.grads(), P_repl) + ss_shard);
  } else {
    // ZeRO: Σ over the world of each gradient in its owner's part (ZeRO 2, 3: the backward
    // reduce-scattered it into the shard; ZeRO 1: here, back into the full block).
    // ‖g‖² = Σ over the world of each rank's part, a replicated parameter counted on tp
    // rank 0 only (every tp rank's group holds it), a replicated kv head on the first rank
    // of its kv group.
    if (z->level() == 1) z->reduce_scatter_grads(model.grads());
    double ss = 0.0;
    for (const Zero::Seg& g : z->segments())
      if ((!g.repl || mesh.tp_rank == 0) && (!g.kv || mesh.kv_comm.rank() == 0))
        ss +=
            sum_squares(z->level() >= 2 ? z->grad_shard() + g.shard : model.grads() + g.flat, g.n);
    world.allreduce_sum(&ss, 1);
    gnorm = std::sqrt(ss);
  }
  SP_CHECK(std::isfinite(gnorm), "gradient norm is ", gnorm, " at step ", s, " (loss ",
           sums[0] / sums[1], "): training diverged; lower --lr");
  const bool clip = cfg.grad_clip > 0 && gnorm > cfg.grad_clip;
  const float clip_scale = float(cfg.grad_clip / gnorm);
  if (!z) {
    if (clip) scale_inplace(model.grads(), P, clip_scale);
    for (const auto& spec : model.specs())
      adamw_update(model.params() + spec.offset, model.grads() + spec.offset,
                   state.m.data() + spec.offset, state.v.data() + spec.offset, spec.numel, out.lr,
                   cfg.beta1, cfg.beta2, cfg.eps, spec.decay ? wd : 0.0f, s + 1);
  } else {
    // AdamW is elementwise: each rank updates the part of the block it owns, with the same
    // global clipping factor and the weight decay of the tensor each segment lies in.
    const int lv = z->level();
    for (const Zero::Seg& g : z->segments()) {
      float* w = lv >= 3 ? z->param_shard() + g.shard : model.params() + g.flat;
      float* gr = lv >= 2 ? z->grad_shard() + g.shard : model.grads() + g.flat;
      if (clip) scale_inplace(gr, g.n, clip_scale);
      adamw_update(w, gr, state.m.data() + g.shard, state.v.data() + g.shard, g.n, out.lr,
                   cfg.beta1, cfg.beta2, cfg.eps, g.decay ? wd : 0.0f, s + 1);
    }
    if (lv <= 2)
      z->allgather_params(model.params());  // every rank holds all again
    else
      z->invalidate();  // the next forward gathers the updated shards
  }

  out.loss = sums[0] / sums[1];
  out.grad_norm = gnorm;
  out.answers_correct = sums[2];
  out.answers = sums[3];
  out.targets = sums[1];
  return out;
}

}  // namespace seqpar
