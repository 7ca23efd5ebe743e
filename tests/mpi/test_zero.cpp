// ranks: 4
// ZeRO (train/zero.hpp) against no ZeRO, on the same global batches:
//  * 20 training steps under --zero 1, 2 and 3 give the losses, gradient norms, weights and
//    AdamW moments of --zero 0, for dp2, sp2 (ring), dp2×sp2 and tp2×sp2 (one kv head
//    replicated on both tp ranks), dropout on. The 2-rank meshes run side by side on the
//    two halves of the world.
//  * read_local / write_local move any range of the full block, across shard boundaries.
//  * the params, grads and optim categories of the arena are exactly the formula of
//    docs/zero.md (dry run, 8 layers).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "parallel/layout.hpp"
#include "test_models.hpp"
#include "test_util.hpp"
#include "train/checkpoint.hpp"
#include "train/checkpoint_stream.hpp"
#include "train/state.hpp"
#include "train/step.hpp"

using namespace seqpar;
using namespace seqpar::test;

namespace {

struct Case {
  const char* name;
  int world, tp, sp;
  const char* strategy;
};

// small_run on the case's mesh, 3 warm-up steps. train_steps below drives train_step
// itself: nothing is written under `out`.
TrainConfig small_config(const Case& c) {
  // tp2: one kv head, replicated on both tp ranks.
  TrainConfig cfg = small_run("/nonexistent/never-written", c.tp > 1 ? 1 : 2);
  cfg.warmup = 3;
  cfg.tp = c.tp;
  cfg.sp = c.sp;
  cfg.strategy = parse_enum<Strategy>(c.strategy);
  return cfg;
}

struct Run {
  std::vector<double> loss, gnorm;
  std::vector<float> weights, m, v;  // full tensors of every parameter, concatenated
  int64_t bytes_shard = 0;           // bytes the shard group sent over the run
};

Run train_steps(const Case& c, int zero, Comm& world) {
  TrainConfig cfg = small_config(c);
  cfg.zero = zero;
  Mesh mesh = make_mesh(world, cfg);
  const auto pos = shard_positions(cfg.seq_len, mesh.sp, mesh.sp_rank, cfg.layout);
  auto src = make_source(cfg.data, cfg.seed, cfg.seq_len);
  Arena arena;
  TrainState st(cfg, arena, mesh, cfg.batch, int(pos.size()));
  st.init_weights(cfg.seed);
  Run r;
  for (int64_t s = 0; s < cfg.steps; ++s) {
    StepResult sr =
        train_step(st, mesh, world, cfg, *src, pos, s, uint64_t(s) * cfg.batch * mesh.dp);
    r.loss.push_back(sr.loss);
    r.gnorm.push_back(sr.grad_norm);
  }
  r.bytes_shard = int64_t(mesh.shard_comm.stats().total_bytes_sent());
  // The checkpoint itself: streamed by save_state_checkpoint (read_local over the ZeRO
  // shards, the tp shards assembled), then read back whole on every rank.
  const std::string root = run_dir(std::string("zero_") + c.name + "_z" + std::to_string(zero));
  if (world.rank() == 0) std::filesystem::remove_all(root);
  world.barrier();
  save_state_checkpoint(st, mesh, world, cfg.model, root, cfg.steps, {{"step", cfg.steps}},
                        {{"model", cfg.model.to_json()}});
  world.barrier();
  char step_dir[32];
  std::snprintf(step_dir, sizeof step_dir, "/step_%08lld", static_cast<long long>(cfg.steps));
  for (auto& t : read_safetensors(root + step_dir + "/model.safetensors"))
    r.weights.insert(r.weights.end(), t.data.begin(), t.data.end());
  for (auto& t : read_safetensors(root + step_dir + "/optimizer.safetensors")) {
    auto& dst = t.name.rfind("m.", 0) == 0 ? r.m : r.v;
    dst.insert(dst.end(), t.data.begin(), t.data.end());
  }
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(root);
  return r;
}

// ZeRO sums each gradient with a
// reduce-scatter over the group (after a tp all-reduce for replicated parameters) instead
// of one all-reduce over the world: another order of the same terms, ~1e-7 relative per
// element and step (bitwise equal at 2 ranks, where a + b = b + a). AdamW divides by √v,
// so a rounding difference in a small gradient moves its update by up to lr times its
// relative size, and 20 steps compound it. Measured at 4 ranks (this test prints them):
// losses 7e-9, gradient norms 4e-8, weights 7e-7, moments 1.7e-7 (max relative); the
// bounds below leave 30-100x. A real error (a missed or doubled shard, a wrong decay flag,
// a stale gathered layer) moves the loss by 1e-3 or more within the 20 steps.
constexpr double kLossTol = 1e-6, kNormTol = 1e-6, kStateTol = 2e-5;

void expect_same(const Run& z, const Run& ref, int level, const char* name) {
  ASSERT_EQ(z.loss.size(), ref.loss.size());
  for (size_t s = 0; s < ref.loss.size(); ++s) {
    EXPECT_NEAR(z.loss[s], ref.loss[s], kLossTol * std::fabs(ref.loss[s]))
        << name << " zero " << level << ", step " << s + 1;
    EXPECT_NEAR(z.gnorm[s], ref.gnorm[s], kNormTol * ref.gnorm[s])
        << name << " zero " << level << ", step " << s + 1;
  }
  ASSERT_EQ(z.weights.size(), ref.weights.size());
  ASSERT_EQ(z.m.size(), ref.m.size());
  double dl = 0.0, dg = 0.0;
  for (size_t s = 0; s < ref.loss.size(); ++s) {
    dl = std::max(dl, std::fabs(z.loss[s] - ref.loss[s]) / std::fabs(ref.loss[s]));
    dg = std::max(dg, std::fabs(z.gnorm[s] - ref.gnorm[s]) / ref.gnorm[s]);
  }
  std::printf(
      "%s zero %d vs 0: loss %.2e, grad norm %.2e, weights %.2e, m %.2e, v %.2e (max rel)\n", name,
      level, dl, dg, rel_err(z.weights, ref.weights), rel_err(z.m, ref.m), rel_err(z.v, ref.v));
  const double tol = kStateTol;
  EXPECT_LE(rel_err(z.weights, ref.weights), tol) << name << " zero " << level << " weights";
  EXPECT_LE(rel_err(z.m, ref.m), tol) << name << " zero " << level << " m";
  EXPECT_LE(rel_err(z.v, ref.v), tol) << name << " zero " << level << " v";
}

void check_case(const Case& c, Comm& comm) {
  const Run ref = train_steps(c, 0, comm);
  // The run learns (so equal losses mean something): the loss falls over the 20 steps.
  EXPECT_LT(ref.loss.back(), ref.loss.front() - 0.05) << c.name;
  for (int level = 1; level <= 3; ++level)
    expect_same(train_steps(c, level, comm), ref, level, c.name);
}

}  // namespace

TEST(Zero, TwoRankMeshesMatchZeroZero) {
  Comm world = Comm::world();
  ASSERT_EQ(world.size(), 4);
  // Ranks 0, 1: dp2; ranks 2, 3: sp2 (ring).
  const bool dp = world.rank() < 2;
  Comm half = world.split(dp ? 0 : 1, world.rank(), dp ? "dp2" : "sp2");
  check_case(dp ? Case{"dp2", 2, 1, 1, "local"} : Case{"sp2", 2, 1, 2, "ring"}, half);
}

TEST(Zero, DpTimesSpMatchesZeroZero) {
  Comm world = Comm::world();
  check_case(Case{"dp2xsp2", 4, 1, 2, "ring"}, world);
}

TEST(Zero, TpTimesSpMatchesZeroZero) {
  Comm world = Comm::world();
  check_case(Case{"tp2xsp2", 4, 2, 2, "ulysses"}, world);
}

// The checkpoint contract: any [off, off + n) of the full block, written from the same data
// on every rank, reads back on every rank, whatever the chunking.
TEST(Zero, ReadLocalWriteLocalRoundTrip) {
  Comm world = Comm::world();
  for (int level = 0; level <= 3; ++level) {
    TrainConfig cfg = small_config(Case{"tp2xsp2", 4, 2, 2, "ulysses"});
    cfg.zero = level;
    Mesh mesh = make_mesh(world, cfg);
    const auto pos = shard_positions(cfg.seq_len, mesh.sp, mesh.sp_rank, cfg.layout);
    Arena arena;
    TrainState st(cfg, arena, mesh, cfg.batch, int(pos.size()));
    const int64_t P = st.model.num_params();
    for (Which w : {Which::weights, Which::m, Which::v}) {
      std::vector<float> data(static_cast<size_t>(P));
      for (int64_t i = 0; i < P; ++i)
        data[i] = float(i % 1009) * 0.5f + float(int(w)) + mesh.tp_rank;
      // Written in chunks of 777 floats, read in chunks of 1000 (both cross every boundary).
      for (int64_t off = 0; off < P; off += 777)
        st.write_local(w, off, std::min<int64_t>(777, P - off), data.data() + off);
      std::vector<float> back(static_cast<size_t>(P), -1.0f);
      for (int64_t off = 0; off < P; off += 1000)
        st.read_local(w, off, std::min<int64_t>(1000, P - off), back.data() + off);
      EXPECT_EQ(back, data) << "zero " << level << ", block " << int(w);
    }
  }
}

// Per rank, S = Σ_u c_rank(u) floats (the shard), U0 unit 0, Ul one layer:
//   level  params           grads            optim   comm
//   0      P                P                2P      (the strategy's)
//   1      P                P                2S      + max(U0, Ul)
//   2      P                S + U0 + 2·Ul    2S      + 0
//   3      S + U0 + 2·Ul    S + U0 + 2·Ul    2S      + 0
// (floats; 4 bytes each).
TEST(Zero, ArenaCategoriesFollowTheFormula) {
  Comm world = Comm::world();
  for (const Case& c : {Case{"dp2xsp2", 4, 1, 2, "ring"}, Case{"tp2xsp2", 4, 2, 2, "ulysses"}}) {
    TrainConfig cfg = small_config(c);
    cfg.model.n_layer = 8;
    cfg.model.C = 64;
    cfg.model.F = 256;
    Mesh mesh = make_mesh(world, cfg);
    const auto pos = shard_positions(cfg.seq_len, mesh.sp, mesh.sp_rank, cfg.layout);
    const auto specs = param_specs(cfg.model, mesh.tp, mesh.tp_rank);
    const int n = mesh.shard_comm.size(), k = mesh.shard_comm.rank();
    EXPECT_EQ(n, 4 / mesh.tp);
    int64_t P = 0, S = 0, U0 = 0, Ul = 0;
    for (int u = 0; u <= cfg.model.n_layer; ++u) {
      int64_t Uu = 0;
      for (const ParamSpec& s : unit_specs(specs, u)) Uu += s.numel;
      P += Uu;
      S += Uu / n + (k < Uu % n ? 1 : 0);
      if (u == 0) U0 = Uu;
      if (u == 1) Ul = Uu;
    }
    const int64_t work = S + U0 + 2 * Ul;
    const int64_t want[4][3] = {
        {P, P, 2 * P}, {P, P, 2 * S}, {P, work, 2 * S}, {work, work, 2 * S}};
    size_t comm0 = 0;
    for (int level = 0; level <= 3; ++level) {
      cfg.zero = level;
      Arena arena(/*dry_run=*/true);
      { TrainState st(cfg, arena, mesh, cfg.batch, int(pos.size())); }
      if (level == 0) comm0 = arena.peak(Mem::comm);
      EXPECT_EQ(arena.peak(Mem::comm), comm0 + (level == 1 ? 4 * std::max(U0, Ul) : 0))
          << c.name << " zero " << level;
      EXPECT_EQ(arena.peak(Mem::params), size_t(4 * want[level][0])) << c.name << " zero " << level;
      EXPECT_EQ(arena.peak(Mem::grads), size_t(4 * want[level][1])) << c.name << " zero " << level;
      EXPECT_EQ(arena.peak(Mem::optim), size_t(4 * want[level][2])) << c.name << " zero " << level;
    }
    // At 8 layers the shard outweighs the working buffers: ZeRO 3 holds fewer parameter
    // bytes than ZeRO 0 (at 2 layers it would not: U0 + 2·Ul is then all of P).
    EXPECT_LT(S + U0 + 2 * Ul, P) << c.name;
  }
}
