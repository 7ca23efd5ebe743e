// ranks: 2 3
// A configuration that differs between ranks is refused on EVERY rank, before any work,
// with the differing values named — never a hang or a silent mismatch.
#include <gtest/gtest.h>

#include "comm/comm.hpp"
#include "train/trainer.hpp"

using namespace seqpar;

TEST(TrainConfigCheck, DisagreeingRanksAreRefusedOnEveryRank) {
  Comm world = Comm::world();
  ASSERT_GE(world.size(), 2) << "registered for 2+ ranks only";
  TrainConfig c;
  c.data = "passkey";
  c.progress = ProgressMode::none;
  c.out = "/nonexistent/never-written";
  c.seq_len = world.rank() == 1 ? 256 : 128;
  try {
    train(c, world);
    ADD_FAILURE() << "no error";
  } catch (const std::exception& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("disagree"), std::string::npos) << m;
    EXPECT_NE(m.find("rank 1"), std::string::npos) << m;
  }
}

// A failure on one rank only is known on every rank after one agreement: the failing rank
// keeps its message, the others say they refused because of it, and a usage error stays
// a usage error everywhere (so every rank exits 2).
TEST(AgreeOrThrow, OneRankFailingIsRefusedOnEveryRank) {
  Comm world = Comm::world();
  ASSERT_GE(world.size(), 2) << "registered for 2+ ranks only";
  try {
    agree_or_throw(world, [&] { SP_CHECK_USAGE(world.rank() != 1, "lr must be > 0, got -1"); });
    ADD_FAILURE() << "no error on rank " << world.rank();
  } catch (const UsageError& e) {
    const std::string m = e.what();
    EXPECT_TRUE(e.agreed);
    EXPECT_NE(m.find("lr must be > 0, got -1"), std::string::npos) << m;
    if (world.rank() != 1) {
      EXPECT_EQ(m.rfind("rank " + std::to_string(world.rank()) + " refused: rank 1: ", 0), 0u) << m;
    }
  }
  // Nobody failing: nobody throws, and the next collective still meets.
  agree_or_throw(world, [] {});
  world.barrier();
}
