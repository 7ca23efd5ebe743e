#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <regex>
#include <set>
#include <thread>
#include <typeinfo>
#include <vector>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "core/check.hpp"
#include "core/file.hpp"
#include "core/hash.hpp"
#include "core/memory.hpp"
#include "core/rng.hpp"
#include "core/tensor.hpp"
#include "test_util.hpp"

using namespace seqpar;
namespace fs = std::filesystem;

// The message of the exception `fn` throws, which must be exactly an E (not a subclass
// or a sibling: the command line picks its exit code and its audience by the type).
template <class E, class Fn>
std::string message_of(Fn fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    EXPECT_EQ(typeid(e), typeid(E)) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no exception";
  return "";
}

// A bug: SP_CHECK names where, relative to the repository (the build maps the source root
// away), so the message is the same on every machine and says nothing of the build path.
TEST(Check, InvariantNamesTheSourceRelativeToTheRepository) {
  int T = 7;
  const std::string m =
      message_of<Error>([&] { SP_CHECK(T == 8, "q has ", T, " rows, expected T=", 8); });
  EXPECT_TRUE(
      std::regex_match(m, std::regex(R"(tests/test_core\.cpp:[0-9]+: q has 7 rows, expected T=8)")))
      << m;
  EXPECT_EQ(message_of<Error>([] { SP_FAIL("x"); }).rfind("tests/test_core.cpp:", 0), 0u);
  // Library code: a failed invariant inside src/ says src/...:line.
  Arena a;
  const std::string lib = message_of<Error>([&] { a.release(reinterpret_cast<void*>(0x1234)); });
  EXPECT_EQ(lib.rfind("src/core/arena.cpp:", 0), 0u) << lib;
  EXPECT_EQ(lib.find(SEQPAR_SOURCE_DIR), std::string::npos) << lib;
  // Without a message, the condition is the message.
  const std::string bare = message_of<Error>([&] { SP_CHECK(T == 8); });
  EXPECT_EQ(bare.rfind("tests/test_core.cpp:", 0), 0u) << bare;
  EXPECT_TRUE(bare.ends_with(": check failed: T == 8")) << bare;
}

// For the user: a usage error and an input error carry their message only.
TEST(Check, UsageAndInputErrorsCarryNoSourceLocation) {
  const int T = 7;
  EXPECT_EQ(message_of<UsageError>([&] { SP_CHECK_USAGE(T == 8, "--seq-len ", T, " is odd"); }),
            "--seq-len 7 is odd");
  EXPECT_EQ(message_of<UsageError>([] { SP_FAIL_USAGE("bad flag"); }), "bad flag");
  EXPECT_EQ(message_of<InputError>([&] { SP_CHECK_INPUT(T == 8, "file 'f' has ", T, " bytes"); }),
            "file 'f' has 7 bytes");
  EXPECT_EQ(message_of<InputError>([] { SP_FAIL_INPUT("corrupt"); }), "corrupt");
  EXPECT_EQ(message_of<InputError>([&] { SP_CHECK_INPUT(T == 8); }), "check failed: T == 8");
  // An input error is an Error (the command line exits 1), not a usage error (exit 2).
  try {
    SP_FAIL_INPUT("corrupt");
  } catch (const UsageError&) {
    ADD_FAILURE() << "an InputError caught as a UsageError";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "corrupt");
  }
  // Library code: a missing file is an input error naming the file, not the source.
  const std::string m = message_of<InputError>([] { read_file("/nonexistent/seqpar_x"); });
  EXPECT_NE(m.find("/nonexistent/seqpar_x"), std::string::npos) << m;
  EXPECT_EQ(m.find("src/"), std::string::npos) << m;
  EXPECT_EQ(m.find(".cpp:"), std::string::npos) << m;
}

TEST(Check, EveryKindStartsWithTheRank) {
  const int saved = error_rank();
  error_rank() = 3;
  const std::string usage = message_of<UsageError>([] { SP_FAIL_USAGE("u"); });
  const std::string input = message_of<InputError>([] { SP_FAIL_INPUT("i"); });
  const std::string bug = message_of<Error>([] { SP_FAIL("b"); });
  error_rank() = saved;
  EXPECT_EQ(usage, "[rank 3] u");
  EXPECT_EQ(input, "[rank 3] i");
  EXPECT_EQ(bug.rfind("[rank 3] tests/test_core.cpp:", 0), 0u) << bug;
}

// ---- core/hash.hpp, core/file.hpp -----------------------------------------------------

TEST(Hash, IncrementalEqualsOneShotAndHexRoundTrips) {
  const std::string s = "the quick brown fox";
  Fnv1a64 h;
  h.update(s.data(), 4);
  h.update(s.data() + 4, 0);
  h.update(s.data() + 4, s.size() - 4);
  EXPECT_EQ(h.value(), fnv1a64(s.data(), s.size()));
  EXPECT_EQ(Fnv1a64().value(), kFnv1a64Basis);
  EXPECT_EQ(hash_hex(0x1), "0000000000000001");
  EXPECT_EQ(hash_hex(0xaf63dc4c8601ec8cull), "af63dc4c8601ec8c");  // fnv1a64("a")
  EXPECT_EQ(hash_hex(~0ull), "ffffffffffffffff");
  uint64_t v = 0;
  EXPECT_TRUE(parse_hash_hex(hash_hex(0x85944171f73967e8ull), &v));
  EXPECT_EQ(v, 0x85944171f73967e8ull);
  EXPECT_TRUE(parse_hash_hex("AB", &v));
  EXPECT_EQ(v, 0xabu);
  for (const char* bad : {"", "0x12", "12 ", "-1", "g", "10000000000000000"})
    EXPECT_FALSE(parse_hash_hex(bad, &v)) << bad;
  EXPECT_EQ(v, 0xabu);  // untouched by a refusal
}

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/seqpar_test_file_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string at(const char* name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(FileTest, WholeFilesRoundTripAndMissingOnesAreInputErrors) {
  std::string bytes("a\0b\n", 4);
  bytes += std::string(1 << 20, 'x');  // past any single read
  write_file_atomic(at("f"), bytes);
  EXPECT_EQ(read_file(at("f")), bytes);
  EXPECT_EQ(fnv1a64_file(at("f")), fnv1a64(bytes.data(), bytes.size()));
  write_file_atomic(at("f"), "");
  EXPECT_EQ(read_file(at("f")), "");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);  // no temp
  test::expect_error<InputError>([&] { read_file(at("nope")); }, {"open(", "nope", "No such file"});
  test::expect_error<InputError>([&] { read_regular_file(at("nope"), "data file"); },
                                 {"data file '", "nope' does not exist"});
  test::expect_error<InputError>([&] { read_regular_file(dir_.string(), "data file"); },
                                 {"is a directory"});
  test::expect_error<InputError>([&] { fnv1a64_file(at("nope")); }, {"nope", "No such file"});
}

TEST_F(FileTest, PreadAllRefusesAShortFile) {
  write_file_atomic(at("f"), "12345");
  Fd fd = open_checked(at("f"), O_RDONLY);
  EXPECT_EQ(file_size(fd.get(), at("f")), 5u);
  char buf[4];
  pread_all(fd.get(), buf, 3, 2, at("f"));
  EXPECT_EQ(std::string(buf, 3), "345");
  test::expect_error<InputError>([&] { pread_all(fd.get(), buf, 4, 2, at("f")); },
                                 {"unexpected end of file at byte 5"});
  fd.close_checked(at("f"));
  EXPECT_FALSE(fd.is_open());
}

TEST_F(FileTest, AtomicWriterLeavesTheOldFileUntilCommit) {
  write_file_atomic(at("f"), "old");
  {
    AtomicFileWriter w(at("f"));
    w.write("new!", 4);
    w.write_at(0, "N", 1);
    EXPECT_EQ(w.bytes_written(), 4u);
    EXPECT_EQ(read_file(at("f")), "old");
    EXPECT_TRUE(fs::exists(temp_path(at("f"))));
    // Misuse is a bug, not an input error.
    test::expect_error([&] { w.write_at(9, "x", 1); }, {"leaves a hole"});
  }  // not committed: the temp file goes, the old file stays
  EXPECT_EQ(read_file(at("f")), "old");
  EXPECT_FALSE(fs::exists(temp_path(at("f"))));
  AtomicFileWriter w(at("f"));
  w.write("new!", 4);
  w.write_at(0, "N", 1);
  w.commit();
  EXPECT_EQ(read_file(at("f")), "New!");
  test::expect_error([&] { w.commit(); }, {"committed twice"});
}

TEST_F(FileTest, SymlinksCanBeRefused) {
  write_file_atomic(at("target"), "secret");
  fs::create_symlink(at("target"), at("link"));
  EXPECT_EQ(read_file(at("link")), "secret");  // followed by default
  test::expect_error<InputError>([&] { read_file(at("link"), Symlinks::refuse); },
                                 {"link", "is a symbolic link"});
  // A link planted under the writer's temp name cannot redirect the write to its target.
  fs::create_symlink(at("target"), temp_path(at("out")));
  test::expect_error<InputError>(
      [&] { write_file_atomic(at("out"), "overwritten", Symlinks::refuse); },
      {"is a symbolic link"});
  EXPECT_EQ(read_file(at("target")), "secret");
}

TEST_F(FileTest, RenameNoReplaceNeverWritesOver) {
  write_file_atomic(at("a"), "A");
  write_file_atomic(at("b"), "B");
  EXPECT_FALSE(rename_no_replace(at("a"), at("b")));
  EXPECT_EQ(read_file(at("b")), "B");
  EXPECT_TRUE(rename_no_replace(at("a"), at("c")));
  EXPECT_EQ(read_file(at("c")), "A");
  EXPECT_FALSE(fs::exists(at("a")));
  rename_file(at("c"), at("b"));  // plain rename replaces
  EXPECT_EQ(read_file(at("b")), "A");
  test::expect_error<InputError>([&] { rename_file(at("a"), at("d")); }, {"rename(", "a"});
  EXPECT_EQ(parent_dir("x"), ".");
  EXPECT_EQ(parent_dir("/p/q/x"), "/p/q");
  fsync_dir(dir_.string());
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

TEST(Arena, NoteOutsideKeepsTheLargestDeclaration) {
  Arena dry(true);
  EXPECT_EQ(dry.outside_peak(), 0u);
  dry.note_outside(10 << 20, "ten");
  dry.note_outside(5 << 20, "five");
  EXPECT_EQ(dry.outside_peak(), uint64_t(10) << 20);
  EXPECT_EQ(dry.outside_what(), "ten");
  dry.note_outside(20 << 20, "twenty");
  EXPECT_EQ(dry.outside_peak(), uint64_t(20) << 20);
  EXPECT_EQ(dry.outside_what(), "twenty");
  EXPECT_EQ(dry.total_peak(), 0u);  // a declaration allocates nothing
}

TEST(Comm, CollectiveScratchIsCopiesOfTheOperandPlusKappa) {
  constexpr uint64_t m = 3 << 20;
  auto kappa = [](uint64_t n) { return (uint64_t(128) << 10) + (uint64_t(64) << 10) * n; };
  EXPECT_EQ(collective_scratch_bytes(Coll::allreduce, 1, m), 0u);  // one rank: no algorithm
  EXPECT_EQ(collective_scratch_bytes(Coll::allreduce, 2, m), m + kappa(2));
  EXPECT_EQ(collective_scratch_bytes(Coll::allgather, 3, m), m + kappa(3));
  EXPECT_EQ(collective_scratch_bytes(Coll::reduce, 16, m), 3 * m + kappa(16));
  EXPECT_EQ(collective_scratch_bytes(Coll::reduce_scatter, 4, m), 2 * m + kappa(4));
  EXPECT_EQ(collective_scratch_bytes(Coll::allgatherv, 4, m), kappa(4));
  EXPECT_EQ(collective_scratch_bytes(Coll::alltoallv, 8, m), kappa(8));
  EXPECT_EQ(collective_scratch_bytes(Coll::bcast, 4, m), kappa(4));
}

// thread_bytes() bounds what a thread holds: 64 live threads, each past a few KiB of its
// stack, add at most 64 × thread_bytes() to the resident memory.
TEST(Memory, ThreadBytesBoundALiveThread) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer gives every thread its own shadow and fake stacks";
#endif
  EXPECT_GE(static_tls_bytes(), 60u << 10);  // OpenBLAS's own static TLS is 60 KiB
  constexpr int n = 64;
  std::mutex mu;
  std::condition_variable cv;
  int started = 0;
  bool done = false;
  const uint64_t before = process_rss_bytes();
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&] {
      volatile char frame[8 << 10];
      for (size_t k = 0; k < sizeof frame; k += 512) frame[k] = char(k);
      std::unique_lock<std::mutex> lock(mu);
      ++started;
      cv.notify_all();
      cv.wait(lock, [&] { return done; });
    });
  uint64_t during = 0;
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return started == n; });
    during = process_rss_bytes();
    done = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  const uint64_t grown = during > before ? during - before : 0;
  EXPECT_GT(grown, 0u);
  std::printf("64 threads: +%llu bytes, %llu per thread; thread_bytes() = %llu\n",
              static_cast<unsigned long long>(grown), static_cast<unsigned long long>(grown / n),
              static_cast<unsigned long long>(thread_bytes()));
  EXPECT_LE(grown, n * thread_bytes()) << "64 threads grew the process by " << grown
                                       << " bytes; thread_bytes() = " << thread_bytes();
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
