// ranks: 1 2 4
// Megatron tensor + sequence parallelism against one rank:
//  * tp = world size: loss, logits and every parameter gradient equal the tp = 1 model;
//  * bytes over the tp group per layer: forward 4 collectives (2 all-gathers, 2
//    reduce-scatters) of B·T·C floats → 4·(t−1)/t·B·T·C·4 bytes; backward 6, because the
//    column-parallel inputs are kept sharded and all-gathered again (Megatron-LM's choice);
//  * --recompute selective / full: the same losses and gradients, and an activation peak
//    lower by exactly the saved tensors (formula in docs/megatron.md);
//  * tp 2 × sp 2 (ring, zigzag, GQA, full recompute): loss, logits and every gradient;
//  * training: tp × sp and tp × dp meshes give the 1-rank loss curve over 20 steps with
//    dropout on, and a checkpoint saved under one layout resumes under another.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "core/check.hpp"
#include "model/model.hpp"
#include "parallel/layout.hpp"
#include "test_models.hpp"
#include "test_util.hpp"
#include "train/planner.hpp"
#include "train/trainer.hpp"

using namespace seqpar;
using namespace seqpar::test;

namespace {

Batch make_test_batch(int B, int T, int64_t seed) {
  Batch b;
  b.B = B;
  b.T = T;
  b.L = T;
  for (int t = 0; t < T; ++t) b.pos.push_back(t);
  for (int i = 0; i < B * T; ++i) {
    b.tokens.push_back(int32_t((i * 37 + seed) % 256));
    b.targets.push_back(i % 5 == 0 ? -1 : int32_t((i * 11 + 3) % 256));
    b.row_key.push_back(i);
  }
  return b;
}

// Global gradient of every parameter. `tp` is the model's own tensor-parallel group
// (nullptr only when tp = 1): shards are gathered over it (gather_param, uneven vocabulary
// shards included). Replicated gradients are summed over it when each rank holds the
// contribution of its own rows (Megatron sequence parallelism), and taken as they are when
// every rank holds all rows and so the whole gradient (rows_replicated_over_tp).
std::vector<std::vector<float>> global_grads(Model& m, Comm* tp, const ModelConfig& cfg) {
  const int t = tp ? tp->size() : 1;
  const std::vector<ParamSpec> mine = param_specs(cfg, t, tp ? tp->rank() : 0);
  SP_CHECK(mine.size() == m.specs().size(), "global_grads: tp=", t, " has ", mine.size(),
           " parameters, the model ", m.specs().size());
  const bool sum_replicated = tp && !m.rows_replicated_over_tp();
  std::vector<std::vector<float>> out;
  for (size_t i = 0; i < m.specs().size(); ++i) {
    const ParamSpec& s = m.specs()[i];
    // A shard read with another tp's specs would read past it: the model's tp must be `tp`.
    SP_CHECK(mine[i].numel == s.numel, "global_grads: ", s.name, " holds ", s.numel,
             " floats on this rank, tp=", t, " expects ", mine[i].numel);
    std::vector<float> g = gather_param(cfg, i, m.grads() + s.offset, tp);
    if (s.replicated && sum_replicated) tp->allreduce_sum(g.data(), g.size());
    out.push_back(std::move(g));
  }
  return out;
}

// The reference model's gradient of the parameter named `name`.
std::vector<float> ref_grad(Model& ref, const std::string& name) {
  for (const ParamSpec& s : ref.specs())
    if (s.name == name) return {ref.grads() + s.offset, ref.grads() + s.offset + s.numel};
  ADD_FAILURE() << "no parameter " << name << " in the reference model";
  return {};
}

// One forward and backward of `cfg` under tp = world size with `par`'s strategy and
// recompute, weights from init_weights(seed): the loss summed over the tp group, every
// global gradient, and the activation peak.
struct TpStep {
  double loss;
  std::vector<std::vector<float>> grads;
  uint64_t acts_peak;
};
TpStep tp_step(Comm& world, const ModelConfig& cfg, ModelParallel par, const Batch& b,
               const StepContext& ctx, uint64_t seed, float loss_scale) {
  Comm* tp = world.size() > 1 ? &world : nullptr;
  par.tp = TpSetup{tp};
  Arena a;
  Model m(cfg, b.B, b.T, a, par);
  m.init_weights(seed);
  m.zero_grad();
  double l = m.forward(b, ctx);
  m.backward(b, ctx, loss_scale);
  world.allreduce_sum(&l, 1);
  return {l, global_grads(m, tp, cfg), a.peak(Mem::acts)};
}

// fp32 rounding: TP splits the C- and F-length dot products of the row-parallel linears
// across ranks and sums the partials in another order (~1e-7 relative per sum).
constexpr double kTol = 1e-5;

}  // namespace

// (Megatron sequence parallelism in the tp group, kv heads): Hkv = 4 shards the kv heads,
// Hkv < t replicates each kv head on t/Hkv ranks.
class TensorParallel : public testing::TestWithParam<std::tuple<bool, int>> {};

TEST_P(TensorParallel, LossLogitsAndGradientsEqualOneRank) {
  const bool seq_par = std::get<0>(GetParam());
  Comm world = Comm::world();
  const int t = world.size();
  ModelConfig cfg = small_model({.dropout = 0.1f});
  cfg.Hkv = std::get<1>(GetParam());
  const int B = 2, T = 16;
  Batch b = make_test_batch(B, T, 5);
  StepContext ctx{9, 2, true};
  int count = 0;
  for (int32_t x : b.targets) count += x >= 0;

  Arena a1;
  Model ref(cfg, B, T, a1);
  ref.init_weights(3);
  ref.zero_grad();
  const double ref_loss = ref.forward(b, ctx);
  ref.backward(b, ctx, 1.0f / count);

  Arena a2;
  ModelParallel par;
  par.tp = TpSetup{t > 1 ? &world : nullptr};
  par.tp_sequence_parallel = seq_par;
  Model m(cfg, B, T, a2, par);
  m.init_weights(3);
  m.zero_grad();
  world.stats().reset();
  double loss = m.forward(b, ctx);
  const uint64_t fwd_bytes = world.stats().total_bytes_sent();
  world.stats().reset();
  m.backward(b, ctx, 1.0f / count);
  const uint64_t bwd_bytes = world.stats().total_bytes_sent();
  if (!m.rows_replicated_over_tp()) world.allreduce_sum(&loss, 1);
  EXPECT_NEAR(loss, ref_loss, kTol * ref_loss);

  // Logits of this rank's rows.
  const int64_t R = m.rows(), V = cfg.V;
  const std::vector<float> got = m.logits(), all = ref.logits();
  const std::vector<float> want(all.begin() + m.row_begin() * V,
                                all.begin() + (m.row_begin() + R) * V);
  EXPECT_LT(rel_err(got, want), kTol) << "logits on rank " << world.rank();

  // A replicated kv head's gradient is partial on each of its replicas: sum them first.
  const int replicas = kv_replicas(cfg, t);
  Comm kv = world.split(world.rank() / replicas, world.rank(), "kv");
  for (auto [off, n] : m.kv_replica_ranges()) kv.allreduce_sum(m.grads() + off, size_t(n));
  EXPECT_EQ(m.kv_replica_ranges().empty(), replicas == 1);
  auto g = global_grads(m, t > 1 ? &world : nullptr, cfg);
  ASSERT_EQ(m.specs().size(), ref.specs().size());
  for (size_t i = 0; i < m.specs().size(); ++i)
    EXPECT_LT(rel_err(g[i], ref_grad(ref, m.specs()[i].name)), 3e-5)
        << "gradient of " << m.specs()[i].name;

  // Bytes over tp, in units of one (t−1)/t·B·T·C·4 exchange, i.e. (t−1)·R'·C·4 with
  // R' = B·T/t. Per layer: with sequence parallelism 4 forward (2 all-gathers, 2
  // reduce-scatters) and 6 backward (the sharded inputs are gathered again); without it
  // one all-reduce (= 2 units) after each row-parallel linear forward and after each
  // column-parallel input gradient backward, 4 each way. Vocabulary parallelism adds, with
  // sequence parallelism: forward the embedding's reduce-scatter and the head input's
  // all-gather (2 units), backward the head input's all-gather, its gradient's
  // reduce-scatter and the embedding gradient's all-gather (3 units); without it the
  // embedding's all-reduce forward and the head input gradient's all-reduce backward (2
  // units each). The loss adds three all-reduces of one float per row (max, Σexp, target
  // logit): 3·2·(t−1)·R'·4 bytes, = 6 units / C.
  const uint64_t per = uint64_t(t - 1) * (B * T / t) * cfg.C * 4;
  const uint64_t stats = t > 1 ? 6 * per / cfg.C : 0;
  EXPECT_EQ(fwd_bytes, cfg.n_layer * 4 * per + (t > 1 ? 2 : 0) * per + stats);
  EXPECT_EQ(bwd_bytes,
            cfg.n_layer * (seq_par ? 6 : 4) * per + (t > 1 ? (seq_par ? 3 : 2) : 0) * per);
}

INSTANTIATE_TEST_SUITE_P(Megatron, TensorParallel,
                         testing::Combine(testing::Values(true, false), testing::Values(4, 2, 1)),
                         [](const testing::TestParamInfo<std::tuple<bool, int>>& i) {
                           return std::string(std::get<0>(i.param) ? "sequence_parallel"
                                                                   : "allreduce") +
                                  "_kv" + std::to_string(std::get<1>(i.param));
                         });

TEST(Recompute, SameLossesAndGradientsAndLowerActivationPeak) {
  Comm world = Comm::world();
  const int t = world.size();
  ModelConfig cfg = small_model({.dropout = 0.1f});
  cfg.n_layer = 3;
  const int B = 2, T = 16;
  Batch b = make_test_batch(B, T, 8);
  StepContext ctx{4, 1, true};
  std::vector<double> losses;
  std::vector<std::vector<std::vector<float>>> grads;
  std::vector<uint64_t> acts;
  for (Recompute rc : {Recompute::none, Recompute::selective, Recompute::full}) {
    ModelParallel par;
    par.recompute = rc;
    TpStep r = tp_step(world, cfg, par, b, ctx, 1, 0.01f);
    losses.push_back(r.loss);
    grads.push_back(std::move(r.grads));
    acts.push_back(r.acts_peak);
  }
  for (int k = 1; k < 3; ++k) {
    // Recomputation repeats the same deterministic forward: bitwise the same.
    EXPECT_EQ(losses[k], losses[0]) << recompute_name(Recompute(k));
    for (size_t i = 0; i < grads[0].size(); ++i)
      EXPECT_EQ(grads[k][i], grads[0][i]) << recompute_name(Recompute(k)) << " param " << i;
  }
  // Saved floats per layer (R = B·T/t rows, N = B·T, t-sharded widths):
  //   selective drops the attention output N·H·d/t of all layers but one shared buffer;
  //   full keeps only the layer input R·C and one shared working set of everything else.
  const int64_t N = B * T, R = N / t, C = cfg.C, d = cfg.d(), Ht = cfg.H / t, Hkvt = cfg.Hkv / t,
                Ft = cfg.F / t, L = cfg.n_layer;
  const int64_t att = N * Ht * d;
  const int64_t all = 4 * R * C + 4 * R + N * (Ht + 2 * Hkvt) * d + att + N * Ht + 2 * N * Ft;
  EXPECT_EQ(acts[0] - acts[1], uint64_t((L - 1) * att * 4));
  EXPECT_EQ(acts[0] - acts[2], uint64_t((L - 1) * (all - R * C) * 4));
}

namespace {

// Hkv = 4 kv heads: tp 4 shards them as it shards the query heads.
TrainConfig train_config(const std::string& out) { return small_run(out, 4); }

}  // namespace

TEST(MegatronTraining, MeshesGiveTheOneRankLossCurve) {
  Comm world = Comm::world();
  const int W = world.size();
  Comm self = world.split(world.rank(), 0, "self");
  // Meshes for this world size: (tp, sp, strategy, recompute); dp = W / (tp·sp), batch 2
  // per replica. Recomputation must work in every parallel mode.
  struct M {
    int tp, sp;
    const char* strategy;
    const char* recompute;
  };
  std::vector<M> meshes = {{W, 1, "local", "selective"}, {W, 1, "local", "full"}};
  if (W == 4)
    meshes = {{2, 2, "ring", "full"},         {2, 1, "local", "selective"}, {4, 1, "local", "none"},
              {2, 2, "ulysses", "selective"}, {2, 2, "mqsp", "full"},       {1, 4, "usp", "full"},
              {1, 4, "rsa", "selective"}};
  for (const M& mesh : meshes) {
    const int dp = W / (mesh.tp * mesh.sp);
    TrainConfig ref = train_config(run_dir("tp_ref" + std::to_string(world.rank())));
    ref.batch = 2 * dp;
    std::filesystem::remove_all(ref.out);
    TrainResult r1 = train(ref, self);
    TrainConfig c = train_config(run_dir("tp_mesh"));
    c.tp = mesh.tp;
    c.sp = mesh.sp;
    c.strategy = parse_enum<Strategy>(mesh.strategy);
    c.recompute = parse_recompute(mesh.recompute);
    TrainResult rm = train(c, world);
    ASSERT_EQ(r1.losses.size(), rm.losses.size());
    for (size_t i = 0; i < r1.losses.size(); ++i)
      EXPECT_NEAR(rm.losses[i], r1.losses[i], 1e-4 * r1.losses[i])
          << "tp " << mesh.tp << " sp " << mesh.sp << " (" << mesh.strategy << ") dp " << dp
          << " recompute " << mesh.recompute << " step " << i + 1;
    std::filesystem::remove_all(ref.out);
  }
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(run_dir("tp_mesh"));
}

TEST(MegatronCheckpoint, SavedUnderOneLayoutResumesUnderAnother) {
  Comm world = Comm::world();
  const int W = world.size();
  Comm self = world.split(world.rank(), 0, "self");
  TrainConfig full = train_config(run_dir("tp_ck_full" + std::to_string(world.rank())));
  full.steps = 6;
  std::filesystem::remove_all(full.out);
  TrainResult a = train(full, self);

  const std::string dir = run_dir("tp_ck");
  if (world.rank() == 0) std::filesystem::remove_all(dir);
  world.barrier();
  TrainConfig first = train_config(dir);
  first.steps = 6;
  first.stop_after = 3;
  first.tp = W >= 2 ? 2 : 1;
  first.sp = W / first.tp;
  first.strategy = first.sp > 1 ? Strategy::ring : Strategy::local;
  train(first, world);

  // Resume on every rank as tp 1 × sp W, then on one rank alone.
  for (int variant = 0; variant < 2; ++variant) {
    TrainConfig second = train_config(dir);
    second.steps = 6;
    second.resume = true;
    second.save_final = false;
    second.tp = 1;
    second.sp = variant == 0 ? W : 1;
    second.strategy = second.sp > 1 ? Strategy::ulysses : Strategy::local;
    // Variant 1: one rank alone (the others would share its run directory).
    if (variant == 1 && world.rank() != 0) continue;
    TrainResult c = variant == 0 ? train(second, world) : train(second, self);
    ASSERT_EQ(c.losses.size(), 3u);
    for (int i = 0; i < 3; ++i)
      EXPECT_NEAR(c.losses[i], a.losses[3 + i], 1e-4 * a.losses[3 + i])
          << "variant " << variant << " resumed step " << 4 + i;
  }
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(dir);
  std::filesystem::remove_all(full.out);
}

TEST(MaterializedBaseline, EqualsTheBlockedKernelAndKeepsTheQuadraticTerm) {
  Comm world = Comm::world();
  const int t = world.size();
  const ModelConfig cfg = small_model({.dropout = 0.1f});
  const int B = 2, T = 16;
  Batch b = make_test_batch(B, T, 2);
  StepContext ctx{5, 3, true};
  std::vector<double> loss;
  std::vector<std::vector<std::vector<float>>> grads;
  std::vector<uint64_t> acts;
  for (const char* strategy : {"local", "materialized"}) {
    ModelParallel par;
    par.strategy = parse_enum<Strategy>(strategy);
    TpStep r = tp_step(world, cfg, par, b, ctx, 6, 0.02f);
    loss.push_back(r.loss);
    grads.push_back(std::move(r.grads));
    acts.push_back(r.acts_peak);
  }
  EXPECT_NEAR(loss[1], loss[0], kTol * loss[0]);
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_LT(rel_err(grads[1][i], grads[0][i]), 3e-5);
  // The paper's as²b term: P of every layer, (B, H/t, T, T) fp32 floats.
  EXPECT_EQ(acts[1] - acts[0], uint64_t(cfg.n_layer) * B * (cfg.H / t) * T * T * 4);
}

namespace {

// Rows of the global (B, L) batch at positions `pos` (the same token, target and dropout
// key for a position whatever the layout).
Batch shard_batch(int B, int64_t L, const std::vector<int64_t>& pos, int64_t seed) {
  Batch full = make_test_batch(B, int(L), seed);
  Batch b;
  b.B = B;
  b.T = int(pos.size());
  b.L = L;
  b.pos = pos;
  for (int i = 0; i < B; ++i)
    for (int64_t p : pos) {
      b.tokens.push_back(full.tokens[i * L + p]);
      b.targets.push_back(full.targets[i * L + p]);
      b.row_key.push_back(full.row_key[i * L + p]);
    }
  return b;
}

}  // namespace

TEST(TensorTimesSequenceParallel, LossLogitsAndGradientsEqualOneRank) {
  Comm world = Comm::world();
  const int W = world.size();
  TrainConfig cfg;
  cfg.model = small_model({.dropout = 0.1f});
  cfg.model.Hkv = 2;  // GQA with tp = 2: one kv head per tp rank
  cfg.tp = W >= 2 ? 2 : 1;
  cfg.sp = W / cfg.tp;
  cfg.strategy = cfg.sp > 1 ? Strategy::ring : Strategy::local;
  cfg.layout = ShardLayout::zigzag;
  cfg.recompute = Recompute::full;
  cfg.seq_len = 32;
  const int B = 2;
  const int64_t L = cfg.seq_len;
  StepContext ctx{21, 4, true};

  Batch all = make_test_batch(B, int(L), 9);
  int count = 0;
  for (int32_t x : all.targets) count += x >= 0;
  Arena a1;
  Model ref(cfg.model, B, int(L), a1);
  ref.init_weights(8);
  ref.zero_grad();
  const double ref_loss = ref.forward(all, ctx);
  ref.backward(all, ctx, 1.0f / count);

  Mesh mesh = make_mesh(world, cfg);
  const auto pos = shard_positions(L, mesh.sp, mesh.sp_rank, ShardLayout::zigzag);
  Batch b = shard_batch(B, L, pos, 9);
  Arena a2;
  Model m(cfg.model, B, int(pos.size()), a2, model_parallel(mesh, cfg));
  m.init_weights(8);
  m.zero_grad();
  double loss = m.forward(b, ctx);
  m.backward(b, ctx, 1.0f / count);
  world.allreduce_sum(&loss, 1);
  EXPECT_NEAR(loss, ref_loss, kTol * ref_loss);

  // Logits of this rank's rows, found in the reference by (sample, global position).
  const int64_t R = m.rows(), V = cfg.model.V, T = int64_t(pos.size());
  const std::vector<float> got = m.logits(), ref_logits = ref.logits();
  std::vector<float> want;
  for (int64_t g = m.row_begin(); g < m.row_begin() + R; ++g) {
    const float* r = ref_logits.data() + ((g / T) * L + pos[g % T]) * V;
    want.insert(want.end(), r, r + V);
  }
  EXPECT_LT(rel_err(got, want), kTol) << "logits on rank " << world.rank();

  // Gradients: replicated ones are partial on every rank (sum over the world); shards are
  // partial over the sp ranks holding them (sum over those), then gathered over tp.
  const int t = cfg.tp;
  for (size_t i = 0; i < m.specs().size(); ++i) {
    const ParamSpec& s = m.specs()[i];
    std::vector<float> part(m.grads() + s.offset, m.grads() + s.offset + s.numel);
    std::vector<float> g;
    if (s.replicated) {
      world.allreduce_sum(part.data(), part.size());
      g = part;
    } else {
      mesh.shard_comm.allreduce_sum(part.data(), part.size());
      g = gather_param(cfg.model, i, part.data(), t > 1 ? &mesh.tp_comm : nullptr);
    }
    const ParamSpec* rs = nullptr;
    for (const auto& x : ref.specs())
      if (x.name == s.name) rs = &x;
    ASSERT_NE(rs, nullptr) << s.name;
    std::vector<float> want_g(ref.grads() + rs->offset, ref.grads() + rs->offset + rs->numel);
    EXPECT_LT(rel_err(g, want_g), 3e-5) << "gradient of " << s.name;
  }
}
