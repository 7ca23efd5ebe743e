#include "core/threads.hpp"

#include <cblas.h>
#include <omp.h>

namespace seqpar {

static int g_threads = 0;

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_max_threads();
  g_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

BlasSingleThread::BlasSingleThread() : prev_(num_threads()) { openblas_set_num_threads(1); }
BlasSingleThread::~BlasSingleThread() {
  openblas_set_num_threads(prev_);
  omp_set_num_threads(prev_);
}

int threads_for_work(int64_t work, int64_t per_thread) {
  const int n = num_threads();
  if (n <= 1 || work < 2 * per_thread) return 1;
  return int(work / per_thread < n ? work / per_thread : n);
}

BlasThreadsFor::BlasThreadsFor(int64_t flops) {
  const int n = num_threads();
  if (n > 1 && threads_for_work(flops) == 1 && omp_get_level() == 0) {
    prev_ = n;
    openblas_set_num_threads(1);
  }
}

BlasThreadsFor::~BlasThreadsFor() {
  if (prev_ == 0) return;
  openblas_set_num_threads(prev_);
  omp_set_num_threads(prev_);
}

}  // namespace seqpar
