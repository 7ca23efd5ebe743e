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
  c.progress = "none";
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
