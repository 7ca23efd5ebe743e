#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "core/arena.hpp"
#include "core/check.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"

using namespace seqpar;

TEST(Check, ThrowsWithFileLineAndMessage) {
  try {
    int T = 7;
    SP_CHECK(T == 8, "q has ", T, " rows, expected T=", 8);
    FAIL() << "no throw";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("test_core.cpp:"), std::string::npos) << m;
    EXPECT_NE(m.find("q has 7 rows, expected T=8"), std::string::npos) << m;
  }
}

TEST(Arena, CountsCurrentAndPeakPerCategory) {
  Arena a;
  float* x = a.alloc(Mem::acts, 100, "x");
  float* y = a.alloc(Mem::acts, 50, "y");
  float* p = a.alloc(Mem::params, 10, "p");
  EXPECT_EQ(x[99], 0.0f);  // zero-filled
  EXPECT_EQ(a.current(Mem::acts), 600u);
  a.release(x);
  EXPECT_EQ(a.current(Mem::acts), 200u);
  EXPECT_EQ(a.peak(Mem::acts), 600u);
  EXPECT_EQ(a.total_peak(), 640u);
  a.release(y);
  a.release(p);
  EXPECT_EQ(a.total_current(), 0u);
  EXPECT_THROW(a.release(reinterpret_cast<void*>(0x1234)), Error);
}

TEST(Arena, DryRunCountsTheSameWithoutMemory) {
  Arena real, dry(true);
  for (Arena* a : {&real, &dry}) {
    Buffer b1(*a, Mem::scratch, 1 << 20, "b1");
    { Buffer b2(*a, Mem::comm, 1 << 10, "b2"); }
    Buffer b3(*a, Mem::acts, 5, "b3");
  }
  EXPECT_EQ(real.total_peak(), dry.total_peak());
  EXPECT_EQ(real.peak(Mem::comm), dry.peak(Mem::comm));
  // A terabyte "allocation" succeeds in dry-run because nothing is touched.
  Buffer huge(dry, Mem::acts, size_t(1) << 38, "huge");
  EXPECT_EQ(dry.current(Mem::acts), size_t(1) << 40);
}

TEST(Rng, PhiloxKnownAnswer) {
  // Known-answer vector from the Random123 distribution (philox4x32_10, zero ctr/key).
  u32x4 r = philox4x32({0, 0, 0, 0}, 0);
  EXPECT_EQ(r[0], 0x6627e8d5u);
  EXPECT_EQ(r[1], 0xe169c58du);
  EXPECT_EQ(r[2], 0xbc57ac4cu);
  EXPECT_EQ(r[3], 0x9b00dbd8u);
}

TEST(Rng, UniformIsUniformAndKeyed) {
  double sum = 0, sq = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    float u = rng_uniform(42, 3, 1, RngSite::mlp_out_dropout, i / 64, i % 64);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    sq += u * u;
  }
  // mean 1/2, variance 1/12; 5 sigma of the sample mean = 5*sqrt(1/12/n) ~ 0.0032.
  EXPECT_NEAR(sum / n, 0.5, 0.0033);
  EXPECT_NEAR(sq / n - (sum / n) * (sum / n), 1.0 / 12, 0.002);
  EXPECT_NE(rng_uniform(1, 0, 0, RngSite::data, 5, 0), rng_uniform(2, 0, 0, RngSite::data, 5, 0));
  EXPECT_NE(rng_uniform(1, 0, 0, RngSite::data, 5, 0), rng_uniform(1, 1, 0, RngSite::data, 5, 0));
  EXPECT_EQ(rng_uniform(1, 0, 0, RngSite::data, 5, 3), rng_uniform(1, 0, 0, RngSite::data, 5, 3));
}

TEST(Tensor, ShapeAndNumel) {
  float buf[24];
  Tensor t(buf, {2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.shape_str(), "(2, 3, 4)");
  EXPECT_THROW(t.dim(3), Error);
}

namespace seqpar {
namespace {

// A stop flag set before (or during) an allocation skips the zeroing left and says so;
// without it every allocation is zeroed.
TEST(Arena, InterruptSkipsZeroingAndSaysSo) {
  volatile int flag = 0;
  Arena a;
  a.set_interrupt(&flag);
  Buffer x(a, Mem::scratch, 1000, "x");
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x.data()[i], 0.0f);
  EXPECT_FALSE(a.interrupted());
  flag = 15;
  Buffer y(a, Mem::scratch, 1000, "y");
  EXPECT_TRUE(a.interrupted());
  EXPECT_EQ(a.total_current(), 2000 * sizeof(float));  // allocated all the same
}

TEST(Memory, ProcessFiguresAndByteStrings) {
  EXPECT_GT(process_rss_bytes(), 0u);
  EXPECT_GE(process_peak_rss_bytes(), process_rss_bytes());
  EXPECT_GT(available_memory_bytes(), 0u);
  EXPECT_EQ(parse_bytes("1GiB", "x"), 1ull << 30);
  EXPECT_EQ(parse_bytes("512MiB", "x"), 512ull << 20);
  EXPECT_EQ(parse_bytes("2G", "x"), 2ull << 30);
  EXPECT_EQ(parse_bytes("1000", "x"), 1000u);
  EXPECT_THROW(parse_bytes("12bananas", "x"), UsageError);
  EXPECT_THROW(parse_bytes("-1GiB", "x"), UsageError);
  EXPECT_EQ(format_bytes(1ull << 30), "1.00 GiB");
  EXPECT_EQ(format_bytes(512), "512 B");
}

}  // namespace
}  // namespace seqpar
