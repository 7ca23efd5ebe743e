// ranks: 1 2 4
// End-to-end training over MPI, compared with one rank:
//  * data parallel on K ranks with batch b equals one rank with batch K·b, dropout on
//    (the counter-based RNG keys masks by global sample and position);
//  * a run stopped after step s and resumed continues with the same losses.
// The 1-rank reference runs on every rank over a size-1 communicator split off the world.
#include <gtest/gtest.h>

#include <filesystem>

#include "comm/comm.hpp"
#include "test_models.hpp"
#include "train/planner.hpp"
#include "train/trainer.hpp"

using namespace seqpar;
using namespace seqpar::test;

namespace {

// small_run, 6 steps after 2 of warm-up, with its final checkpoint.
TrainConfig small_config(const std::string& out) {
  TrainConfig c = small_run(out);
  c.steps = 6;
  c.warmup = 2;
  c.save_final = true;
  return c;
}

// Loss curves agree to float rounding: the sum over ranks changes the order of the
// gradient all-reduce, ~1e-7 relative per step, compounding through AdamW over 6 steps.
constexpr double kTol = 2e-5;

}  // namespace

TEST(TrainDataParallel, MatchesOneRankWithKTimesTheBatch) {
  Comm world = Comm::world();
  const int K = world.size();
  Comm self = world.split(world.rank(), 0, "self");

  TrainConfig ref = small_config(fresh_run_dir("dp_ref", world.rank()));
  ref.batch = 2 * K;
  TrainResult r1 = train(ref, self);

  TrainConfig dp = small_config(fresh_run_dir("dp", 0));
  dp.batch = 2;
  TrainResult rk = train(dp, world);

  ASSERT_EQ(r1.losses.size(), rk.losses.size());
  for (size_t i = 0; i < r1.losses.size(); ++i)
    EXPECT_NEAR(rk.losses[i], r1.losses[i], kTol * r1.losses[i]) << "step " << i + 1;
  world.barrier();
  std::filesystem::remove_all(ref.out);
  if (world.rank() == 0) std::filesystem::remove_all(dp.out);
}

TEST(TrainCheckpoint, ResumeContinuesWithTheSameLosses) {
  Comm world = Comm::world();
  TrainConfig full = small_config(fresh_run_dir("full", 0));
  full.batch = 1;
  TrainResult a = train(full, world);

  TrainConfig part = small_config(fresh_run_dir("part", 0));
  part.batch = 1;
  part.stop_after = 3;
  TrainResult b = train(part, world);
  EXPECT_TRUE(b.interrupted);
  ASSERT_EQ(b.losses.size(), 3u);

  part.stop_after = 0;
  part.resume = true;
  TrainResult c = train(part, world);
  ASSERT_EQ(c.losses.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(b.losses[i], a.losses[i]) << "step " << i + 1;  // same process, same math
    EXPECT_EQ(c.losses[i], a.losses[3 + i]) << "resumed step " << 4 + i;
  }
  world.barrier();
  if (world.rank() == 0) {
    std::filesystem::remove_all(full.out);
    std::filesystem::remove_all(part.out);
  }
}

TEST(MemoryPlanner, DryRunPeakEqualsTheMeasuredArenaPeak) {
  Comm world = Comm::world();
  TrainConfig c = small_config(fresh_run_dir("plan", 0));
  c.batch = 2;
  c.steps = 2;
  c.save_final = false;
  TrainResult r = train(c, world);
  MemoryPlan p = dry_run_peak(c, world);
  int64_t measured = int64_t(r.arena_peak);
  world.allreduce_max(&measured, 1);
  EXPECT_EQ(p.peak_total, uint64_t(measured));
  // And the planner's search is monotone: the longest L for this peak is >= c.seq_len.
  MemoryPlan longest = longest_under_budget(c, world, p.peak_total, 1 << 16);
  EXPECT_GE(longest.L, c.seq_len);
  EXPECT_LE(longest.peak_total, p.peak_total);
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove_all(c.out);
}
