// MPI communicator for seqpar. RAII over an MPI_Comm (duplicated, never MPI_COMM_WORLD
// itself), errors returned (MPI_ERRORS_RETURN) and turned into seqpar::Error carrying
// the rank, the operation and MPI's own error string. Named groups (world, dp, sp, tp,
// ulysses, ring) are made with split().
//
// Every collective counts the bytes this rank sends under the textbook algorithm, the
// volume analytic formulas (docs/strategies.md) are written against — MPI's internal
// choice of algorithm is opaque, so these are algorithmic volumes, as in nccl-tests:
//   all-reduce of S bytes      : 2·(n−1)/n·S          (ring reduce-scatter + all-gather)
//   all-gather, S bytes/rank   : (n−1)·S
//   reduce-scatter, S out/rank : (n−1)·S
//   all-to-all, S bytes total  : (n−1)/n·S  (v-variants: exact bytes to other ranks)
//   broadcast of S bytes       : S at the root, 0 elsewhere (0 everywhere when n = 1)
//   point-to-point             : exact bytes
// with these readings, all in whole bytes (docs/comm.md):
//   all-gather-v               : (n−1)·counts[rank]·4 (this rank's block to every other)
//   reduce-scatter-v           : Σ_{j≠rank} counts[j]·4 (each other block's partial once)
//   reduce of S bytes to a root: (n−1)/n·S on every rank, root included (n reduces with
//                                rotating roots = one reduce-scatter of n·S)
//   all-reduce and reduce round down: ⌊2·(n−1)·S/n⌋ and ⌊(n−1)·S/n⌋
//   point-to-point to self or MPI_PROC_NULL counts 0 (nothing leaves the rank);
//   isend counts when posted, irecv never.
// Non-blocking all-gather-v and reduce-scatter-v count as their blocking forms, when posted.
// Keys in CommStats: "allreduce", "allgather", "allgatherv", "reduce_scatter",
// "reduce_scatterv", "alltoall",
// "alltoallv", "reduce", "bcast", "p2p". check_same, all_ok, barrier and split are control
// traffic and are not counted.
//
// MPI counts are int: all-reduce, reduce and broadcast are split into chunks of at most
// INT_MAX elements; every other call refuses a count or displacement above INT_MAX with
// a seqpar::Error rather than let it wrap.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace seqpar {

// Initialises MPI (MPI_THREAD_FUNNELED) for the life of the object; finalises at exit.
// Sets error_rank() so every later check names the rank. If MPI is already initialised
// (e.g. by a test main) the session adopts it and leaves finalisation to its owner.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;  // this session called MPI_Init_thread, so it finalises
};

// MPI's own temporaries for one collective: what a call allocates outside the caller's
// buffers and frees before it returns (a non-blocking one: when it completes). A planner
// adds the largest of them to a process's memory (train/planner.hpp); the code that will
// make the call declares it when it sets up (Arena::note_outside). For an operand of m
// bytes (the whole buffer the call reduces or gathers: all ranks' blocks) on n > 1 ranks:
//   c·m + κ(n),  κ(n) = 128 KiB + 64 KiB·n,
// with c the most any of OpenMPI 4.1's algorithms for that call allocates (coll/tuned for
// the blocking calls, coll/libnbc for the non-blocking ones), measured for m = 64 KiB …
// 128 MiB at n = 2, 3, 4, 8, 16 (docs/memory.md):
//   allreduce            c = 1  recursive doubling copies the whole buffer (ring: 2m/n;
//                               measured ≤ 0.75 m)
//   allgather            c = 1  Bruck rotates the result through a full copy (0.67 m at n = 3)
//   reduce               c = 3  an accumulator and two incoming segments, each the whole
//                               buffer when unsegmented (3.0 m at n = 16)
//   reduce_scatter(v)    c = 2  recursive halving / butterfly: two full copies (2.0 m)
//   ireduce_scatter(v)   c = 2  libnbc's schedule: two full copies (2.0–2.1 m)
//   allgatherv, alltoallv, bcast, point-to-point: c = 0 (no algorithm copies the operand)
// κ(n) is what every call may take besides, mostly per peer (request objects, fragment and
// schedule lists, page rounding): at most 0.84 MiB measured, an all-to-all-v of 64 KiB at
// n = 16 (57 KiB a peer). One rank: no algorithm runs, 0. The process keeps none of it:
// warm_up_runtimes pins glibc's mmap threshold, so a freed temporary of 128 KiB or more
// goes back to the system at once.
enum class Coll { allreduce, allgather, allgatherv, alltoallv, reduce, reduce_scatter, bcast };
uint64_t collective_scratch_bytes(Coll op, int ranks, uint64_t operand_bytes);

struct CommStats {
  // Bytes sent by this rank, per operation name ("allreduce", "allgather", ...).
  std::map<std::string, uint64_t> bytes_sent;
  std::map<std::string, uint64_t> calls;
  uint64_t total_bytes_sent() const;
  void reset();
};

class Comm {
 public:
  // Duplicate of MPI_COMM_WORLD named "world".
  static Comm world();
  Comm() = default;
  ~Comm();
  Comm(Comm&& o) noexcept;
  Comm& operator=(Comm&& o) noexcept;
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& name() const { return name_; }
  MPI_Comm raw() const { return comm_; }
  bool valid() const { return comm_ != MPI_COMM_NULL; }
  // collective_scratch_bytes(op, size(), operand_bytes): MPI's temporaries for one call.
  uint64_t scratch_bytes(Coll op, uint64_t operand_bytes) const {
    return collective_scratch_bytes(op, valid() ? size_ : 1, operand_bytes);
  }

  // Ranks with equal color form a group, ordered by key. Collective over this comm.
  Comm split(int color, int key, const std::string& name) const;

  // In-place collectives.
  void allreduce_sum(float* buf, size_t n);
  void allreduce_sum(double* buf, size_t n);
  void allreduce_sum(int64_t* buf, size_t n);
  void allreduce_max(float* buf, size_t n);
  void allreduce_max(double* buf, size_t n);
  void allreduce_max(int64_t* buf, size_t n);
  void allreduce_min(int64_t* buf, size_t n);
  // recv (size·n) = concat over ranks of send (n).
  void allgather(const float* send, float* recv, size_t n);
  // Uneven: rank r contributes counts[r] floats; recv is Σ counts, in rank order.
  void allgatherv(const float* send, float* recv, const std::vector<int64_t>& counts);
  // send (size·n): recv (n) = Σ over ranks of block `rank` of send.
  void reduce_scatter_sum(const float* send, float* recv, size_t n);
  // In place: this rank's counts[rank] floats already sit at their place in buf (Σ counts).
  void allgatherv_inplace(float* buf, const std::vector<int64_t>& counts);
  // In place: buf (Σ counts) holds every block; afterwards its first counts[rank] floats
  // are Σ over ranks of block `rank`.
  void reduce_scatterv_sum_inplace(float* buf, const std::vector<int64_t>& counts);
  // Uneven: send (Σ counts) holds block j (counts[j] floats) for rank j, in rank order;
  // recv (counts[rank]) = Σ over ranks of block `rank`.
  void reduce_scatterv_sum(const float* send, float* recv, const std::vector<int64_t>& counts);
  // send (size·n): block j goes to rank j; recv (size·n): block j came from rank j.
  void alltoall(const float* send, float* recv, size_t n);
  // counts/displacements in floats, per peer.
  void alltoallv(const float* send, const std::vector<int64_t>& send_counts,
                 const std::vector<int64_t>& send_displs, float* recv,
                 const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_displs);
  // Reduce (sum) n floats onto root: recv valid on root only (may be null elsewhere).
  void reduce_sum(const float* send, float* recv, size_t n, int root);
  void bcast(void* buf, size_t bytes, int root);
  void barrier();

  // Non-blocking point-to-point (for rings). A Request must be waited on.
  struct Request {
    MPI_Request req = MPI_REQUEST_NULL;
    // What a non-blocking collective's MPI call reads until it completes (its counts and
    // displacements), shared by copies of the request.
    std::shared_ptr<const void> keep;
  };
  // Non-blocking allgatherv / reduce_scatterv_sum (same buffers and counts as the blocking
  // ones, counted when posted); the buffers must stay untouched until wait().
  Request iallgatherv(const float* send, float* recv, const std::vector<int64_t>& counts);
  Request ireduce_scatterv_sum(const float* send, float* recv, const std::vector<int64_t>& counts);
  Request isend(const float* buf, size_t n, int dst, int tag);
  Request irecv(float* buf, size_t n, int src, int tag);
  void wait(Request& r);
  void wait_all(std::vector<Request>& rs);
  // Drives MPI progress for outstanding requests (MPI_Testall), so a ring transfer
  // advances while the caller computes. Returns true when all are complete.
  bool test_all(std::vector<Request>& rs);
  // Cancels and frees every request still pending (for unwinding after an error, so no
  // transfer later lands in a buffer its owner has freed). Never throws.
  void cancel_all(std::vector<Request>& rs) noexcept;
  void sendrecv(const float* send, size_t n_send, int dst, float* recv, size_t n_recv, int src,
                int tag);

  // Collective consistency check: throws on EVERY rank, naming the value of each rank
  // that disagrees with rank 0, e.g. check_same("config 'seq_len'", L) gives
  // "config 'seq_len' disagrees across ranks: rank 0 has 1024, rank 2 has 512" (string
  // values are shown quoted; long ones as a 64-character window around the first
  // difference). Use before any work for configs, shapes and file contents.
  void check_same(const std::string& what, const std::string& value);
  void check_same(const std::string& what, int64_t value);

  // Every rank's string, indexed by rank (control traffic, not counted). The one
  // collective all ranks reach whatever they parsed: see cli/main.cpp's agreement.
  std::vector<std::string> allgather_strings(const std::string& value);

  // True on every rank if `ok` is true on every rank (logical AND all-reduce).
  bool all_ok(bool ok);

  CommStats& stats() { return stats_; }
  const CommStats& stats() const { return stats_; }

 private:
  Comm(MPI_Comm c, const std::string& name);  // takes ownership of c
  void count(const char* op, uint64_t bytes);
  void check_mpi(int rc, const char* op, const char* file, int line) const;
  void check_multi(int rc, const char* op, const std::vector<MPI_Status>& st, const char* file,
                   int line) const;
  void require_valid(const char* op) const;
  int to_count(size_t n, const char* op) const;
  int to_count(int64_t n, const char* op) const;
  template <class T>
  void allreduce_impl(T* buf, size_t n, MPI_Op op);
  void reduce_scatterv_impl(const void* send, float* recv, const std::vector<int64_t>& counts);
  void allgatherv_impl(const float* send, float* recv, const std::vector<int64_t>& counts);
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::string name_;
  CommStats stats_;
};

// Touches what MPI allocates lazily on first use between two processes (the shared-memory
// transport's per-peer fragment buffers, the rendezvous path), so that a resident-memory
// baseline taken after it covers the first training step too: with every other rank of c,
// one exchange each of a small (eager) and a large (rendezvous) message, then one
// all-reduce. Collective over c; counts no bytes in c's statistics. Its own buffers are
// mapped and unmapped, so they leave nothing resident.
void warm_up_transport(Comm& c);

// Runs fn on this rank, then agrees with every rank of c on whether it threw anywhere.
// If it did, every rank throws, marked agreed: a failing rank its own message, the others
// "rank k refused: rank j: <j's message>"; a UsageError if any failing rank's error was
// one. One collective that every rank reaches whatever fn did, so a failure on one rank
// never leaves the others waiting.
void agree_or_throw(Comm& c, const std::function<void()>& fn);

}  // namespace seqpar
