// Blocked attention throughput vs cblas_sgemm throughput measured in the same run.
//
//   bench_attention [--threads N] [--quick]
//
// FLOPs counted (FlashAttention convention): forward 4·B·H·L²·d (Q Kᵀ and P V),
// backward 2.5× that (Q Kᵀ recompute, dO Vᵀ, Pᵀ dO, dSᵀ Q, dS K), both halved when
// causal. sgemm: 2·n³ for one n×n×n product with all threads. ratio = (fwd+bwd
// GFLOP/s) / (sgemm GFLOP/s); the target is ≥ 0.5. Q/K/V are read from a packed
// (B, L, 3H, d) buffer as the model does. Peak bytes are the arena's total peak
// (inputs, outputs, gradients, LSE, Δ and the kernel scratch).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/arena.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"

using namespace seqpar;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <class F>
double best_of(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    f();
    best = std::min(best, now_s() - t0);
  }
  return best;
}

double sgemm_gflops(int n, int reps) {
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = u(gen), b[i] = u(gen);
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  };
  run();  // warm-up (thread pool, page faults)
  return 2.0 * n * n * double(n) / best_of(reps, run) * 1e-9;
}

struct Row {
  int L;
  bool causal;
  double fwd_s, bwd_s, fwd_gf, bwd_gf, both_gf;
  size_t peak;
};

Row bench_attention(int B, int L, int H, int d, bool causal, int reps) {
  Arena arena;
  const size_t tok = size_t(B) * L;
  const int64_t w = int64_t{3} * H * d;  // packed q | k | v per token
  Buffer qkv(arena, Mem::acts, tok * w, "qkv"), dqkv(arena, Mem::grads, tok * w, "dqkv");
  Buffer o(arena, Mem::acts, tok * H * d, "o"), dout(arena, Mem::acts, tok * H * d, "dout");
  Buffer lse(arena, Mem::acts, size_t(B) * H * L, "lse");
  Buffer delta(arena, Mem::scratch, size_t(B) * H * L, "delta");
  const int64_t sf = attention_scratch_floats(d, num_threads());
  Buffer scratch(arena, Mem::scratch, size_t(sf), "attention scratch");
  std::mt19937 gen(2);
  std::normal_distribution<float> nd;
  for (size_t i = 0; i < tok * w; ++i) qkv.data()[i] = nd(gen);
  for (size_t i = 0; i < tok * H * d; ++i) dout.data()[i] = nd(gen);
  std::vector<int64_t> pos(L);
  for (int i = 0; i < L; ++i) pos[i] = i;

  AttnBwdParams p;
  p.q = qkv.data(), p.k = qkv.data() + H * d, p.v = qkv.data() + 2 * H * d;
  p.o = o.data(), p.lse = lse.data();
  p.q_stride = p.kv_stride = w, p.q_bstride = p.kv_bstride = L * w;
  p.o_stride = H * d, p.o_bstride = int64_t{L} * H * d;
  p.q_pos = p.k_pos = pos.data();
  p.B = B, p.Tq = p.Tk = L, p.H = p.Hkv = H, p.d = d, p.causal = causal;
  p.scratch = scratch.data(), p.scratch_floats = sf;
  p.dout = dout.data(), p.delta = delta.data();
  p.dq = dqkv.data(), p.dk = dqkv.data() + H * d, p.dv = dqkv.data() + 2 * H * d;
  p.dq_stride = p.dkv_stride = w, p.dq_bstride = p.dkv_bstride = L * w;

  auto fwd = [&] { attention_forward(p); };
  auto bwd = [&] {
    attention_delta(delta.data(), dout.data(), p);
    attention_backward(p);
  };
  fwd();  // warm-up
  bwd();
  Row r{L, causal, best_of(reps, fwd), best_of(reps, bwd), 0, 0, 0, arena.total_peak()};
  const double f = 4.0 * B * H * double(L) * L * d * (causal ? 0.5 : 1.0);
  r.fwd_gf = f / r.fwd_s * 1e-9;
  r.bwd_gf = 2.5 * f / r.bwd_s * 1e-9;
  r.both_gf = 3.5 * f / (r.fwd_s + r.bwd_s) * 1e-9;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--threads N] [--quick]\n", argv[0]);
      return 2;
    }
  }
  set_num_threads(threads);
  const int B = 1, H = 4, d = 64;
  const double gemm = sgemm_gflops(quick ? 1024 : 2048, 3);
  std::printf("threads=%d  B=%d H=%d d=%d  cblas_sgemm %d^3: %.1f GFLOP/s\n\n", num_threads(), B, H,
              d, quick ? 1024 : 2048, gemm);
  std::printf(
      "| L | causal | fwd ms | fwd GFLOP/s | bwd ms | bwd GFLOP/s | fwd+bwd GFLOP/s | "
      "sgemm GFLOP/s | ratio | arena peak MiB | L×L fp32 MiB |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::vector<int> Ls =
      quick ? std::vector<int>{1024, 2048} : std::vector<int>{1024, 2048, 4096, 8192};
  for (int L : Ls)
    for (bool causal : {false, true}) {
      const int reps = quick ? 1 : (L >= 8192 ? 2 : 3);
      const Row r = bench_attention(B, L, H, d, causal, reps);
      std::printf("| %d | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.2f | %.1f | %.0f |\n", L,
                  causal ? "yes" : "no", r.fwd_s * 1e3, r.fwd_gf, r.bwd_s * 1e3, r.bwd_gf,
                  r.both_gf, gemm, r.both_gf / gemm, r.peak / 1048576.0,
                  double(L) * L * 4 / 1048576.0);
      std::fflush(stdout);
    }
  return 0;
}
