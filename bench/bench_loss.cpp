// Fused linear cross-entropy (kernels/fused_xent.hpp) vs the materialised path
// (linear_forward to full logits, crossentropy_forward/backward, linear_backward),
// side by side in one run, with cblas_sgemm throughput measured in the same run.
//
//   bench_loss [--threads N] [--L 8192,32768] [--reps R] [--sweep] [--quick]
//
// Shape: B = 1, C = 512, V = 32000 (LLaMA-1/2 vocabulary), N = L tokens, every target
// valid. Times are the best of R runs.
//   forward:  materialised = logits GEMM + crossentropy_forward;
//             fused        = fused_xent_forward (losses and lse).
//   backward: materialised = zero dlogits (crossentropy_backward accumulates) +
//             crossentropy_backward + linear_backward (dx and dw GEMMs);
//             fused        = fused_xent_backward (logits recomputed, dx and dw).
// GFLOP/s counts the useful work of both paths alike, 6·N·C·V (2 forward, 4 backward);
// the fused path executes 8·N·C·V (the logits GEMM twice).
// Loss memory (exact bytes): materialised logits + dlogits = 2·N·V·4; fused scratch =
// fused_xent_scratch_floats·4 (plus lse, N·4, saved for the backward, listed separately).
// RSS: VmHWM of /proc/self/status after resetting it (echo 5 > /proc/self/clear_refs) at
// the start of each path, minus VmRSS at that moment: what the path itself added (both
// paths also hold dx and dw; approximate, since heap memory glibc reuses without returning
// it to the OS is not counted again).
// --sweep times the fused forward+backward over a grid of chunk sizes at N = 4096 (how the
// default XentChunks were chosen).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "core/arena.hpp"
#include "core/threads.hpp"
#include "kernels/fused_xent.hpp"
#include "kernels/ops.hpp"

using namespace seqpar;

namespace {

constexpr int64_t kC = 512, kV = 32000;

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double sgemm_gflops(int n, int reps) {
  std::vector<float> a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (size_t i = 0; i < a.size(); ++i) a[i] = u(gen), b[i] = u(gen);
  double best = 1e30;
  for (int r = 0; r <= reps; ++r) {  // r = 0 is the warm-up
    const double t0 = now_s();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    if (r > 0) best = std::min(best, now_s() - t0);
  }
  return 2.0 * n * n * double(n) / best * 1e-9;
}

// kB from a "Name:   1234 kB" line of /proc/self/status; -1 if absent.
long status_kb(const char* name) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t n = std::strlen(name);
  while (std::getline(f, line))
    if (line.compare(0, n, name) == 0) return std::atol(line.c_str() + n + 1);
  return -1;
}
bool reset_hwm() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  return bool(f);
}

struct Inputs {
  int64_t N;
  Buffer x, w, dl;  // x (N, C), w (V, C), dlosses (N)
  std::vector<int32_t> tgt;
  Inputs(Arena& arena, int64_t n) : N(n), tgt(n) {
    x = Buffer(arena, Mem::acts, n * kC, "x");
    w = Buffer(arena, Mem::params, kV * kC, "w");
    dl = Buffer(arena, Mem::acts, n, "dlosses");
    std::mt19937 gen(7);
    std::normal_distribution<float> nd;
    // w ~ N(0, 0.05²): logits z ~ N(0, 512·0.05²) ≈ N(0, 1.1²), as after training starts.
    for (int64_t i = 0; i < n * kC; ++i) x.data()[i] = nd(gen);
    for (int64_t i = 0; i < kV * kC; ++i) w.data()[i] = 0.05f * nd(gen);
    for (int64_t i = 0; i < n; ++i) {
      tgt[i] = static_cast<int32_t>((i * 7919) % kV);
      dl.data()[i] = 1.0f / static_cast<float>(n);  // mean loss
    }
  }
};

struct Result {
  double fwd_s = 1e30, bwd_s = 1e30;
  double gemm_s = 1e30;  // materialised: the logits GEMM alone (part of fwd_s)
  size_t loss_bytes = 0;
  long rss_kb = -1;
  std::vector<float> losses, dx, dw;
};

template <class Fwd, class Zero, class Bwd>
void time_path(Result& r, int reps, Fwd&& fwd, Zero&& zero, Bwd&& bwd) {
  for (int k = 0; k < reps; ++k) {
    double t0 = now_s();
    fwd();
    r.fwd_s = std::min(r.fwd_s, now_s() - t0);
    zero();  // dx, dw accumulate: not part of either path's cost
    t0 = now_s();
    bwd();
    r.bwd_s = std::min(r.bwd_s, now_s() - t0);
  }
}

Result run_fused(const Inputs& in, const XentChunks& ch, int reps, bool keep) {
  Arena arena;
  const long rss0 = status_kb("VmRSS:");
  const bool hwm = reset_hwm();
  const int64_t N = in.N, sf = fused_xent_scratch_floats(ch, N, kV);
  Buffer scratch(arena, Mem::scratch, sf, "xent scratch"), losses(arena, Mem::acts, N, "losses"),
      lse(arena, Mem::acts, N, "lse"), dx(arena, Mem::grads, N * kC, "dx"),
      dw(arena, Mem::grads, kV * kC, "dw");
  Result r;
  r.loss_bytes = size_t(sf) * sizeof(float);
  time_path(
      r, reps,
      [&] {
        fused_xent_forward(losses.data(), lse.data(), in.x.data(), in.w.data(), in.tgt.data(), N,
                           kC, kV, ch, scratch.data());
      },
      [&] {
        std::memset(dx.data(), 0, N * kC * sizeof(float));
        std::memset(dw.data(), 0, kV * kC * sizeof(float));
      },
      [&] {
        fused_xent_backward(dx.data(), dw.data(), in.x.data(), in.w.data(), in.tgt.data(),
                            lse.data(), in.dl.data(), N, kC, kV, 0, ch, scratch.data());
      });
  if (hwm) r.rss_kb = status_kb("VmHWM:") - rss0;
  if (keep) {
    r.losses.assign(losses.data(), losses.data() + N);
    r.dx.assign(dx.data(), dx.data() + N * kC);
    r.dw.assign(dw.data(), dw.data() + kV * kC);
  }
  return r;
}

Result run_materialized(const Inputs& in, int reps, bool keep) {
  Arena arena;
  const long rss0 = status_kb("VmRSS:");
  const bool hwm = reset_hwm();
  const int64_t N = in.N;
  Buffer logits(arena, Mem::acts, N * kV, "logits"), dlogits(arena, Mem::acts, N * kV, "dlogits"),
      losses(arena, Mem::acts, N, "losses"), dx(arena, Mem::grads, N * kC, "dx"),
      dw(arena, Mem::grads, kV * kC, "dw");
  Result r;
  r.loss_bytes = 2 * size_t(N) * kV * sizeof(float);
  time_path(
      r, reps,
      [&] {
        const double t0 = now_s();
        linear_forward(logits.data(), in.x.data(), in.w.data(), nullptr, N, kC, kV);
        r.gemm_s = std::min(r.gemm_s, now_s() - t0);
        crossentropy_forward(losses.data(), logits.data(), in.tgt.data(), N, kV);
      },
      [&] {
        std::memset(dx.data(), 0, N * kC * sizeof(float));
        std::memset(dw.data(), 0, kV * kC * sizeof(float));
      },
      [&] {
        std::memset(dlogits.data(), 0, size_t(N) * kV * sizeof(float));
        crossentropy_backward(dlogits.data(), logits.data(), in.tgt.data(), in.dl.data(), N, kV);
        linear_backward(dx.data(), dw.data(), nullptr, dlogits.data(), in.x.data(), in.w.data(), N,
                        kC, kV);
      });
  if (hwm) r.rss_kb = status_kb("VmHWM:") - rss0;
  if (keep) {
    r.losses.assign(losses.data(), losses.data() + N);
    r.dx.assign(dx.data(), dx.data() + N * kC);
    r.dw.assign(dw.data(), dw.data() + kV * kC);
  }
  return r;
}

// Best times of `into` and `r`; memory and results of the first.
void merge_best(Result& into, Result&& r) {
  if (into.loss_bytes == 0) {
    into = std::move(r);
    return;
  }
  into.fwd_s = std::min(into.fwd_s, r.fwd_s);
  into.bwd_s = std::min(into.bwd_s, r.bwd_s);
  into.gemm_s = std::min(into.gemm_s, r.gemm_s);
  into.rss_kb = std::max(into.rss_kb, r.rss_kb);
}

// max|a − b| / max|b|
double nerr(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0.0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    num = std::max(num, std::fabs(double(a[i]) - b[i]));
    den = std::max(den, std::fabs(double(b[i])));
  }
  return num / den;
}

std::vector<int> parse_list(const char* s) {
  std::vector<int> v;
  for (const char* p = s; *p;) {
    v.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return v;
}

void sweep(int reps) {
  const int64_t N = 4096;
  Arena arena;
  const Inputs in(arena, N);
  std::printf("sweep: fused forward+backward ms at N=%lld C=%lld V=%lld (best of %d)\n\n",
              (long long)N, (long long)kC, (long long)kV, reps);
  const std::vector<int64_t> tcs{256, 512, 1024, 2048, 4096}, vcs{1024, 2048, 4096, 8192};
  std::printf("| tokens \\ vocab |");
  for (int64_t vc : vcs) std::printf(" %lld |", (long long)vc);
  std::printf("\n|---|");
  for (size_t i = 0; i < vcs.size(); ++i) std::printf("---|");
  std::printf("\n");
  // Repetitions go round the whole grid, so a burst of outside load does not favour or
  // penalise one configuration; each keeps its best time.
  std::vector<double> best(tcs.size() * vcs.size(), 1e30);
  for (int k = 0; k < reps; ++k)
    for (size_t a = 0; a < tcs.size(); ++a)
      for (size_t b = 0; b < vcs.size(); ++b) {
        const Result r = run_fused(in, XentChunks{tcs[a], vcs[b]}, 1, false);
        double& t = best[a * vcs.size() + b];
        t = std::min(t, r.fwd_s + r.bwd_s);
      }
  for (size_t a = 0; a < tcs.size(); ++a) {
    std::printf("| %lld |", (long long)tcs[a]);
    for (size_t b = 0; b < vcs.size(); ++b) std::printf(" %.0f |", best[a * vcs.size() + b] * 1e3);
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0, reps = 2;
  bool do_sweep = false, quick = false;
  std::vector<int> Ls{8192, 32768};
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--threads") && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (!std::strcmp(argv[i], "--L") && i + 1 < argc) {
      Ls = parse_list(argv[++i]);
    } else if (!std::strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (!std::strcmp(argv[i], "--sweep")) {
      do_sweep = true;
    } else if (!std::strcmp(argv[i], "--quick")) {
      quick = true;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--threads N] [--L 8192,32768] [--reps R] [--sweep] [--quick]\n",
                   argv[0]);
      return 2;
    }
  }
  set_num_threads(threads);
  if (quick) Ls = {1024}, reps = 1;
  // Best of 10 square products, here and again after the table (see the last line): on a
  // shared machine a single burst of outside load would otherwise set the reference.
  double gemm = sgemm_gflops(2048, 10);
  std::printf("threads=%d  B=1 C=%lld V=%lld  cblas_sgemm 2048^3: %.1f GFLOP/s\n\n", num_threads(),
              (long long)kC, (long long)kV, gemm);
  if (do_sweep) {
    sweep(reps);
    return 0;
  }
  std::printf(
      "| L | path | fwd ms | bwd ms | fwd+bwd ms | GFLOP/s (6NCV) | vs sgemm | time vs mat. | "
      "loss memory bytes | RSS added MiB |\n"
      "|---|---|---|---|---|---|---|---|---|---|\n");
  for (int L : Ls) {
    Arena arena;
    const Inputs in(arena, L);
    // The two paths alternate, one repetition each, so that load from other processes on
    // a shared machine hits both alike; each keeps its best time.
    Result f, m;
    for (int k = 0; k < reps; ++k) {
      merge_best(f, run_fused(in, XentChunks{}, 1, k == 0));
      merge_best(m, run_materialized(in, 1, k == 0));
    }
    const double flops = 6.0 * L * double(kC) * kV;
    for (const Result* r : {&m, &f}) {
      const double t = r->fwd_s + r->bwd_s;
      std::printf("| %d | %s | %.0f | %.0f | %.0f | %.1f | %.2f | %.2f | %zu | %.0f |\n", L,
                  r == &m ? "materialised" : "fused", r->fwd_s * 1e3, r->bwd_s * 1e3, t * 1e3,
                  flops / t * 1e-9, flops / t * 1e-9 / gemm, t / (m.fwd_s + m.bwd_s), r->loss_bytes,
                  r->rss_kb / 1024.0);
    }
    std::printf(
        "|  | (logits GEMM %d×%lld×%lld: %.0f ms, %.1f GFLOP/s; fused keeps lse: %zu bytes; memory "
        "ratio %.0f×; fused vs materialised max rel diff: losses %.1e, dx %.1e, dw %.1e) |\n",
        L, (long long)kV, (long long)kC, m.gemm_s * 1e3, flops / 3 / m.gemm_s * 1e-9,
        size_t(L) * sizeof(float), double(m.loss_bytes) / f.loss_bytes, nerr(f.losses, m.losses),
        nerr(f.dx, m.dx), nerr(f.dw, m.dw));
    std::fflush(stdout);
  }
  gemm = std::max(gemm, sgemm_gflops(2048, 10));
  std::printf("\ncblas_sgemm 2048^3 after the table: best %.1f GFLOP/s over both measurements\n",
              gemm);
  return 0;
}
