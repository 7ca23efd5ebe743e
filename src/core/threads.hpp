// Thread budget shared by OpenBLAS and the OpenMP loops of the kernels. Large GEMMs run
// with BLAS threads = n outside parallel regions; loops that call BLAS from inside an
// OpenMP region (blocked attention) switch BLAS to 1 thread for the duration, so the two
// pools never oversubscribe the cores.
#pragma once

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

}  // namespace seqpar
