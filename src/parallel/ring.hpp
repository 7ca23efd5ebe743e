// Ring attention core, reusable over any communicator: the `ring` strategy runs it on the
// whole sequence-parallel group, `usp` inside each ring group on the H/u heads its Ulysses
// all-to-all left on the rank. Algorithm, math and byte counts: docs/strategies/ring.md.
//
// The N ranks of `comm` each hold Tq query rows and one block of key/value rows, the
// same tokens (self-attention); blocks may differ in length (L not divisible by N), so
// buffers are sized for the longest and every message for its own block. Step k = 0..N−1: rank r
// attends its queries to the K/V block of rank src = (r − k) mod N while the block for step k+1 is
// in flight (r sends to r+1, receives from r−1; double buffer). Partial (O, LSE) merge by the
// log-sum-exp rule in the kernel (accumulate = true):
//   lse = max(a, b) + log1p(exp(min(a, b) − max(a, b))),  O = O_a·e^{a−lse} + O_b·e^{b−lse}.
// Backward: Δ = rowsum(dO∘O) locally, K/V circulate again; each rank adds its queries'
// contribution to the visiting block's dK, dV into an accumulator that follows the block
// one hop behind it and arrives at the block's owner after the last step.
//
// Skipped hops (causal masks, document masks, sliding windows). Rank r needs block src
// when some query of r sees some key of src: need(r, src), decided exactly from the key
// positions of every ring rank and the mask (every rank computes the same table). Block
// src travels r = src, src+1, … only as far as its last user, last(src) = the largest k
// with need(src + k, src); the ring runs max_src last(src) + 1 steps. A rank computes a
// visiting block only when it needs it. In backward the dK|dV accumulator of block src
// follows it to rank src + last(src), which sends it straight home to src.
// Bytes this rank sends, S = B·Tk·2·Hkv·d·e (one packed K|V block, e = 4 bytes, or 2 when
// the blocks travel as bf16) and A = B·Tk·2·Hkv·d·4 (a dK|dV accumulator, always fp32):
//   forward   S · #{k ∈ [0, steps−2] : last(r − k) ≥ k + 1}            (K|V onward)
//   backward  forward + A · #{k ∈ [1, N−1] : last(r − k) ≥ k}          (accumulators)
// Without any mask every block is needed everywhere: (N−1)·S and 2·(N−1)·S. Under a
// causal mask with the contiguous layout block src is needed by ranks src..N−1 only, so
// rank r sends (N−1−r)·S forward; zigzag needs every block on every rank.
#pragma once
#include <cstdint>
#include <vector>

#include "core/arena.hpp"
#include "kernels/attention.hpp"
#include "parallel/mask.hpp"

namespace seqpar {

class Comm;

// Which blocks each ring rank needs, and how far each block travels (see above).
struct RingSchedule {
  int N = 1;
  int steps = 1;           // max_src last(src) + 1
  std::vector<int> last;   // (N)
  std::vector<char> need;  // (N·N) need[r·N + src]
  bool needs(int r, int src) const { return need[size_t(r) * N + src] != 0; }
  // Block src leaves rank src + k for rank src + k + 1 after step k.
  bool moves(int src, int k) const { return last[src] >= k + 1; }
};
// kv_pos[j]: the key (= query) positions of ring rank j, identical on every rank.
RingSchedule ring_schedule(const SeqMask* mask, bool causal, int B,
                           const std::vector<std::vector<int64_t>>& kv_pos);
// Bytes rank r sends in one forward / backward call under a schedule; block[j] = bytes of
// ring rank j's packed K|V block (blocks differ when L does not divide evenly).
uint64_t ring_bytes_forward(const RingSchedule& sc, int r, const std::vector<uint64_t>& block);
// acc[j]: bytes of block j's dK|dV accumulator (empty: the same as block, fp32 blocks).
uint64_t ring_bytes_backward(const RingSchedule& sc, int r, const std::vector<uint64_t>& block,
                             const std::vector<uint64_t>& acc = {});

// Buffers of the ring core for one shape, all taken from the arena at construction (no
// allocation inside forward/backward).
struct RingWorkspace {
  // kv = bf16: the K|V blocks are packed and travel as bf16 (the kernel reads them as
  // k16 / v16), half the bytes and half the kv buffers; accumulators stay fp32.
  RingWorkspace(Arena& arena, int B, int Tq, int Tk, int H, int Hkv, int d,
                Precision kv = Precision::fp32);
  int B, Tq, Tk, H, Hkv, d;
  bool kv_bf16 = false;
  Buffer kv[2];    // (B, Tk, 2·Hkv·d) Mem::comm: travelling K|V block, double buffer (fp32
                   //   or bf16: then the buffer's floats hold two elements each)
  Buffer dkv[3];   // (B, Tk, 2·Hkv·d) Mem::comm: dK|dV accumulators: 2 alternate as the
                   //   block being computed / the one in flight, 1 receives
  Buffer home;     // (B, Tk, 2·Hkv·d) Mem::comm: our own block's accumulator coming home
  Buffer lse_p;    // (B·H·Tq) Mem::scratch: LSE regrouped by backward query piece
  Buffer delta_p;  // (B·H·Tq) Mem::scratch: Δ, same grouping
  Buffer scratch;  // attention_scratch_floats(d, num_threads()) Mem::scratch: kernel tiles
  // Measurement only (bench/bench_ring_overlap.cpp): run the same schedule of kernel
  // calls with the same positions but move nothing (every step reuses the local block,
  // so results are wrong). Never set in training.
  bool skip_comm = false;
  // Per call: the visible key range of each query row, and the schedule of the last mask
  // seen (recomputed only when the mask, causality or positions change).
  MaskBounds bounds;
  RingSchedule schedule;
  uint64_t schedule_key = 0;
};

// Floats of Mem::comm a RingWorkspace holds: 6·B·Tk·2·Hkv·d (fp32 blocks), 5·B·Tk·2·Hkv·d
// (bf16 blocks).
int64_t ring_comm_floats(int B, int Tk, int Hkv, int d, Precision kv = Precision::fp32);

// Forward. p describes this rank: q (B, Tq, H, d), k, v (B, Tk, Hkv, d) — its own block —
// with their strides, o (B, Tq, H, d) and lse (B, H, Tq), both overwritten, q_pos (Tq),
// B, Tq, Tk, H, Hkv, d, causal, scale, dropout (p, seed, step, layer, head_offset).
// Ignored: p.k_pos (the key positions of the block owned by ring rank j are kv_pos[j],
// kv_pos.size() = N = comm size) and p.scratch (ws.scratch is used).
// comm may be null when N = 1. Collective over comm.
// mask (may be null): document masks and window of the whole batch; the query rows' key
// ranges are built from it (p.key_lo / key_hi are ignored), hops and blocks skipped.
void ring_attention_forward(Comm* comm, const AttnParams& p,
                            const std::vector<std::vector<int64_t>>& kv_pos, RingWorkspace& ws,
                            const SeqMask* mask = nullptr);

// Backward. p as for forward plus p.o, p.lse (the final forward outputs), p.dout
// (B, Tq, H, d, strides o_stride / o_bstride), and dq (B, Tq, H, d), dk, dv (B, Tk, Hkv, d)
// with their strides: all three ACCUMULATE (+=). p.delta is ignored (Δ is computed into
// ws). Collective over comm.
void ring_attention_backward(Comm* comm, const AttnBwdParams& p,
                             const std::vector<std::vector<int64_t>>& kv_pos, RingWorkspace& ws,
                             const SeqMask* mask = nullptr);

}  // namespace seqpar
