// Blocked online-softmax attention (FlashAttention-2 schedule on the CPU). See
// attention.hpp for the math; this file adds the work decomposition:
//
// forward : one work unit = (b, h, chunk of up to kChunk query blocks of Bq rows). The
//           unit walks the key blocks of Bk columns, keeping per query row a running max
//           m, sum l and an unnormalised d-vector acc:  S = Q_i K_jᵀ·scale,
//           m' = max(m, rowmax S),  acc = acc·e^{m−m'} + e^{S−m'} V_j,
//           l = l·e^{m−m'} + rowsum e^{S−m'};  at the end O = acc / l, LSE = m + log l.
//           Units write disjoint rows: no race.
// backward: one work unit = (b, kv head, key block j). The unit owns dK_j, dV_j (Bk×d
//           tiles accumulated over its steps), so dK/dV need no synchronisation. Its steps
//           are the (query block i, query head h of the GQA group) pairs, i descending
//           (outer), h ascending (inner), step index s = (nqb − 1 − i)·group + h − h0.
//           dQ_i = Σ_j scale·dS_ij K_j gets one Bq×d tile T_ij from every key block, i.e.
//           from units running on different threads. Float addition is not associative,
//           so for dQ to be bitwise reproducible the tiles must reach dq in an order fixed
//           by the problem, not by thread timing. The order is ascending j:
//             dq_i ← (((dq_i + T_i0) + T_i1) + …) + T_i,nkb−1,
//           which does not depend on the thread count either, so dQ (like O, LSE, dK, dV)
//           is bitwise identical across calls and across thread counts.
//  ordering: units are numbered u = (b·Hkv + kv head)·nkb + j and claimed from one counter
//           in increasing u. Each thread publishes a progress word u·(steps + 1) + (steps
//           of u passed); a step is passed after its tile is added (or at once, when the
//           tile is fully masked). Before adding T_ij at step s, unit u waits until every
//           lower unit of its group still running has passed s; a lower unit that no word
//           shows has finished (a claim publishes its word under the claim lock, so a
//           claimed unit is never invisible while it runs), and higher units are claimed
//           later and wait for u in turn. Hence the tiles of every (b, h, i) are added in
//           ascending j. Deadlock-free: a unit waits only for lower-numbered units, and the
//           lowest running unit never waits. Only the Bq·d adds are ordered: the tile's
//           sgemm runs before the wait, and a masked step needs no wait.
//  cost:    neighbouring key blocks of one group run side by side in lock step (which also
//           shares their Q_i, dO_i, dq_i rows in cache). Without masking, unit j trails
//           unit j − 1 by one step, once per unit. Under causal masking unit j has ~Bk/Bq
//           fewer live query blocks than j − 1, all at low i; visiting i descending puts
//           them at the end of j − 1's walk, where j does not wait for them, so j starts
//           at once and simply finishes earlier. State: one progress word per thread in
//           its scratch region, O(threads), independent of T.
// GEMM shapes. All products are cblas_sgemm on strided views of the (B, T, heads, d)
// tensors (lda = token stride), OpenBLAS held to one thread inside the OpenMP region.
// OpenBLAS 0.3.x runs NN and row-major TN products of this size in its small-matrix
// kernels, but sends row-major NT (S = Q Kᵀ) to its packing path, measured ~1.5× slower
// per flop at 64×128×64. So each unit transposes its key block once into a (d, Bk) tile
// Kᵀ_j (and Vᵀ_j in backward) and every score product is NN: S = Q_i·Kᵀ_j, dP = dO_i·Vᵀ_j.
// The transpose (Bk·d moves) is amortised over kChunk query blocks in forward and over
// all query blocks and heads of the group in backward.
#include "kernels/attention.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <limits>
#include <new>
#include <thread>
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "core/threads.hpp"

namespace seqpar {
namespace {

constexpr int kBq = 64;    // query rows per tile
constexpr int kBk = 128;   // key columns per tile (row stride of the score tiles)
constexpr int kChunk = 4;  // query blocks per forward unit, sharing one Kᵀ_j transpose
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }  // keep 64-byte alignment

// Per-thread scratch layout (floats; every region a multiple of 16 so it stays aligned).
struct Tiles {
  float* s;     // (Bq, Bk) scores S, then P (or P̃ with dropout)
  float* dp;    // (Bq, Bk) backward: dP = dO Vᵀ, then dS
  float* acc;   // (kChunk·Bq, d) forward: unnormalised O; backward: (Bq, d) dQ tile
  float* kt;    // (d, Bk)  Kᵀ_j
  float* vt;    // (d, Bk)  backward: Vᵀ_j
  float* dk;    // (Bk, d)  backward: dK_j accumulator (owned by the unit)
  float* dv;    // (Bk, d)  backward: dV_j accumulator
  float* m;     // (kChunk·Bq) forward: running row max
  float* l;     // (kChunk·Bq) forward: running row sum
  float* sync;  // (16) backward: this thread's progress word (std::atomic<int64_t>)
};

int64_t per_thread_floats(int d) {
  const int64_t tile = round16(int64_t{kBq} * kBk), kd = round16(int64_t{kBk} * d);
  return 2 * tile + round16(int64_t{kChunk} * kBq * d) + 4 * kd + 2 * round16(kChunk * kBq) + 16;
}

Tiles thread_tiles(float* scratch, int d, int thread) {
  const int64_t tile = round16(int64_t{kBq} * kBk), kd = round16(int64_t{kBk} * d);
  float* p = scratch + per_thread_floats(d) * thread;
  Tiles t;
  t.s = p, p += tile;
  t.dp = p, p += tile;
  t.acc = p, p += round16(int64_t{kChunk} * kBq * d);
  t.kt = p, p += kd;
  t.vt = p, p += kd;
  t.dk = p, p += kd;
  t.dv = p, p += kd;
  t.m = p, p += round16(kChunk * kBq);
  t.l = p, p += round16(kChunk * kBq);
  t.sync = p;  // 64-byte region of its own: no false sharing between progress words
  return t;
}

// e^x in fp32 without libm, written so that GCC vectorises loops calling it (no branches,
// no errno). e^x = 2^n · e^r with n = round(x·log2 e), r = x − n·ln2 ∈ [−ln2/2, ln2/2]
// (ln2 split in hi + lo so r is exact to ~1 ulp), e^r by its degree-7 Taylor polynomial
// (truncation |r|^8/8! < 1e-8). Max relative error ≈ 2e-7 on [−87, 88]. x is clamped to
// [−88, 88]; below −87.68 (−inf, the mask value, included) n = −127 gives exponent bits 0,
// so the result is exactly 0 (e^−87.68 ≈ 8e-39 is far below what a softmax row sum ≥ 1 can
// resolve). NaN propagates (through the polynomial; its n converts to INT_MIN, clamped).
// Every select is an if-convertible min/max: a `x < −87 ? 0 : (x != x ? x : y)` on the
// result, as this function had, made GCC leave the softmax and backward loops scalar
// ("control flow in loop"), the failure kernels/fast_exp.hpp describes.
inline float exp_approx(float x) {
  float xc = x < -88.0f ? -88.0f : x;
  xc = xc > 88.0f ? 88.0f : xc;
  // n = round(x·log2 e) by the 1.5·2^23 trick (exact without -ffast-math), the product
  // and the shift in one fma (one rounding: to the integer nearest the exact product). A
  // separate multiply after the clamp is what GCC 12 would not if-convert for AVX2.
  const float n = std::fma(xc, 1.44269504088896341f, 12582912.0f) - 12582912.0f;
  float r = std::fma(n, -0.693145751953125f, xc);  // ln2_hi: 16 significant bits
  r = std::fma(n, -1.428606765330187e-06f, r);     // ln2_lo
  float e = 1.0f / 5040.0f;
  e = std::fma(e, r, 1.0f / 720.0f);
  e = std::fma(e, r, 1.0f / 120.0f);
  e = std::fma(e, r, 1.0f / 24.0f);
  e = std::fma(e, r, 1.0f / 6.0f);
  e = std::fma(e, r, 0.5f);
  e = std::fma(e, r, 1.0f);
  e = std::fma(e, r, 1.0f);
  const int32_t biased = std::max(static_cast<int32_t>(n) + 127, 0);  // 0: the float 0
  return e * std::bit_cast<float>(biased << 23);
}

struct alignas(64) SpinLock {
  std::atomic<bool> busy{false};
  void lock() {
    while (busy.exchange(true, std::memory_order_acquire))
      while (busy.load(std::memory_order_relaxed)) {
      }
  }
  void unlock() { busy.store(false, std::memory_order_release); }
};

// Team-wide state of one attention_backward call (see the file comment).
struct BwdSchedule {
  SpinLock claim_lock;
  int64_t next = 0;    // next unit to claim (guarded by claim_lock)
  int64_t units = 0;   // B·Hkv·nkb
  int64_t stride = 0;  // steps per unit + 1
  int team = 0;        // threads in the team
  float* scratch = nullptr;
  int d = 0;
  std::atomic<int64_t>& word(int thread) const {
    return *std::launder(reinterpret_cast<std::atomic<int64_t>*>(thread_sync(thread)));
  }
  float* thread_sync(int thread) const;
};

float* BwdSchedule::thread_sync(int thread) const { return thread_tiles(scratch, d, thread).sync; }

// Claims the next unit and publishes "unit, 0 steps passed" in this thread's word before
// the next claim can happen, so a waiter never misses a running lower unit.
int64_t claim_unit(BwdSchedule& sc, std::atomic<int64_t>& mine) {
  sc.claim_lock.lock();
  const int64_t u = sc.next++;
  if (u < sc.units) mine.store(u * sc.stride, std::memory_order_release);
  sc.claim_lock.unlock();
  return u;
}

// Step ordering of one running unit against the lower units [first, unit) of its group.
struct StepOrder {
  const BwdSchedule* sc;
  std::atomic<int64_t>* mine;
  int64_t unit, first;
  bool lower_done = false;  // no lower unit of the group is running any more
  // True when no running unit w ∈ [first, unit) is still at a step ≤ s. A claimed unit
  // that no word shows has finished; units claimed later are > unit and do not count.
  bool ready(int64_t s) {
    bool any = false;
    for (int t = 0; t < sc->team; ++t) {
      const int64_t v = sc->word(t).load(std::memory_order_acquire);
      if (v < 0) continue;
      const int64_t w = v / sc->stride;
      if (w < first || w >= unit) continue;
      if (v - w * sc->stride <= s) return false;
      any = true;
    }
    lower_done = !any;
    return true;
  }
  // Called before this unit adds its dQ tile of step s.
  void wait(int64_t s) {
    if (unit == first || lower_done) return;
    for (int spins = 0; !ready(s); ++spins)
      if (spins >= 64) std::this_thread::yield();  // a lower unit may be descheduled
  }
  // Called after step s (added or skipped).
  void passed(int64_t s) { mine->store(unit * sc->stride + s + 1, std::memory_order_release); }
};

// dst (cols, ldd) = src (rows, lds)ᵀ over a rows×cols block, in 16×16 sub-blocks so
// both sides stay within a few cache lines.
// A bf16 source is widened on the way (exact).
template <class KV>
void transpose(float* dst, int64_t ldd, const KV* src, int64_t lds, int rows, int cols) {
  for (int r0 = 0; r0 < rows; r0 += 16)
    for (int c0 = 0; c0 < cols; c0 += 16) {
      const int r1 = std::min(rows, r0 + 16), c1 = std::min(cols, c0 + 16);
      for (int c = c0; c < c1; ++c)
        for (int r = r0; r < r1; ++r) dst[c * ldd + r] = load(src[r * lds + c]);
    }
}

// The (rows, d) key or value rows at src (stride lds) as an fp32 operand for sgemm: src
// itself when fp32, else widened into tile (rows, d), leading dimension d.
template <class KV>
const float* rows_f32(float* tile, const KV* src, int64_t lds, int rows, int d, int64_t& ld) {
  if constexpr (std::is_same_v<KV, float>) {
    ld = lds;
    return src;
  } else {
    for (int r = 0; r < rows; ++r) to_float(tile + int64_t{r} * d, src + r * lds, d);
    ld = d;
    return tile;
  }
}

// K and V of p in their storage type (k16 / v16 when set).
template <class KV>
const KV* keys_of(const AttnParams& p) {
  if constexpr (std::is_same_v<KV, float>)
    return p.k;
  else
    return p.k16;
}
template <class KV>
const KV* values_of(const AttnParams& p) {
  if constexpr (std::is_same_v<KV, float>)
    return p.v;
  else
    return p.v16;
}

void min_max(const int64_t* pos, int n, int64_t& lo, int64_t& hi) {
  lo = std::numeric_limits<int64_t>::max();
  hi = std::numeric_limits<int64_t>::min();
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, pos[i]);
    hi = std::max(hi, pos[i]);
  }
}

float resolved_scale(const AttnParams& p) {
  return p.scale != 0.0f ? p.scale : 1.0f / std::sqrt(static_cast<float>(p.d));
}

// Checks shared by every entry point (blocked == true: also the scratch).
void check_params(const AttnParams& p, const char* who, bool blocked) {
  SP_CHECK(p.B > 0 && p.H > 0 && p.Hkv > 0 && p.d > 0, who, ": need B, H, Hkv, d > 0, got B=", p.B,
           " H=", p.H, " Hkv=", p.Hkv, " d=", p.d);
  SP_CHECK(p.Tq >= 0 && p.Tk >= 0, who, ": negative Tq=", p.Tq, " or Tk=", p.Tk);
  SP_CHECK(p.H % p.Hkv == 0, who, ": H=", p.H, " not divisible by Hkv=", p.Hkv);
  SP_CHECK(p.q != nullptr, who, ": q is null");
  SP_CHECK((p.k != nullptr && p.v != nullptr && !p.k16 && !p.v16) ||
               (blocked && p.k16 != nullptr && p.v16 != nullptr && !p.k && !p.v),
           who, ": set k and v (fp32) or k16 and v16 (bf16, blocked kernels only), not a mix",
           " or neither");
  SP_CHECK(p.o != nullptr, who, ": o is null");
  SP_CHECK(p.lse != nullptr, who, ": lse is null");
  SP_CHECK(p.q_pos != nullptr, who, ": q_pos is null");
  SP_CHECK(p.k_pos != nullptr, who, ": k_pos is null");
  const int64_t hd = int64_t{p.H} * p.d, kvd = int64_t{p.Hkv} * p.d;
  SP_CHECK(p.q_stride >= hd, who, ": q_stride=", p.q_stride, " < H*d=", hd);
  SP_CHECK(p.kv_stride >= kvd, who, ": kv_stride=", p.kv_stride, " < Hkv*d=", kvd);
  SP_CHECK(p.o_stride >= hd, who, ": o_stride=", p.o_stride, " < H*d=", hd);
  if (p.B > 1) {
    SP_CHECK(p.q_bstride >= p.Tq * p.q_stride, who, ": q_bstride=", p.q_bstride,
             " < Tq*q_stride=", p.Tq * p.q_stride);
    SP_CHECK(p.kv_bstride >= p.Tk * p.kv_stride, who, ": kv_bstride=", p.kv_bstride,
             " < Tk*kv_stride=", p.Tk * p.kv_stride);
    SP_CHECK(p.o_bstride >= p.Tq * p.o_stride, who, ": o_bstride=", p.o_bstride,
             " < Tq*o_stride=", p.Tq * p.o_stride);
  }
  SP_CHECK((p.key_lo == nullptr) == (p.key_hi == nullptr), who,
           ": key_lo and key_hi must be set together");
  SP_CHECK(p.key_lo == nullptr || p.B == 1 || p.key_bstride >= p.Tq, who,
           ": key_bstride=", p.key_bstride, " < Tq=", p.Tq);
  SP_CHECK(p.dropout_p >= 0.0f && p.dropout_p < 1.0f, who, ": dropout_p=", p.dropout_p,
           " outside [0, 1)");
  if (blocked) {
    SP_CHECK(p.scratch != nullptr, who,
             ": scratch is null; allocate attention_scratch_floats(d, n_threads) floats "
             "(Mem::scratch) and set scratch / scratch_floats");
    SP_CHECK(p.scratch_floats >= per_thread_floats(p.d), who, ": scratch_floats=", p.scratch_floats,
             " < attention_scratch_floats(d=", p.d, ", 1)=", per_thread_floats(p.d));
  }
}

void check_bwd_params(const AttnBwdParams& p, const char* who) {
  SP_CHECK(p.dout != nullptr, who, ": dout is null");
  SP_CHECK(p.dq != nullptr, who, ": dq is null");
  SP_CHECK(p.dk != nullptr, who, ": dk is null");
  SP_CHECK(p.dv != nullptr, who, ": dv is null");
  const int64_t hd = int64_t{p.H} * p.d, kvd = int64_t{p.Hkv} * p.d;
  SP_CHECK(p.dq_stride >= hd, who, ": dq_stride=", p.dq_stride, " < H*d=", hd);
  SP_CHECK(p.dkv_stride >= kvd, who, ": dkv_stride=", p.dkv_stride, " < Hkv*d=", kvd);
  if (p.B > 1) {
    SP_CHECK(p.dq_bstride >= p.Tq * p.dq_stride, who, ": dq_bstride=", p.dq_bstride,
             " < Tq*dq_stride=", p.Tq * p.dq_stride);
    SP_CHECK(p.dkv_bstride >= p.Tk * p.dkv_stride, who, ": dkv_bstride=", p.dkv_bstride,
             " < Tk*dkv_stride=", p.Tk * p.dkv_stride);
  }
}

// Threads that pay for themselves (core/threads.hpp): the scores and the P·V product are
// 4·d flops per (query, key) pair of every head, bounded by what the scratch can hold. A
// decode step (one query) over a short cache runs on one thread.
int threads_for(const AttnParams& p) {
  const int64_t fit = p.scratch_floats / per_thread_floats(p.d);
  const int64_t work = int64_t{p.B} * p.H * p.Tq * p.Tk * 4 * p.d;
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({num_threads(), fit, threads_for_work(work)})));
}

// Effective visible key range [lo_r, hi_r] of query rows [i0, i0 + n) of batch row b:
// key_lo / key_hi when set, narrowed by causality (hi ≤ pos_q); unbounded otherwise.
void row_bounds(const AttnParams& p, int b, int i0, int n, int64_t* lo, int64_t* hi) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  const int64_t o = int64_t{b} * p.key_bstride + i0;
  for (int r = 0; r < n; ++r) {
    lo[r] = p.key_lo ? p.key_lo[o + r] : kMin;
    hi[r] = p.key_hi ? p.key_hi[o + r] : kMax;
    if (p.causal) hi[r] = std::min(hi[r], p.q_pos[i0 + r]);
  }
}

// A (query block, key block) tile against the keys' position range [kmin, kmax]:
// skip when no row's range meets it, full when every row's range covers it (no mask
// needed: every key of the block is visible to every row), masked otherwise.
enum class Tile { skip, full, masked };
Tile classify(const int64_t* lo, const int64_t* hi, int n, int64_t kmin, int64_t kmax) {
  bool live = false, full = true;
  for (int r = 0; r < n; ++r) {
    live |= hi[r] >= kmin && lo[r] <= kmax && lo[r] <= hi[r];
    full &= lo[r] <= kmin && kmax <= hi[r];
  }
  return !live ? Tile::skip : full ? Tile::full : Tile::masked;
}

// Online-softmax update of one (query block, key block) tile: S (bq, bk) in t.s becomes
// P̃; m, l (bq) and acc (bq, d) are this block's slices of the running state. lo, hi (bq)
// are the rows' visible key ranges, applied when mask is set.
void softmax_tile(const AttnParams& p, float* S, float* m, float* l, float* acc, int h,
                  const int64_t* pq, const int64_t* pk, const int64_t* lo, const int64_t* hi,
                  int bq, int bk, bool mask, float scale) {
  const int d = p.d;
  for (int r = 0; r < bq; ++r) {
    float* s = S + r * kBk;  // (bk)
    float mx = kNegInf;
    if (mask) {
      const int64_t a = lo[r], z = hi[r];
#pragma omp simd reduction(max : mx)
      for (int c = 0; c < bk; ++c) {
        const float x = pk[c] < a || pk[c] > z ? kNegInf : s[c] * scale;
        s[c] = x;
        mx = std::max(mx, x);
      }
    } else {
#pragma omp simd reduction(max : mx)
      for (int c = 0; c < bk; ++c) {
        s[c] *= scale;
        mx = std::max(mx, s[c]);
      }
    }
    const float m_new = std::max(m[r], mx);
    const float mu = m_new == kNegInf ? 0.0f : m_new;  // all masked so far: e^{−∞−0} = 0
    const float alpha = std::exp(m[r] - mu);           // rescale of the old acc, l
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < bk; ++c) {
      const float e = exp_approx(s[c] - mu);
      s[c] = e;
      sum += e;
    }
    l[r] = l[r] * alpha + sum;  // pre-dropout: LSE is of the undropped softmax
    m[r] = m_new;
    if (alpha != 1.0f) {
      float* a = acc + int64_t{r} * d;
      for (int c = 0; c < d; ++c) a[c] *= alpha;
    }
    if (p.dropout_p > 0.0f)  // P̃ = P·keep/(1−p) feeds O only
      for (int c = 0; c < bk; ++c) s[c] *= attention_dropout_factor(p, h, pq[r], pk[c]);
  }
}

// One forward work unit: query rows [i0, i0 + rows) (≤ kChunk blocks) of head h in batch
// b, over all keys; writes (or merges into) their O and LSE.
// KV: the storage type of K and V (float, or bf16 from k16 / v16); V_j is widened into the
// t.vt tile (unused in forward) before its product.
template <class KV>
void forward_unit(const AttnParams& p, const Tiles& t, int b, int h, int i0, int rows, float scale,
                  bool accumulate) {
  const int d = p.d, hk = h / (p.H / p.Hkv), nblk = (rows + kBq - 1) / kBq;
  const float* q = p.q + b * p.q_bstride + i0 * p.q_stride + int64_t{h} * d;  // (rows, d)
  const KV* kh = keys_of<KV>(p) + b * p.kv_bstride + int64_t{hk} * d;         // (Tk, d)
  const KV* vh = values_of<KV>(p) + b * p.kv_bstride + int64_t{hk} * d;       // (Tk, d)
  const int64_t* pq = p.q_pos + i0;                                           // (rows)
  // Visible key ranges of the rows, and per query block the loosest bounds (lo_min,
  // hi_max): a key block outside [lo_min, hi_max] is skipped in O(1).
  int64_t lo[kChunk * kBq], hi[kChunk * kBq], lo_min[kChunk], hi_max[kChunk];
  row_bounds(p, b, i0, rows, lo, hi);
  for (int x = 0; x < nblk; ++x) {
    const int r0 = x * kBq, n = std::min(kBq, rows - r0);
    lo_min[x] = *std::min_element(lo + r0, lo + r0 + n);
    hi_max[x] = *std::max_element(hi + r0, hi + r0 + n);
  }
  const int64_t unit_lo = *std::min_element(lo_min, lo_min + nblk);
  const int64_t unit_hi = *std::max_element(hi_max, hi_max + nblk);
  std::fill(t.m, t.m + rows, kNegInf);
  std::fill(t.l, t.l + rows, 0.0f);
  std::fill(t.acc, t.acc + int64_t{rows} * d, 0.0f);

  for (int j0 = 0; j0 < p.Tk; j0 += kBk) {
    const int bk = std::min(kBk, p.Tk - j0);
    const int64_t* pk = p.k_pos + j0;  // (bk)
    int64_t kmin, kmax;
    min_max(pk, bk, kmin, kmax);
    if (kmin > unit_hi || kmax < unit_lo) continue;  // every (i, j) of the unit masked
    Tile kind[kChunk];
    bool any = false;
    for (int x = 0; x < nblk; ++x) {
      const int r0 = x * kBq;
      kind[x] = kmin > hi_max[x] || kmax < lo_min[x]
                    ? Tile::skip
                    : classify(lo + r0, hi + r0, std::min(kBq, rows - r0), kmin, kmax);
      any |= kind[x] != Tile::skip;
    }
    if (!any) continue;
    transpose(t.kt, kBk, kh + j0 * p.kv_stride, p.kv_stride, bk, d);  // Kᵀ_j (d, bk)
    int64_t ldv = 0;
    const float* vj = rows_f32(t.vt, vh + j0 * p.kv_stride, p.kv_stride, bk, d, ldv);  // V_j
    for (int x = 0; x < nblk; ++x) {
      const int r0 = x * kBq, bq = std::min(kBq, rows - r0);
      if (kind[x] == Tile::skip) continue;
      // S (bq, bk) = Q_i Kᵀ_j
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, bk, d, 1.0f, q + r0 * p.q_stride,
                  p.q_stride, t.kt, kBk, 0.0f, t.s, kBk);
      float* acc = t.acc + int64_t{r0} * d;  // (bq, d)
      softmax_tile(p, t.s, t.m + r0, t.l + r0, acc, h, pq + r0, pk, lo + r0, hi + r0, bq, bk,
                   kind[x] == Tile::masked, scale);
      // acc (bq, d) += P̃ (bq, bk) V_j (bk, d)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, d, bk, 1.0f, t.s, kBk, vj, ldv,
                  1.0f, acc, d);
    }
  }

  for (int r = 0; r < rows; ++r) {
    float* o = p.o + b * p.o_bstride + (i0 + r) * p.o_stride + int64_t{h} * d;  // (d)
    float* lse = p.lse + (int64_t{b} * p.H + h) * p.Tq + i0 + r;
    const float* a = t.acc + int64_t{r} * d;
    const float l = t.l[r];
    const float lse_b = l > 0.0f ? t.m[r] + std::log(l) : kNegInf;  // this key set
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    if (!accumulate || *lse == kNegInf) {  // overwrite (merging into −∞ is a copy)
      if (accumulate && lse_b == kNegInf) continue;
      for (int c = 0; c < d; ++c) o[c] = a[c] * inv;
      *lse = lse_b;
    } else if (lse_b != kNegInf) {  // merge:  lse = max + log1p(e^{min−max})
      const float lse_a = *lse;
      const float hi = std::max(lse_a, lse_b), lo = std::min(lse_a, lse_b);
      const float lse_n = hi + std::log1p(std::exp(lo - hi));
      const float wa = std::exp(lse_a - lse_n), wb = std::exp(lse_b - lse_n) * inv;
      for (int c = 0; c < d; ++c) o[c] = o[c] * wa + a[c] * wb;
      *lse = lse_n;
    }  // else: this key set saw nothing for the row: no-op
  }
}

// One backward work unit: key rows [j0, j0 + bk) of kv head hk in batch b, against every
// query block and every query head of the group (steps s = qb·group + h − hk·group).
// Owns dK_j, dV_j; adds its dQ tiles in the order enforced by `order`.
// KV as in forward_unit; a bf16 K_j is widened once into the part of t.acc that the dQ tile
// leaves free (acc holds kChunk·Bq·d floats, the dQ tile Bq·d, K_j Bk·d).
template <class KV>
void backward_unit(const AttnBwdParams& p, const Tiles& t, StepOrder& order, int b, int hk, int j0,
                   int bk, float scale) {
  static_assert(kChunk * kBq >= kBq + kBk, "acc must hold the dQ tile and a K_j tile");
  const int d = p.d, group = p.H / p.Hkv, nqb = (p.Tq + kBq - 1) / kBq;
  const bool dropout = p.dropout_p > 0.0f;
  const KV* kj16 = keys_of<KV>(p) + b * p.kv_bstride + j0 * p.kv_stride + int64_t{hk} * d;
  const KV* vj = values_of<KV>(p) + b * p.kv_bstride + j0 * p.kv_stride + int64_t{hk} * d;
  int64_t ldk = 0;  // K_j (bk, d) as fp32 for the dQ product
  const float* kj = rows_f32(t.acc + int64_t{kBq} * d, kj16, p.kv_stride, bk, d, ldk);
  const int64_t* pk = p.k_pos + j0;  // (bk)
  int64_t kmin, kmax;
  min_max(pk, bk, kmin, kmax);
  std::fill(t.dk, t.dk + int64_t{bk} * d, 0.0f);
  std::fill(t.dv, t.dv + int64_t{bk} * d, 0.0f);
  transpose(t.kt, kBk, kj16, p.kv_stride, bk, d);  // Kᵀ_j (d, bk)
  transpose(t.vt, kBk, vj, p.kv_stride, bk, d);    // Vᵀ_j (d, bk)

  for (int qb = nqb - 1; qb >= 0; --qb) {  // last query blocks first (see file comment)
    const int i0 = qb * kBq, bq = std::min(kBq, p.Tq - i0);
    const int64_t* pq = p.q_pos + i0;  // (bq)
    int64_t lo[kBq], hi[kBq];
    row_bounds(p, b, i0, bq, lo, hi);
    const Tile kind = classify(lo, hi, bq, kmin, kmax);
    const int64_t s0 = int64_t{nqb - 1 - qb} * group;  // step of the group's first head
    if (kind == Tile::skip) {                          // fully masked: nothing to add, no wait
      order.passed(s0 + group - 1);
      continue;
    }
    const bool mask = kind == Tile::masked;
    for (int h = hk * group; h < (hk + 1) * group; ++h) {
      const int64_t step = s0 + (h - hk * group);
      const float* qi = p.q + b * p.q_bstride + i0 * p.q_stride + int64_t{h} * d;      // (bq, d)
      const float* doi = p.dout + b * p.o_bstride + i0 * p.o_stride + int64_t{h} * d;  // (bq, d)
      const float* lse = p.lse + (int64_t{b} * p.H + h) * p.Tq + i0;                   // (bq)
      const float* delta = p.delta + (int64_t{b} * p.H + h) * p.Tq + i0;               // (bq)
      // S (bq, bk) = Q_i Kᵀ_j;  dP (bq, bk) = dO_i Vᵀ_j
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, bk, d, 1.0f, qi, p.q_stride, t.kt,
                  kBk, 0.0f, t.s, kBk);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, bk, d, 1.0f, doi, p.o_stride, t.vt,
                  kBk, 0.0f, t.dp, kBk);
      for (int r = 0; r < bq; ++r) {
        float* s = t.s + r * kBk;    // S → P̃:  P = e^{S·scale − LSE}
        float* dp = t.dp + r * kBk;  // dP → dS: dS = P∘(dP − Δ)
        // a row with LSE = −∞ saw no key at all: P = 0 (x = −∞), no NaN
        const float nl = lse[r] == kNegInf ? kNegInf : -lse[r];
        const float dl = delta[r];
        const int64_t qr = pq[r], a = lo[r], z = hi[r];
        if (dropout) {  // dS = P∘(dP̃·keep/(1−p) − Δ), dV uses P̃ = P·keep/(1−p)
          for (int c = 0; c < bk; ++c) {
            const bool hidden = mask && (pk[c] < a || pk[c] > z);
            const float x = hidden ? kNegInf : std::fma(s[c], scale, nl);
            const float pr = exp_approx(x), f = attention_dropout_factor(p, h, qr, pk[c]);
            s[c] = pr * f;
            dp[c] = pr * (dp[c] * f - dl);
          }
        } else if (mask) {
#pragma omp simd
          for (int c = 0; c < bk; ++c) {
            const bool hidden = pk[c] < a || pk[c] > z;
            const float pr = exp_approx(hidden ? kNegInf : std::fma(s[c], scale, nl));
            s[c] = pr;
            dp[c] = pr * (dp[c] - dl);
          }
        } else {
#pragma omp simd
          for (int c = 0; c < bk; ++c) {
            const float pr = exp_approx(std::fma(s[c], scale, nl));
            s[c] = pr;
            dp[c] = pr * (dp[c] - dl);
          }
        }
      }
      // dV_j (bk, d) += P̃ᵀ dO_i;  dK_j (bk, d) += scale · dSᵀ Q_i
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bk, d, bq, 1.0f, t.s, kBk, doi,
                  p.o_stride, 1.0f, t.dv, d);
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, bk, d, bq, scale, t.dp, kBk, qi,
                  p.q_stride, 1.0f, t.dk, d);
      // dQ tile (bq, d) = scale · dS K_j, added to dq after every lower key block's tile
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, bq, d, bk, scale, t.dp, kBk, kj, ldk,
                  0.0f, t.acc, d);
      order.wait(step);
      for (int r = 0; r < bq; ++r) {
        float* dq = p.dq + b * p.dq_bstride + (i0 + r) * p.dq_stride + int64_t{h} * d;  // (d)
        const float* a = t.acc + int64_t{r} * d;
        for (int c = 0; c < d; ++c) dq[c] += a[c];
      }
      order.passed(step);
    }
  }
  for (int r = 0; r < bk; ++r) {  // this unit is the only writer of these rows
    const int64_t off = b * p.dkv_bstride + (j0 + r) * p.dkv_stride + int64_t{hk} * d;
    const float* a = t.dk + int64_t{r} * d;
    const float* g = t.dv + int64_t{r} * d;
    for (int c = 0; c < d; ++c) p.dk[off + c] += a[c];
    for (int c = 0; c < d; ++c) p.dv[off + c] += g[c];
  }
}

}  // namespace

bool attention_any_visible(const AttnParams& p, int64_t kmin, int64_t kmax) {
  int64_t lo[kBq], hi[kBq];
  for (int b = 0; b < p.B; ++b)
    for (int i0 = 0; i0 < p.Tq; i0 += kBq) {
      const int n = std::min(kBq, p.Tq - i0);
      row_bounds(p, b, i0, n, lo, hi);
      if (classify(lo, hi, n, kmin, kmax) != Tile::skip) return true;
    }
  return false;
}

int64_t attention_scratch_floats(int d, int n_threads) {
  SP_CHECK(d > 0, "attention_scratch_floats: d=", d, " must be > 0");
  if (n_threads <= 0) n_threads = num_threads();
  return per_thread_floats(d) * n_threads;
}

void attention_forward(const AttnParams& p, bool accumulate) {
  check_params(p, "attention_forward", true);
  if (p.Tq == 0) return;
  const float scale = resolved_scale(p);
  const int nt = threads_for(p);
  const int nqb = (p.Tq + kBq - 1) / kBq;
  // query blocks per unit: up to kChunk, but keep ≥ ~4 units per thread for balance
  const int64_t per = std::clamp<int64_t>(int64_t{p.B} * p.H * nqb / (4 * nt), 1, kChunk);
  const int chunk_rows = static_cast<int>(per) * kBq;
  const int nch = (p.Tq + chunk_rows - 1) / chunk_rows;
  const int64_t units = int64_t{p.B} * p.H * nch;
  BlasSingleThread blas_one;
#pragma omp parallel num_threads(nt)
  {
    const Tiles t = thread_tiles(p.scratch, p.d, omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < units; ++u) {
      // last query chunks first: under causal masking they see the most keys
      const int ch = nch - 1 - static_cast<int>(u % nch);
      const int h = static_cast<int>(u / nch % p.H), b = static_cast<int>(u / nch / p.H);
      const int i0 = ch * chunk_rows;
      if (p.k16)
        forward_unit<bf16>(p, t, b, h, i0, std::min(chunk_rows, p.Tq - i0), scale, accumulate);
      else
        forward_unit<float>(p, t, b, h, i0, std::min(chunk_rows, p.Tq - i0), scale, accumulate);
    }
  }
}

void attention_delta(float* delta, const float* dout, const AttnParams& p) {
  SP_CHECK(delta != nullptr, "attention_delta: delta is null");
  SP_CHECK(dout != nullptr, "attention_delta: dout is null");
  SP_CHECK(p.o != nullptr, "attention_delta: o is null");
  SP_CHECK(p.o_stride >= int64_t{p.H} * p.d, "attention_delta: o_stride=", p.o_stride,
           " < H*d=", int64_t{p.H} * p.d);
  const int64_t rows = int64_t{p.B} * p.H * p.Tq;
#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (int64_t u = 0; u < rows; ++u) {  // u = (b, h, i) in delta's (B, H, Tq) order
    const int64_t i = u % p.Tq, h = u / p.Tq % p.H, b = u / p.Tq / p.H;
    const int64_t off = b * p.o_bstride + i * p.o_stride + h * p.d;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int c = 0; c < p.d; ++c) acc += dout[off + c] * p.o[off + c];
    delta[u] = acc;
  }
}

void attention_backward(const AttnBwdParams& p) {
  check_params(p, "attention_backward", true);
  check_bwd_params(p, "attention_backward");
  SP_CHECK(p.delta != nullptr, "attention_backward: delta is null (call attention_delta)");
  SP_CHECK(reinterpret_cast<uintptr_t>(p.scratch) % alignof(std::atomic<int64_t>) == 0,
           "attention_backward: scratch must be 8-byte aligned");
  if (p.Tq == 0 || p.Tk == 0) return;
  const float scale = resolved_scale(p);
  const int nkb = (p.Tk + kBk - 1) / kBk, nqb = (p.Tq + kBq - 1) / kBq;
  BwdSchedule sc;
  sc.units = int64_t{p.B} * p.Hkv * nkb;
  sc.stride = int64_t{nqb} * (p.H / p.Hkv) + 1;
  sc.scratch = p.scratch;
  sc.d = p.d;
  const int nt = threads_for(p);
  BlasSingleThread blas_one;
#pragma omp parallel num_threads(nt)
  {
    const int me = omp_get_thread_num();
    const Tiles t = thread_tiles(p.scratch, p.d, me);
    // no unit yet: −1 lies below every unit's range
    std::atomic<int64_t>* mine = new (t.sync) std::atomic<int64_t>(-1);
#pragma omp single
    sc.team = omp_get_num_threads();  // implicit barrier: every word is initialised
    for (int64_t u = claim_unit(sc, *mine); u < sc.units; u = claim_unit(sc, *mine)) {
      // u = g·nkb + kb: group g = (b, kv head); first key blocks first within a group
      // (under causal masking they see the most queries)
      const int kb = static_cast<int>(u % nkb), g = static_cast<int>(u / nkb);
      const int hk = g % p.Hkv, b = g / p.Hkv;
      StepOrder order{&sc, mine, u, u - kb};
      const int j0 = kb * kBk;
      if (p.k16)
        backward_unit<bf16>(p, t, order, b, hk, j0, std::min(kBk, p.Tk - j0), scale);
      else
        backward_unit<float>(p, t, order, b, hk, j0, std::min(kBk, p.Tk - j0), scale);
    }
  }
}

// ---- double-precision references ---------------------------------------------------

void attention_forward_naive(const AttnParams& p) {
  check_params(p, "attention_forward_naive", false);
  const int d = p.d, group = p.H / p.Hkv;
  const double scale = resolved_scale(p);
  std::vector<double> S(static_cast<size_t>(p.Tq) * p.Tk);  // (Tq, Tk), one head
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.H; ++h) {
      const int hk = h / group;
      for (int i = 0; i < p.Tq; ++i) {
        const float* q = p.q + b * p.q_bstride + i * p.q_stride + int64_t{h} * d;
        double mx = -INFINITY;
        for (int j = 0; j < p.Tk; ++j) {
          double& s = S[static_cast<size_t>(i) * p.Tk + j];
          if (!attention_visible(p, b, i, p.k_pos[j])) {
            s = -INFINITY;
            continue;
          }
          const float* k = p.k + b * p.kv_bstride + j * p.kv_stride + int64_t{hk} * d;
          s = 0.0;
          for (int c = 0; c < d; ++c) s += double{q[c]} * k[c];
          s *= scale;
          mx = std::max(mx, s);
        }
        float* o = p.o + b * p.o_bstride + i * p.o_stride + int64_t{h} * d;
        float* lse = p.lse + (int64_t{b} * p.H + h) * p.Tq + i;
        if (mx == -INFINITY) {  // no visible key
          std::fill(o, o + d, 0.0f);
          *lse = kNegInf;
          continue;
        }
        double sum = 0.0;
        for (int j = 0; j < p.Tk; ++j) sum += std::exp(S[static_cast<size_t>(i) * p.Tk + j] - mx);
        std::vector<double> acc(d, 0.0);
        for (int j = 0; j < p.Tk; ++j) {
          double pr = std::exp(S[static_cast<size_t>(i) * p.Tk + j] - mx) / sum;
          if (p.dropout_p > 0.0f) pr *= attention_dropout_factor(p, h, p.q_pos[i], p.k_pos[j]);
          const float* v = p.v + b * p.kv_bstride + j * p.kv_stride + int64_t{hk} * d;
          for (int c = 0; c < d; ++c) acc[c] += pr * v[c];
        }
        for (int c = 0; c < d; ++c) o[c] = static_cast<float>(acc[c]);
        *lse = static_cast<float>(mx + std::log(sum));
      }
    }
}

void attention_backward_naive(const AttnBwdParams& p) {
  check_params(p, "attention_backward_naive", false);
  check_bwd_params(p, "attention_backward_naive");
  const int d = p.d, group = p.H / p.Hkv, Tq = p.Tq, Tk = p.Tk;
  const double scale = resolved_scale(p);
  const size_t n = static_cast<size_t>(Tq) * Tk;
  std::vector<double> P(n), F(n), dS(n);  // (Tq, Tk): softmax, dropout factor, dS
  auto Q = [&](int b, int i, int h) { return p.q + b * p.q_bstride + i * p.q_stride + h * d; };
  auto K = [&](int b, int j, int hk) { return p.k + b * p.kv_bstride + j * p.kv_stride + hk * d; };
  auto V = [&](int b, int j, int hk) { return p.v + b * p.kv_bstride + j * p.kv_stride + hk * d; };
  auto dO = [&](int b, int i, int h) { return p.dout + b * p.o_bstride + i * p.o_stride + h * d; };
  for (int b = 0; b < p.B; ++b)
    for (int h = 0; h < p.H; ++h) {
      const int hk = h / group;
      for (int i = 0; i < Tq; ++i) {  // P = softmax(S), F = keep/(1−p)
        double mx = -INFINITY;
        for (int j = 0; j < Tk; ++j) {
          double s = -INFINITY;
          if (attention_visible(p, b, i, p.k_pos[j])) {
            s = 0.0;
            for (int c = 0; c < d; ++c) s += double{Q(b, i, h)[c]} * K(b, j, hk)[c];
            s *= scale;
          }
          P[i * size_t(Tk) + j] = s;
          mx = std::max(mx, s);
          F[i * size_t(Tk) + j] =
              p.dropout_p > 0.0f ? attention_dropout_factor(p, h, p.q_pos[i], p.k_pos[j]) : 1.0;
        }
        double sum = 0.0;
        for (int j = 0; j < Tk; ++j) {
          double& e = P[i * size_t(Tk) + j];
          e = mx == -INFINITY ? 0.0 : std::exp(e - mx);
          sum += e;
        }
        for (int j = 0; j < Tk; ++j)
          P[i * size_t(Tk) + j] = sum > 0 ? P[i * size_t(Tk) + j] / sum : 0;
      }
      for (int i = 0; i < Tq; ++i) {
        // Δ_i = Σ_j P̃_ij (dO_i·V_j) = dO_i·O_i;  dS_ij = P_ij (F_ij dO_i·V_j − Δ_i)
        std::vector<double> dpt(Tk);
        double delta = 0.0;
        for (int j = 0; j < Tk; ++j) {
          double dp = 0.0;
          for (int c = 0; c < d; ++c) dp += double{dO(b, i, h)[c]} * V(b, j, hk)[c];
          dpt[j] = dp * F[i * size_t(Tk) + j];
          delta += P[i * size_t(Tk) + j] * dpt[j];
        }
        for (int j = 0; j < Tk; ++j)
          dS[i * size_t(Tk) + j] = P[i * size_t(Tk) + j] * (dpt[j] - delta);
      }
      for (int i = 0; i < Tq; ++i) {  // dQ_i += scale Σ_j dS_ij K_j
        float* dq = p.dq + b * p.dq_bstride + i * p.dq_stride + int64_t{h} * d;
        for (int c = 0; c < d; ++c) {
          double acc = 0.0;
          for (int j = 0; j < Tk; ++j) acc += dS[i * size_t(Tk) + j] * K(b, j, hk)[c];
          dq[c] += static_cast<float>(acc * scale);
        }
      }
      for (int j = 0; j < Tk; ++j) {  // dK_j += scale Σ_i dS_ij Q_i;  dV_j += Σ_i P̃_ij dO_i
        float* dk = p.dk + b * p.dkv_bstride + j * p.dkv_stride + int64_t{hk} * d;
        float* dv = p.dv + b * p.dkv_bstride + j * p.dkv_stride + int64_t{hk} * d;
        for (int c = 0; c < d; ++c) {
          double ak = 0.0, av = 0.0;
          for (int i = 0; i < Tq; ++i) {
            ak += dS[i * size_t(Tk) + j] * Q(b, i, h)[c];
            av += P[i * size_t(Tk) + j] * F[i * size_t(Tk) + j] * dO(b, i, h)[c];
          }
          dk[c] += static_cast<float>(ak * scale);
          dv[c] += static_cast<float>(av);
        }
      }
    }
}

}  // namespace seqpar
