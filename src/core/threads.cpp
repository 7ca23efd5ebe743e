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

}  // namespace seqpar
