// Thread budget shared by OpenBLAS and the OpenMP loops of the kernels. Large GEMMs run
// with BLAS threads = n outside parallel regions; loops that call BLAS from inside an
// OpenMP region (blocked attention) switch BLAS to 1 thread for the duration, so the two
// pools never oversubscribe the cores.
#pragma once
#include <cstdint>

namespace seqpar {

void set_num_threads(int n);  // n <= 0: keep the default (OMP_NUM_THREADS or cores)
int num_threads();

// RAII: BLAS single-threaded while alive (for BLAS calls inside OpenMP loops). Restores
// the count it found: OpenBLAS's OpenMP build sets OpenMP's own thread count in
// openblas_set_num_threads, so without set_num_threads() a restore to num_threads() would
// read back the 1 it had just set, and every later parallel region would run on 1 thread.
class BlasSingleThread {
 public:
  BlasSingleThread();
  ~BlasSingleThread();
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  int prev_;
};

// Parallelism that pays for itself. Starting a team and joining it costs a few µs when the
// other cores are idle and up to a scheduler time slice when they are busy (a worker that
// spins or sleeps waits for a core): an operation is split only when each thread gets
// enough work to hide that. `work` is in flops (or element operations for loops);
// kWorkPerThread ≈ 0.1–0.4 ms of one core's work.
constexpr int64_t kWorkPerThread = int64_t(1) << 22;
// Threads for `work`: 1 below 2·per_thread, else min(num_threads(), work / per_thread).
int threads_for_work(int64_t work, int64_t per_thread = kWorkPerThread);

// RAII: a BLAS call of `flops` below what two threads would pay for runs on one (OpenBLAS
// splits a product from about 2^18 multiply-adds on; a decode step's 1 × C × V head is far
// below where that pays). Large products keep the team. Cheap when nothing changes.
class BlasThreadsFor {
 public:
  explicit BlasThreadsFor(int64_t flops);
  ~BlasThreadsFor();
  BlasThreadsFor(const BlasThreadsFor&) = delete;
  BlasThreadsFor& operator=(const BlasThreadsFor&) = delete;

 private:
  int prev_ = 0;  // 0: nothing changed
};

}  // namespace seqpar
