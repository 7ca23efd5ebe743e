// How much of the ring's communication the computation hides.
//
//   mpiexec -n 2 bench_ring_overlap [L] [H] [d] [iters] [causal]
//
// Times one ring attention forward + backward (best of `iters`, the figure least disturbed
// by other processes on a shared machine; the median is printed too) three ways, with the
// same kernel calls and positions each time:
//   ring      the real schedule: K|V (and dK|dV) blocks move while blocks compute;
//   no-comm   RingWorkspace::skip_comm: identical compute, nothing moves;
//   comm-only the same point-to-point volume alone (sendrecv of one K|V block, 3·(N−1)
//             times: (N−1) forward + 2·(N−1) backward hops), no compute.
// exposed = ring − no-comm is the communication time the overlap failed to hide;
// hidden  = 1 − exposed / comm-only.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "parallel/layout.hpp"
#include "parallel/ring.hpp"

using namespace seqpar;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double best(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

}  // namespace

int main(int argc, char** argv) {
  MpiSession mpi(&argc, &argv);
  Comm world = Comm::world();
  const int N = world.size(), r = world.rank();
  const int64_t L = argc > 1 ? std::atoll(argv[1]) : 4096;
  const int H = argc > 2 ? std::atoi(argv[2]) : 8;
  const int d = argc > 3 ? std::atoi(argv[3]) : 64;
  const int iters = argc > 4 ? std::atoi(argv[4]) : 5;
  const bool causal = argc > 5 ? std::atoi(argv[5]) != 0 : false;
  const int B = 1, Hkv = H;
  const ShardLayout layout = causal ? ShardLayout::zigzag : ShardLayout::contiguous;

  std::vector<std::vector<int64_t>> kv_pos;
  for (int j = 0; j < N; ++j) kv_pos.push_back(shard_positions(L, N, j, layout));
  const int T = static_cast<int>(kv_pos[r].size());
  const int W = (H + 2 * Hkv) * d;

  std::mt19937 gen(42 + r);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> qkv(size_t(B) * T * W), dout(size_t(B) * T * H * d);
  for (auto& x : qkv) x = nd(gen);
  for (auto& x : dout) x = nd(gen);
  std::vector<float> o(dout.size()), lse(size_t(B) * H * T), dqkv(qkv.size());

  Arena arena;
  RingWorkspace ws(arena, B, T, T, H, Hkv, d);
  AttnBwdParams p;
  p.q = qkv.data();
  p.k = qkv.data() + H * d;
  p.v = qkv.data() + (H + Hkv) * d;
  p.o = o.data();
  p.lse = lse.data();
  p.q_stride = p.kv_stride = W;
  p.q_bstride = p.kv_bstride = int64_t(W) * T;
  p.o_stride = H * d;
  p.o_bstride = int64_t(H) * d * T;
  p.q_pos = kv_pos[r].data();
  p.B = B, p.Tq = T, p.Tk = T, p.H = H, p.Hkv = Hkv, p.d = d;
  p.causal = causal;
  p.dout = dout.data();
  p.dq = dqkv.data();
  p.dk = dqkv.data() + H * d;
  p.dv = dqkv.data() + (H + Hkv) * d;
  p.dq_stride = p.dkv_stride = W;
  p.dq_bstride = p.dkv_bstride = int64_t(W) * T;

  auto step = [&](bool skip) {
    ws.skip_comm = skip;
    world.barrier();
    const double t0 = now();
    ring_attention_forward(&world, p, kv_pos, ws);
    ring_attention_backward(&world, p, kv_pos, ws);
    world.barrier();
    return now() - t0;
  };
  const size_t blk = size_t(B) * T * 2 * Hkv * d;
  std::vector<float> send(blk, 1.0f), recv(blk);
  auto comm_only = [&] {
    world.barrier();
    const double t0 = now();
    for (int i = 0; i < 3 * (N - 1); ++i)
      world.sendrecv(send.data(), blk, (r + 1) % N, recv.data(), blk, (r + N - 1) % N, 11);
    world.barrier();
    return now() - t0;
  };

  step(false);  // warm-up
  std::vector<double> t_ring, t_none, t_comm;
  for (int i = 0; i < iters; ++i) {
    t_ring.push_back(step(false));
    t_none.push_back(step(true));
    t_comm.push_back(comm_only());
  }
  if (r == 0) {
    std::printf("ring fwd+bwd  N=%d L=%lld T=%d H=%d d=%d %s, %d iters\n", N,
                static_cast<long long>(L), T, H, d, causal ? "causal zigzag" : "bidirectional",
                iters);
    std::printf("  K|V block %.2f MB, sent per fwd+bwd %.2f MB\n", blk * 4 / 1e6,
                3.0 * (N - 1) * blk * 4 / 1e6);
    std::printf("  %-10s %10s %10s\n", "ms", "best", "median");
    std::printf("  %-10s %10.2f %10.2f\n", "ring", best(t_ring) * 1e3, median(t_ring) * 1e3);
    std::printf("  %-10s %10.2f %10.2f\n", "no-comm", best(t_none) * 1e3, median(t_none) * 1e3);
    std::printf("  %-10s %10.2f %10.2f\n", "comm-only", best(t_comm) * 1e3, median(t_comm) * 1e3);
    const double a = best(t_ring), b = best(t_none), c = best(t_comm);
    std::printf("  exposed comm (best ring - best no-comm) %.2f ms; hidden %.0f%% of comm-only\n",
                (a - b) * 1e3, c > 0 ? 100.0 * (1.0 - std::clamp((a - b) / c, 0.0, 1.0)) : 100.0);
  }
  return 0;
}
