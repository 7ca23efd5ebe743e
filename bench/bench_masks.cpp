// Document masks, sliding windows, load balance and the all-gather strategy (issue 9).
//
//   bench_masks docs     [L=16384] [H=4] [d=64] [iters=3]      (one rank)
//       Attention fwd+bwd (`local`) on KJV chapters packed into L tokens (document ids of
//       data/kjv-bpe8k.tok from its first token), against the same shape causal and
//       unmasked. live = (query 64-row tile, key 128-column tile) pairs with at least one
//       visible element; frac = live(masked) / live(causal). The target is
//       t(masked) <= 1.25 · frac · t(causal).
//   mpiexec -n N bench_masks window [w=1024] [H=4] [d=64] [iters=3] [L...]
//       `ring`, contiguous layout, causal sliding window w: fwd+bwd time and bytes per rank
//       for each L (default 8192 16384 32768 65536). Linear in L means t/L flat.
//   bench_masks balance  [L=16384] [H=4] [d=64] [samples=8]     (one rank)
//       Work per rank of packed KJV under contiguous and zigzag at N = 2, 4, 8: live tile
//       pairs of its queries against all keys (max over ranks / mean), averaged over
//       `samples` windows of the token file; and, on the window the contiguous layout
//       balances worst, the kernel fwd+bwd time of each rank's queries against the whole
//       sequence (best of 3, one rank after another on this process, so ranks do not compete
//       for cores).
//   mpiexec -n N bench_masks strategies [L=8192] [H=8] [d=64] [iters=3]
//       allgather vs ring vs ulysses, causal zigzag, MHA (Hkv = H) and GQA (Hkv = H/4):
//       fwd+bwd time (best of iters) and bytes this rank sends (comm/ counters).
// Times are the best of `iters` (the figure least disturbed on a shared machine).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "core/threads.hpp"
#include "data/token_file.hpp"
#include "parallel/attention.hpp"
#include "parallel/layout.hpp"
#include "parallel/mask.hpp"

using namespace seqpar;

namespace {

constexpr int kTq = 64, kTk = 128;  // the kernel's tiles

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string token_file() {
  const char* dir = std::getenv("SEQPAR_DATA_DIR");
  return std::string(dir ? dir : SEQPAR_SOURCE_DIR "/data") + "/kjv-bpe8k.tok";
}

// Packed KJV: the document structure of L tokens of the token file from `offset`.
SeqMask kjv_mask(const TokenFile& f, uint64_t offset, int64_t L, int64_t window) {
  std::vector<int64_t> ids(L);
  f.doc_ids(offset, size_t(L), ids.data());
  return mask_from_doc_ids(ids.data(), 1, L, window);
}

// Live (query tile, key tile) pairs of queries qpos against keys kpos (both in the order
// the kernel sees them: tiles of consecutive entries).
int64_t live_tiles(const SeqMask* m, bool causal, const std::vector<int64_t>& qpos,
                   const std::vector<int64_t>& kpos) {
  int64_t n = 0;
  for (size_t i0 = 0; i0 < qpos.size(); i0 += kTq)
    for (size_t j0 = 0; j0 < kpos.size(); j0 += kTk) {
      std::vector<int64_t> ks(kpos.begin() + j0, kpos.begin() + std::min(kpos.size(), j0 + kTk));
      std::sort(ks.begin(), ks.end());
      const int nq = int(std::min<size_t>(kTq, qpos.size() - i0));
      n += any_key_visible(m, causal, 1, qpos.data() + i0, nq, ks.data(), int64_t(ks.size()));
    }
  return n;
}

struct Problem {
  int B, T, H, Hkv, d;
  std::vector<float> qkv, o, lse, dout, dqkv;
  Problem(int B_, int T_, int H_, int Hkv_, int d_, uint32_t seed)
      : B(B_), T(T_), H(H_), Hkv(Hkv_), d(d_) {
    const size_t W = size_t(H + 2 * Hkv) * d;
    qkv.resize(size_t(B) * T * W);
    dout.resize(size_t(B) * T * H * d);
    std::mt19937 gen(seed);
    std::normal_distribution<float> nd;
    for (float& x : qkv) x = nd(gen);
    for (float& x : dout) x = nd(gen);
    o.resize(dout.size());
    lse.resize(size_t(B) * H * T);
    dqkv.assign(qkv.size(), 0.0f);
  }
};

// Best-of-iters fwd+bwd time of one strategy on shard s (barriers around each).
double time_fwd_bwd(AttentionStrategy& st, const AttnShard& s, Problem& pr, Comm* comm, int iters) {
  double best = 1e30;
  for (int i = 0; i <= iters; ++i) {  // i = 0 warms up
    if (comm) comm->barrier();
    const double t0 = now();
    st.forward(s, pr.o.data(), pr.lse.data());
    st.backward(s, pr.o.data(), pr.lse.data(), pr.dout.data(), pr.dqkv.data());
    if (comm) comm->barrier();
    if (i > 0) best = std::min(best, now() - t0);
  }
  return best;
}

int arg_i(int argc, char** argv, int k, int def) { return argc > k ? std::atoi(argv[k]) : def; }

void bench_docs(int argc, char** argv) {
  const int64_t L = arg_i(argc, argv, 2, 16384);
  const int H = arg_i(argc, argv, 3, 4), d = arg_i(argc, argv, 4, 64);
  const int iters = arg_i(argc, argv, 5, 3);
  TokenFile f(token_file());
  const SeqMask m = kjv_mask(f, 0, L, 0);
  std::vector<int64_t> pos(L);
  for (int64_t i = 0; i < L; ++i) pos[i] = i;
  const int64_t live_m = live_tiles(&m, true, pos, pos),
                live_c = live_tiles(nullptr, true, pos, pos);
  const double frac = double(live_m) / double(live_c);
  Problem pr(1, int(L), H, H, d, 7);
  Arena arena;
  auto st = make_attention("local", arena, SpSetup{}, 1, int(L), H, H, d);
  AttnShard s{pr.qkv.data(), pos.data(), 1, int(L), H, H, d, L, true};
  const double t_c = time_fwd_bwd(*st, s, pr, nullptr, iters);
  s.mask = &m;
  const double t_m = time_fwd_bwd(*st, s, pr, nullptr, iters);
  std::printf(
      "docs: local fwd+bwd, KJV chapters packed into L=%lld (%zu documents), H=%d d=%d, "
      "%d threads, best of %d\n",
      (long long)L, m.doc_starts[0].size(), H, d, num_threads(), iters);
  std::printf("  %-22s %10s %12s\n", "", "time ms", "live tiles");
  std::printf("  %-22s %10.1f %12lld\n", "causal, unmasked", t_c * 1e3, (long long)live_c);
  std::printf("  %-22s %10.1f %12lld\n", "causal + documents", t_m * 1e3, (long long)live_m);
  std::printf("  frac = %.4f; t(masked) / (frac * t(causal)) = %.3f (target <= 1.25)\n", frac,
              t_m / (frac * t_c));
}

void bench_window(int argc, char** argv, Comm& world) {
  const int N = world.size(), r = world.rank();
  const int64_t w = arg_i(argc, argv, 2, 1024);
  const int H = arg_i(argc, argv, 3, 4), d = arg_i(argc, argv, 4, 64);
  const int iters = arg_i(argc, argv, 5, 3);
  std::vector<int64_t> lens;
  for (int k = 6; k < argc; ++k) lens.push_back(std::atoll(argv[k]));
  if (lens.empty()) lens = {8192, 16384, 32768, 65536};
  if (r == 0)
    std::printf(
        "window: ring, N=%d contiguous, causal window w=%lld, H=%d d=%d, best of %d\n"
        "  %8s %10s %12s %14s\n",
        N, (long long)w, H, d, iters, "L", "time ms", "us per token", "MB sent r0");
  for (int64_t L : lens) {
    const std::vector<int64_t> pos = shard_positions(L, N, r, ShardLayout::contiguous);
    const int T = int(pos.size());
    std::vector<int64_t> ids(L, 0);
    const SeqMask m = mask_from_doc_ids(ids.data(), 1, L, w);
    Problem pr(1, T, H, H, d, 11 + r);
    Arena arena;
    SpSetup sp{&world, ShardLayout::contiguous, L};
    auto st = make_attention("ring", arena, sp, 1, T, H, H, d);
    AttnShard s{pr.qkv.data(), pos.data(), 1, T, H, H, d, L, true};
    s.mask = &m;
    const double t = time_fwd_bwd(*st, s, pr, &world, iters);
    const double mb = double(st->bytes_forward(s) + st->bytes_backward(s)) / 1e6;
    if (r == 0)
      std::printf("  %8lld %10.1f %12.3f %14.2f\n", (long long)L, t * 1e3, t * 1e6 / L, mb);
  }
}

std::vector<ShardLayout> all_layouts() {
  return {ShardLayout::contiguous, ShardLayout::zigzag, ShardLayout::striped};
}

void bench_balance(int argc, char** argv) {
  const int64_t L = arg_i(argc, argv, 2, 16384);
  const int H = arg_i(argc, argv, 3, 4), d = arg_i(argc, argv, 4, 64);
  const int samples = arg_i(argc, argv, 5, 8);
  TokenFile f(token_file());
  std::vector<SeqMask> masks;
  const uint64_t span = f.num_tokens() - uint64_t(L);
  for (int k = 0; k < samples; ++k) masks.push_back(kjv_mask(f, span * k / samples, L, 0));
  std::printf(
      "balance: packed KJV, L=%lld, causal, %d windows; work = live 64x128 tile pairs of a "
      "rank's queries against all keys\n",
      (long long)L, samples);
  std::printf("  %2s %-11s %14s %14s   %s\n", "N", "layout", "max/mean (avg)", "max/mean (worst)",
              "kernel fwd+bwd ms per rank on the window contiguous balances worst (its max/mean "
              "in tiles and in time)");
  std::vector<int64_t> all(L);
  for (int64_t i = 0; i < L; ++i) all[i] = i;
  Problem full(1, int(L), H, H, d, 3);  // Q, K, V of the whole sequence (one window)
  for (int N : {2, 4, 8}) {
    // The window the contiguous layout balances worst: the per-rank times are measured on it.
    size_t wk = 0;
    double wk_imb = 0;
    for (size_t k = 0; k < masks.size(); ++k) {
      std::vector<double> work;
      for (int r = 0; r < N; ++r) {
        const auto pos = shard_positions(L, N, r, ShardLayout::contiguous);
        int64_t n = 0;
        for (int j = 0; j < N; ++j)
          n += live_tiles(&masks[k], true, pos, shard_positions(L, N, j, ShardLayout::contiguous));
        work.push_back(double(n));
      }
      double mean = 0;
      for (double x : work) mean += x / N;
      const double imb = *std::max_element(work.begin(), work.end()) / mean;
      if (imb > wk_imb) wk_imb = imb, wk = k;
    }
    for (ShardLayout lay : all_layouts()) {
      double sum = 0, worst = 0;
      for (const SeqMask& m : masks) {
        std::vector<double> work;
        for (int r = 0; r < N; ++r) {
          const auto pos = shard_positions(L, N, r, lay);
          int64_t n = 0;
          for (int j = 0; j < N; ++j) n += live_tiles(&m, true, pos, shard_positions(L, N, j, lay));
          work.push_back(double(n));
        }
        double mean = 0;
        for (double x : work) mean += x / N;
        const double imb = *std::max_element(work.begin(), work.end()) / mean;
        sum += imb / masks.size();
        worst = std::max(worst, imb);
      }
      // Kernel time (fwd+bwd, best of 3 after a warm-up) of each rank's queries against the
      // whole sequence, window 0; and that window's imbalance in tiles and in time.
      std::vector<double> ms, tiles0;
      for (int r = 0; r < N; ++r) {
        const auto pos = shard_positions(L, N, r, lay);
        int64_t n0 = 0;
        for (int j = 0; j < N; ++j)
          n0 += live_tiles(&masks[wk], true, pos, shard_positions(L, N, j, lay));
        tiles0.push_back(double(n0));
        const int T = int(pos.size()), W = 3 * H * d;
        Problem q(1, T, H, H, d, 5);
        for (int t = 0; t < T; ++t)  // this rank's query rows, gathered from the sequence
          std::copy_n(&full.qkv[size_t(pos[t]) * W], H * d, &q.qkv[size_t(t) * W]);
        std::vector<float> scratch(attention_scratch_floats(d, 0)), delta(size_t(H) * T);
        std::vector<float> dk(size_t(L) * H * d * 2, 0.0f);
        AttnBwdParams p;
        p.q = q.qkv.data(), p.q_stride = W, p.q_bstride = int64_t(T) * W;
        p.k = full.qkv.data() + H * d, p.v = full.qkv.data() + 2 * H * d;
        p.kv_stride = W, p.kv_bstride = L * W;
        p.o = q.o.data(), p.lse = q.lse.data(), p.o_stride = H * d,
        p.o_bstride = int64_t(T) * H * d;
        p.q_pos = pos.data(), p.k_pos = all.data();
        p.B = 1, p.Tq = T, p.Tk = int(L), p.H = H, p.Hkv = H, p.d = d, p.causal = true;
        p.scratch = scratch.data(), p.scratch_floats = int64_t(scratch.size());
        MaskBounds mb;
        mb.build(&masks[wk], pos.data(), 1, T, true);
        mb.apply(p);
        p.dout = q.dout.data(), p.delta = delta.data();
        p.dq = q.dqkv.data(), p.dq_stride = W, p.dq_bstride = int64_t(T) * W;
        p.dk = dk.data(), p.dv = dk.data() + H * d, p.dkv_stride = 2 * H * d,
        p.dkv_bstride = L * 2 * H * d;
        double best = 1e30;
        for (int it = 0; it < 4; ++it) {  // it = 0 warms up
          const double t0 = now();
          attention_forward(p);
          attention_delta(delta.data(), q.dout.data(), p);
          attention_backward(p);
          if (it > 0) best = std::min(best, now() - t0);
        }
        ms.push_back(best * 1e3);
      }
      auto imbalance = [](const std::vector<double>& v) {
        double mean = 0;
        for (double x : v) mean += x / v.size();
        return *std::max_element(v.begin(), v.end()) / mean;
      };
      std::string times;
      for (double x : ms) {  // not `(sep) + to_string(..)`: GCC 12 warns falsely (-Wrestrict)
        if (!times.empty()) times += ' ';
        times += std::to_string(int(x + 0.5));
      }
      double tsum = 0;
      for (double x : tiles0) tsum += x;
      times += "  (window " + std::to_string(wk) + ": " + std::to_string(int64_t(tsum)) +
               " tiles, max/mean " + std::to_string(imbalance(tiles0)).substr(0, 5) +
               "; slowest rank " +
               std::to_string(int(*std::max_element(ms.begin(), ms.end()) + 0.5)) +
               " ms, max/mean " + std::to_string(imbalance(ms)).substr(0, 5) + ")";
      std::printf("  %2d %-11s %14.3f %14.3f   %s\n", N, layout_name(lay), sum, worst,
                  times.c_str());
    }
  }
}

void bench_strategies(int argc, char** argv, Comm& world) {
  const int N = world.size(), r = world.rank();
  const int64_t L = arg_i(argc, argv, 2, 8192);
  const int H = arg_i(argc, argv, 3, 8), d = arg_i(argc, argv, 4, 64);
  const int iters = arg_i(argc, argv, 5, 3);
  if (r == 0)
    std::printf(
        "strategies: N=%d, L=%lld, H=%d d=%d, causal zigzag, best of %d\n"
        "  %-10s %4s %10s %14s\n",
        N, (long long)L, H, d, iters, "strategy", "Hkv", "time ms", "MB sent r0");
  for (int Hkv : {H, std::max(1, H / 4)})
    for (const char* name : {"allgather", "ring", "ulysses"}) {
      const auto pos = shard_positions(L, N, r, ShardLayout::zigzag);
      const int T = int(pos.size());
      Problem pr(1, T, H, Hkv, d, 17 + r);
      Arena arena;
      SpSetup sp{&world, ShardLayout::zigzag, L};
      auto st = make_attention(name, arena, sp, 1, T, H, Hkv, d);
      AttnShard s{pr.qkv.data(), pos.data(), 1, T, H, Hkv, d, L, true};
      const double t = time_fwd_bwd(*st, s, pr, &world, iters);
      world.stats().reset();
      st->forward(s, pr.o.data(), pr.lse.data());
      st->backward(s, pr.o.data(), pr.lse.data(), pr.dout.data(), pr.dqkv.data());
      const double mb = world.stats().total_bytes_sent() / 1e6;
      if (r == 0) std::printf("  %-10s %4d %10.1f %14.2f\n", name, Hkv, t * 1e3, mb);
    }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    // One-rank modes run without MPI: a singleton MPI process is bound to one core.
    if (mode == "docs") {
      bench_docs(argc, argv);
    } else if (mode == "balance") {
      bench_balance(argc, argv);
    } else if (mode == "window" || mode == "strategies") {
      MpiSession mpi(&argc, &argv);
      Comm world = Comm::world();
      if (mode == "window")
        bench_window(argc, argv, world);
      else
        bench_strategies(argc, argv, world);
    } else {
      std::fprintf(stderr,
                   "usage: bench_masks docs|window|balance|strategies [args] "
                   "(see the comment at the top of bench/bench_masks.cpp)\n");
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_masks: %s\n", e.what());
    return 1;
  }
  return 0;
}
