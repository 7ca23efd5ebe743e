// Thread budget shared by OpenBLAS and the OpenMP loops of the kernels. Large GEMMs run
// with BLAS threads = n outside parallel regions; loops that call BLAS from inside an
// OpenMP region (blocked attention) switch BLAS to 1 thread for the duration, so the two
// pools never oversubscribe the cores.
#pragma once

namespace seqpar {

void set_num_threads(int n);  // n <= 0: keep the default (OMP_NUM_THREADS or cores)
int num_threads();

// RAII: BLAS single-threaded while alive (for BLAS calls inside OpenMP loops).
class BlasSingleThread {
 public:
  BlasSingleThread();
  ~BlasSingleThread();
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;
};

}  // namespace seqpar
