// ranks: 1 2 3 4
// Multi-rank tests of comm/: every collective against the result computed locally from
// the known per-rank inputs, byte counters against the formulas in comm.hpp, consistency
// checks, and MPI errors turned into exceptions.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "comm/comm.hpp"
#include "core/check.hpp"

namespace seqpar {
namespace {

// Per-rank inputs: small integers, so float sums are exact and EXPECT_EQ is the right
// comparison.
float val(int r, size_t i) { return static_cast<float>(7 * r + 3 * static_cast<int>(i) + 1); }

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// ---------------------------------------------------------------------------------------
// Lifetime, error handler, split

TEST(Comm, WorldIsACongruentDuplicateThatReturnsErrors) {
  Comm c = Comm::world();
  ASSERT_TRUE(c.valid());
  EXPECT_NE(c.raw(), MPI_COMM_WORLD);
  int cmp = MPI_UNEQUAL;
  MPI_Comm_compare(c.raw(), MPI_COMM_WORLD, &cmp);
  EXPECT_EQ(cmp, MPI_CONGRUENT);
  EXPECT_EQ(c.rank(), world_rank());
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  EXPECT_EQ(c.size(), size);
  EXPECT_EQ(c.name(), "world");
  MPI_Errhandler eh = MPI_ERRHANDLER_NULL;
  MPI_Comm_get_errhandler(c.raw(), &eh);
  EXPECT_EQ(eh, MPI_ERRORS_RETURN);
  MPI_Errhandler_free(&eh);
}

TEST(Comm, MoveTransfersOwnership) {
  Comm a = Comm::world();
  MPI_Comm raw = a.raw();
  float x = 1;
  a.allreduce_sum(&x, 1);
  Comm b(std::move(a));
  EXPECT_FALSE(a.valid());
  EXPECT_EQ(b.raw(), raw);
  EXPECT_EQ(b.name(), "world");
  EXPECT_EQ(b.stats().calls.at("allreduce"), 1u);
  EXPECT_TRUE(a.stats().calls.empty());
  EXPECT_THROW(a.barrier(), Error);  // moved-from: refused, not undefined

  Comm c = Comm::world();
  c = std::move(b);  // c's own duplicate is freed, b's taken
  EXPECT_FALSE(b.valid());
  EXPECT_EQ(c.raw(), raw);
  float y = 2;
  c.allreduce_sum(&y, 1);
  EXPECT_EQ(y, 2.0f * c.size());
}

TEST(Comm, SessionAdoptsAnInitialisedMpi) {
  {
    error_rank() = -1;
    MpiSession s(nullptr, nullptr);  // MPI is up already: must neither re-init nor finalise
    EXPECT_EQ(error_rank(), world_rank());
  }
  int finalized = 1;
  MPI_Finalized(&finalized);
  EXPECT_EQ(finalized, 0);
  error_rank() = world_rank();
}

TEST(Comm, SplitEvenOddThenAllreduceInGroup) {
  Comm world = Comm::world();
  const int n = world.size(), r = world.rank();
  // key = −rank reverses the order inside each group.
  Comm g = world.split(r % 2, -r, r % 2 ? "odd" : "even");
  ASSERT_TRUE(g.valid());
  EXPECT_EQ(g.name(), r % 2 ? "odd" : "even");
  std::vector<int> members;
  for (int q = 0; q < n; ++q)
    if (q % 2 == r % 2) members.push_back(q);
  EXPECT_EQ(g.size(), static_cast<int>(members.size()));
  // Reversed order: the highest world rank of the group is group rank 0.
  int expect_rank = 0;
  for (int q : members)
    if (q > r) ++expect_rank;
  EXPECT_EQ(g.rank(), expect_rank);
  MPI_Errhandler eh = MPI_ERRHANDLER_NULL;
  MPI_Comm_get_errhandler(g.raw(), &eh);
  EXPECT_EQ(eh, MPI_ERRORS_RETURN);
  MPI_Errhandler_free(&eh);

  std::vector<int64_t> v = {r, 100 + r, int64_t{1} << 40};
  g.allreduce_sum(v.data(), v.size());
  int64_t s = 0;
  for (int q : members) s += q;
  const int64_t m = static_cast<int64_t>(members.size());
  EXPECT_EQ(v[0], s);
  EXPECT_EQ(v[1], 100 * m + s);
  EXPECT_EQ(v[2], m << 40);
}

TEST(Comm, SplitUndefinedGivesInvalidComm) {
  Comm world = Comm::world();
  // Only rank 0 joins a group; the others get an invalid Comm.
  Comm g = world.split(world.rank() == 0 ? 0 : MPI_UNDEFINED, 0, "solo");
  EXPECT_EQ(g.valid(), world.rank() == 0);
  if (g.valid()) {
    EXPECT_EQ(g.size(), 1);
  }
}

// ---------------------------------------------------------------------------------------
// Collectives against locally computed results

TEST(Comm, AllreduceSumMaxMin) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  for (size_t len : {size_t{1}, size_t{37}}) {
    std::vector<float> f(len);
    std::vector<double> d(len);
    std::vector<int64_t> i64(len), mx(len), mn(len);
    std::vector<float> fmx(len);
    for (size_t i = 0; i < len; ++i) {
      f[i] = val(r, i);
      d[i] = 0.5 * val(r, i);
      i64[i] = (int64_t{r} << 33) + static_cast<int64_t>(i);
      mx[i] = mn[i] = (5 * r + static_cast<int64_t>(i)) % 7 - r;  // not monotone in r
      fmx[i] = static_cast<float>(mx[i]);
    }
    c.allreduce_sum(f.data(), len);
    c.allreduce_sum(d.data(), len);
    c.allreduce_sum(i64.data(), len);
    c.allreduce_max(mx.data(), len);
    c.allreduce_min(mn.data(), len);
    c.allreduce_max(fmx.data(), len);
    for (size_t i = 0; i < len; ++i) {
      float fs = 0;
      double ds = 0;
      int64_t is = 0, emx = INT64_MIN, emn = INT64_MAX;
      for (int q = 0; q < n; ++q) {
        fs += val(q, i);
        ds += 0.5 * val(q, i);
        is += (int64_t{q} << 33) + static_cast<int64_t>(i);
        int64_t m = (5 * q + static_cast<int64_t>(i)) % 7 - q;
        emx = std::max(emx, m);
        emn = std::min(emn, m);
      }
      EXPECT_EQ(f[i], fs) << "len " << len << " i " << i;
      EXPECT_EQ(d[i], ds) << "len " << len << " i " << i;
      EXPECT_EQ(i64[i], is) << "len " << len << " i " << i;
      EXPECT_EQ(mx[i], emx) << "len " << len << " i " << i;
      EXPECT_EQ(mn[i], emn) << "len " << len << " i " << i;
      EXPECT_EQ(fmx[i], static_cast<float>(emx)) << "len " << len << " i " << i;
    }
  }
  std::vector<double> dm = {-1.0 * r, 0.25 * r};
  c.allreduce_max(dm.data(), dm.size());
  EXPECT_EQ(dm[0], 0.0);
  EXPECT_EQ(dm[1], 0.25 * (n - 1));
}

TEST(Comm, Allgather) {
  Comm c = Comm::world();
  const int n = c.size();
  for (size_t len : {size_t{1}, size_t{13}}) {
    std::vector<float> send(len), recv(n * len, -1.0f);
    for (size_t i = 0; i < len; ++i) send[i] = val(c.rank(), i);
    c.allgather(send.data(), recv.data(), len);
    for (int q = 0; q < n; ++q)
      for (size_t i = 0; i < len; ++i)
        EXPECT_EQ(recv[q * len + i], val(q, i)) << "from rank " << q << " i " << i;
  }
}

// Uneven counts, one of them zero when n ≥ 4: 1, 4, 2, 0, ...
int64_t gv_count(int r) { return (3 * r + 1) % 5; }

TEST(Comm, AllgathervUneven) {
  Comm c = Comm::world();
  const int n = c.size();
  std::vector<int64_t> counts(n);
  for (int q = 0; q < n; ++q) counts[q] = gv_count(q);
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<float> send(counts[c.rank()]), recv(total, -1.0f);
  for (size_t i = 0; i < send.size(); ++i) send[i] = val(c.rank(), i);
  c.allgatherv(send.data(), recv.data(), counts);
  size_t off = 0;
  for (int q = 0; q < n; ++q)
    for (int64_t i = 0; i < counts[q]; ++i, ++off)
      EXPECT_EQ(recv[off], val(q, i)) << "from rank " << q << " i " << i;
  EXPECT_EQ(off, static_cast<size_t>(total));
  std::vector<int64_t> wrong(n + 1, 1);
  EXPECT_THROW(c.allgatherv(send.data(), recv.data(), wrong), Error);
}

TEST(Comm, ReduceScatterSum) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  const size_t len = 11;
  auto input = [](int from, int block, size_t i) {
    return static_cast<float>(100 * from + 10 * block + static_cast<int>(i));
  };
  std::vector<float> send(n * len), recv(len, -1.0f);
  for (int j = 0; j < n; ++j)
    for (size_t i = 0; i < len; ++i) send[j * len + i] = input(r, j, i);
  c.reduce_scatter_sum(send.data(), recv.data(), len);
  for (size_t i = 0; i < len; ++i) {
    float e = 0;
    for (int q = 0; q < n; ++q) e += input(q, r, i);
    EXPECT_EQ(recv[i], e) << "i " << i;
  }
}

float a2a(int src, int dst, size_t i) {
  return static_cast<float>(1000 * src + 100 * dst + static_cast<int>(i));
}

TEST(Comm, Alltoall) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  for (size_t len : {size_t{1}, size_t{7}}) {
    std::vector<float> send(n * len), recv(n * len, -1.0f);
    for (int j = 0; j < n; ++j)
      for (size_t i = 0; i < len; ++i) send[j * len + i] = a2a(r, j, i);
    c.alltoall(send.data(), recv.data(), len);
    for (int j = 0; j < n; ++j)
      for (size_t i = 0; i < len; ++i)
        EXPECT_EQ(recv[j * len + i], a2a(j, r, i)) << "from " << j << " i " << i;
  }
}

// Floats rank `src` sends to rank `dst` in the alltoallv test: uneven, sometimes zero.
int64_t a2av_count(int src, int dst) { return (src + 2 * dst) % 3 + (src == dst ? 1 : 0); }

TEST(Comm, AlltoallvUnevenWithGaps) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  // Displacements leave a one-float gap before each block, so they are really used.
  std::vector<int64_t> sc(n), sd(n), rc(n), rd(n);
  int64_t so = 0, ro = 0;
  for (int j = 0; j < n; ++j) {
    sc[j] = a2av_count(r, j);
    sd[j] = so + 1;
    so += sc[j] + 1;
    rc[j] = a2av_count(j, r);
    rd[j] = ro + 1;
    ro += rc[j] + 1;
  }
  std::vector<float> send(so, -7.0f), recv(ro, -1.0f);
  for (int j = 0; j < n; ++j)
    for (int64_t i = 0; i < sc[j]; ++i) send[sd[j] + i] = a2a(r, j, i);
  c.alltoallv(send.data(), sc, sd, recv.data(), rc, rd);
  for (int j = 0; j < n; ++j) {
    EXPECT_EQ(recv[rd[j] - 1], -1.0f) << "gap before block from " << j << " overwritten";
    for (int64_t i = 0; i < rc[j]; ++i)
      EXPECT_EQ(recv[rd[j] + i], a2a(j, r, i)) << "from " << j << " i " << i;
  }
}

TEST(Comm, ReduceToEveryRoot) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  const size_t len = 5;
  for (int root = 0; root < n; ++root) {
    std::vector<float> send(len);
    for (size_t i = 0; i < len; ++i) send[i] = val(r, i) + root;
    std::vector<float> recv(len, -1.0f);
    c.reduce_sum(send.data(), r == root ? recv.data() : nullptr, len, root);
    if (r == root) {
      for (size_t i = 0; i < len; ++i) {
        float e = 0;
        for (int q = 0; q < n; ++q) e += val(q, i) + root;
        EXPECT_EQ(recv[i], e) << "root " << root << " i " << i;
      }
    }
    // In place on the root.
    c.reduce_sum(send.data(), r == root ? send.data() : nullptr, len, root);
    if (r == root) {
      for (size_t i = 0; i < len; ++i) EXPECT_EQ(send[i], recv[i]) << "in place, i " << i;
    }
  }
}

TEST(Comm, BcastFromEveryRoot) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  for (int root = 0; root < n; ++root) {
    char buf[13];
    for (int i = 0; i < 13; ++i) buf[i] = static_cast<char>(r == root ? 'a' + (i + root) % 26 : 0);
    c.bcast(buf, sizeof(buf), root);
    for (int i = 0; i < 13; ++i) EXPECT_EQ(buf[i], 'a' + (i + root) % 26) << "root " << root;
  }
}

// ---------------------------------------------------------------------------------------
// Ring point-to-point

TEST(Comm, RingIsendIrecvWithTestAllProgress) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  const size_t len = 9;
  const int next = (r + 1) % n, prev = (r - 1 + n) % n;
  std::vector<float> cur(len), nxt(len, -1.0f);
  for (size_t i = 0; i < len; ++i) cur[i] = val(r, i);
  std::vector<float> seen_sum(len, 0.0f);
  for (size_t i = 0; i < len; ++i) seen_sum[i] = cur[i];
  c.stats().reset();
  for (int step = 0; step < n - 1; ++step) {
    std::vector<Comm::Request> reqs;
    reqs.push_back(c.irecv(nxt.data(), len, prev, step));
    reqs.push_back(c.isend(cur.data(), len, next, step));
    long polls = 0;
    while (!c.test_all(reqs)) ++polls;
    for (const auto& q : reqs) EXPECT_EQ(q.req, MPI_REQUEST_NULL);
    std::swap(cur, nxt);
    // After step s this rank holds the block that started on rank r − s − 1.
    const int origin = ((r - step - 1) % n + n) % n;
    for (size_t i = 0; i < len; ++i) {
      EXPECT_EQ(cur[i], val(origin, i)) << "step " << step << " i " << i;
      seen_sum[i] += cur[i];
    }
  }
  for (size_t i = 0; i < len; ++i) {
    float e = 0;
    for (int q = 0; q < n; ++q) e += val(q, i);
    EXPECT_EQ(seen_sum[i], e) << "every block seen once, i " << i;
  }
  EXPECT_EQ(c.stats().bytes_sent["p2p"], static_cast<uint64_t>(n - 1) * len * sizeof(float));
  EXPECT_EQ(c.stats().calls["p2p"], static_cast<uint64_t>(n - 1));
  std::vector<Comm::Request> none;
  EXPECT_TRUE(c.test_all(none));
}

// Messages far above the eager limit (rendezvous protocol: the transfer needs both
// sides to make progress): a ring of 4 MiB blocks completes by polling test_all alone,
// which is how ring attention drives MPI while it computes.
TEST(Comm, RingOfLargeBlocksCompletesUnderTestAllPolling) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  const size_t len = size_t(1) << 20;  // 4 MiB of floats
  const int next = (r + 1) % n, prev = (r - 1 + n) % n;
  std::vector<float> cur(len), nxt(len, -1.0f);
  for (size_t i = 0; i < len; ++i) cur[i] = float(r * 1000003 + i % 9973);
  for (int step = 0; step < n - 1; ++step) {
    std::vector<Comm::Request> reqs;
    reqs.push_back(c.irecv(nxt.data(), len, prev, 100 + step));
    reqs.push_back(c.isend(cur.data(), len, next, 100 + step));
    auto t0 = std::chrono::steady_clock::now();
    while (!c.test_all(reqs))
      ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(60))
          << "transfer made no progress under polling";
    std::swap(cur, nxt);
    const int origin = ((r - step - 1) % n + n) % n;
    for (size_t i = 0; i < len; i += 4099)
      ASSERT_EQ(cur[i], float(origin * 1000003 + i % 9973)) << "step " << step << " i " << i;
  }
}

TEST(Comm, RingSendrecvAndWaitAll) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  const int next = (r + 1) % n, prev = (r - 1 + n) % n;
  std::vector<float> a = {val(r, 0), val(r, 1), val(r, 2)}, b(3, -1.0f);
  c.sendrecv(a.data(), 3, next, b.data(), 3, prev, 42);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(b[i], val(prev, i));
  // Same exchange the other way with wait_all.
  std::vector<Comm::Request> reqs;
  reqs.push_back(c.irecv(b.data(), 3, next, 43));
  reqs.push_back(c.isend(a.data(), 3, prev, 43));
  c.wait_all(reqs);
  for (const auto& q : reqs) EXPECT_EQ(q.req, MPI_REQUEST_NULL);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(b[i], val(next, i));
  Comm::Request one = c.irecv(b.data(), 1, next, 44);
  Comm::Request two = c.isend(a.data(), 1, prev, 44);
  c.wait(two);
  c.wait(one);
  EXPECT_EQ(b[0], val(next, 0));
}

// ---------------------------------------------------------------------------------------
// Byte counters: exactly the formulas of comm.hpp, per K

TEST(Comm, ByteCountersMatchFormulas) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  const uint64_t K = static_cast<uint64_t>(n), F = sizeof(float);
  std::vector<float> buf(64 * n, 1.0f), out(64 * n, 0.0f);

  auto expect_only = [&](const char* op, uint64_t bytes) {
    EXPECT_EQ(c.stats().bytes_sent.size(), 1u) << op;
    EXPECT_EQ(c.stats().bytes_sent[op], bytes) << op << " at K=" << n << " rank " << r;
    EXPECT_EQ(c.stats().calls[op], 1u) << op;
    EXPECT_EQ(c.stats().total_bytes_sent(), bytes) << op;
    c.stats().reset();
    EXPECT_EQ(c.stats().total_bytes_sent(), 0u);
  };
  c.stats().reset();

  // all-reduce of 37 floats = 148 bytes: ⌊2·(K−1)·148/K⌋, written out per K as well.
  c.allreduce_sum(buf.data(), 37);
  const uint64_t ar_table[] = {0, 0, 148, 197, 222};
  ASSERT_LE(n, 4);
  EXPECT_EQ(2 * (K - 1) * 37 * F / K, ar_table[n]);
  expect_only("allreduce", ar_table[n]);

  std::vector<int64_t> i64(3, r);
  c.allreduce_max(i64.data(), 3);  // 24 bytes
  expect_only("allreduce", 2 * (K - 1) * 24 / K);

  c.allgather(buf.data(), out.data(), 13);
  expect_only("allgather", (K - 1) * 13 * F);

  std::vector<int64_t> counts(n);
  for (int q = 0; q < n; ++q) counts[q] = gv_count(q);
  c.allgatherv(buf.data(), out.data(), counts);
  expect_only("allgatherv", (K - 1) * static_cast<uint64_t>(gv_count(r)) * F);

  c.reduce_scatter_sum(buf.data(), out.data(), 11);
  expect_only("reduce_scatter", (K - 1) * 11 * F);

  c.alltoall(buf.data(), out.data(), 7);  // S = 7·K floats
  expect_only("alltoall", (K - 1) * (7 * K * F) / K);

  std::vector<int64_t> sc(n), sd(n), rc(n), rd(n);
  int64_t so = 0, ro = 0;
  uint64_t to_others = 0;
  for (int j = 0; j < n; ++j) {
    sc[j] = a2av_count(r, j);
    sd[j] = so;
    so += sc[j];
    rc[j] = a2av_count(j, r);
    rd[j] = ro;
    ro += rc[j];
    if (j != r) to_others += static_cast<uint64_t>(sc[j]);
  }
  c.alltoallv(buf.data(), sc, sd, out.data(), rc, rd);
  expect_only("alltoallv", to_others * F);

  c.reduce_sum(buf.data(), r == 0 ? out.data() : nullptr, 5, 0);  // S = 20 bytes
  const uint64_t red_table[] = {0, 0, 10, 13, 15};
  expect_only("reduce", red_table[n]);

  const int root = n - 1;
  c.bcast(buf.data(), 10, root);
  expect_only("bcast", r == root && n > 1 ? 10 : 0);

  c.sendrecv(buf.data(), 6, (r + 1) % n, out.data(), 6, (r - 1 + n) % n, 7);
  expect_only("p2p", n > 1 ? 6 * F : 0);  // to self when K = 1: nothing leaves

  // Control traffic is not counted.
  c.check_same("x", int64_t{3});
  c.check_same("s", std::string("abc"));
  EXPECT_TRUE(c.all_ok(true));
  c.barrier();
  EXPECT_EQ(c.stats().total_bytes_sent(), 0u);
  EXPECT_TRUE(c.stats().calls.empty());

  // Counters accumulate across calls.
  c.allgather(buf.data(), out.data(), 2);
  c.allgather(buf.data(), out.data(), 3);
  EXPECT_EQ(c.stats().bytes_sent["allgather"], (K - 1) * 5 * F);
  EXPECT_EQ(c.stats().calls["allgather"], 2u);
}

// ---------------------------------------------------------------------------------------
// Consistency checks

TEST(Comm, CheckSameAgreeingValuesPass) {
  Comm c = Comm::world();
  EXPECT_NO_THROW(c.check_same("config 'seq_len'", int64_t{1024}));
  EXPECT_NO_THROW(c.check_same("file 'corpus.bin'", std::string("same contents\0x", 15)));
  EXPECT_NO_THROW(c.check_same("empty", std::string()));
}

TEST(Comm, CheckSameIntDisagreementThrowsOnEveryRank) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  if (n == 1) {  // one rank cannot disagree with itself
    EXPECT_NO_THROW(c.check_same("config 'seq_len'", int64_t{512}));
    return;
  }
  // The last rank disagrees (rank 2 with K = 3, as in the header's example).
  const int odd = n - 1;
  int64_t v = r == odd ? 512 : 1024;
  std::string msg;
  try {
    c.check_same("config 'seq_len'", v);
  } catch (const Error& e) {
    msg = e.what();
  }
  const std::string expect = "config 'seq_len' disagrees across ranks: rank 0 has 1024, rank " +
                             std::to_string(odd) + " has 512";
  EXPECT_NE(msg.find(expect), std::string::npos) << "got: '" << msg << "'";
  EXPECT_NE(msg.find("[rank " + std::to_string(world_rank()) + "]"), std::string::npos) << msg;
  // Agreeing ranks are not listed.
  if (n > 2) {
    EXPECT_EQ(msg.find("rank 1 has"), std::string::npos) << msg;
  }
  // Nobody was left behind: the communicator still works in lockstep.
  float x = 1;
  c.allreduce_sum(&x, 1);
  EXPECT_EQ(x, static_cast<float>(n));
}

TEST(Comm, CheckSameStringDisagreementThrowsOnEveryRank) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  if (n == 1) {
    EXPECT_NO_THROW(c.check_same("tokenizer", std::string("abc")));
    return;
  }
  // Rank 1 differs in length, rank 2 (if any) only in content.
  std::string v = r == 1 ? "abcdef" : r == 2 ? "abd" : "abc";
  std::string msg;
  try {
    c.check_same("tokenizer", v);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("tokenizer disagrees across ranks: rank 0 has 'abc', rank 1 has 'abcdef'"),
            std::string::npos)
      << "got: '" << msg << "'";
  if (n > 2) {
    EXPECT_NE(msg.find("rank 2 has 'abd'"), std::string::npos) << msg;
  }
  if (n > 3) {
    EXPECT_EQ(msg.find("rank 3 has"), std::string::npos) << msg;
  }

  // Long values are cut in the message.
  std::string big(1000, 'x');
  if (r == n - 1) big[999] = 'y';
  msg.clear();
  try {
    c.check_same("blob", big);
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("(1000 bytes)"), std::string::npos) << msg;
  // The window shown is where the values differ (the end), not the common prefix.
  EXPECT_NE(msg.find("rank " + std::to_string(n - 1) + " has '..." + std::string(63, 'x') +
                     "y' (1000 bytes)"),
            std::string::npos)
      << msg;
  EXPECT_LT(msg.size(), 600u) << msg;
}

TEST(Comm, AllOk) {
  Comm c = Comm::world();
  const int n = c.size(), r = c.rank();
  EXPECT_TRUE(c.all_ok(true));
  EXPECT_FALSE(c.all_ok(r != n - 1));
  EXPECT_FALSE(c.all_ok(false));
}

// ---------------------------------------------------------------------------------------
// Error paths: MPI errors come back as seqpar::Error naming the rank, never abort

TEST(Comm, InvalidRootInBcastThrowsWithRank) {
  Comm c = Comm::world();
  char buf[4] = {};
  std::string msg;
  try {
    c.bcast(buf, sizeof(buf), c.size() + 3);
  } catch (const Error& e) {
    msg = e.what();
  }
  ASSERT_FALSE(msg.empty()) << "bcast to an invalid root did not throw";
  EXPECT_NE(msg.find("[rank " + std::to_string(world_rank()) + "]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.size())),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("comm 'world'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MPI_Bcast failed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("MPI_ERR_ROOT"), std::string::npos) << msg;  // MPI's own text (Open MPI)
  EXPECT_TRUE(c.stats().bytes_sent.empty()) << "a failed call must not be counted";
  // Still usable afterwards.
  c.barrier();
  EXPECT_TRUE(c.all_ok(true));
}

TEST(Comm, InvalidRankInIsendThrows) {
  Comm c = Comm::world();
  float x = 0;
  try {
    c.isend(&x, 1, c.size() + 5, 0);
    ADD_FAILURE() << "isend to an invalid rank did not throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("MPI_Isend failed"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[rank " + std::to_string(world_rank()) + "]"), std::string::npos) << msg;
  }
}

TEST(Comm, CountsAboveIntMaxAreRefused) {
  Comm c = Comm::world();
  float x = 0;
  const size_t huge = static_cast<size_t>(INT_MAX) + 1;
  // Refused before any data is touched, on every rank alike.
  for (int which = 0; which < 4; ++which) {
    std::string msg;
    try {
      if (which == 0) c.isend(&x, huge, 0, 0);
      if (which == 1) c.alltoall(&x, &x, huge);
      if (which == 2) c.allgather(&x, &x, huge);
      if (which == 3) c.reduce_scatter_sum(&x, &x, huge);
    } catch (const Error& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find("exceeds MPI's int limit"), std::string::npos) << which << ": " << msg;
    EXPECT_NE(msg.find(std::to_string(huge)), std::string::npos) << msg;
  }
  std::vector<int64_t> counts(c.size(), 1);
  counts[0] = int64_t{INT_MAX} + 1;
  EXPECT_THROW(c.allgatherv(&x, &x, counts), Error);
  counts[0] = -1;
  EXPECT_THROW(c.allgatherv(&x, &x, counts), Error);
  EXPECT_TRUE(c.stats().bytes_sent.empty());
}

TEST(Comm, InvalidCommRefuses) {
  Comm none;
  EXPECT_FALSE(none.valid());
  float x = 0;
  EXPECT_THROW(none.allreduce_sum(&x, 1), Error);
  EXPECT_THROW(none.check_same("x", int64_t{1}), Error);
}

}  // namespace
}  // namespace seqpar
