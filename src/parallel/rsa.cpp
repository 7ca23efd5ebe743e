// `rsa`: Ring Self-Attention of Colossal-AI (Li et al., "Sequence Parallelism: Long
// Sequence Training from System Perspective"), as published: every rank materialises
// its full score rows. docs/strategies/rsa.md has the derivation, the byte formulas and
// the memory formula; in brief, for rank i of N holding query rows Q_i (T_i of them; any
// L ≥ N, so blocks may differ in length, T_j = shard_len(L, N, j)):
//
// forward   K ring (N−1 hops):  S_i[:, block j] = Q_i K_jᵀ·scale (+ causal mask by global
//           positions), for every j — the (B, H, T_i, L) score buffer;
//           softmax over the full row:  LSE_i = log Σ_c exp(S_ic),  P = exp(S − LSE),
//           P̃ = P∘dropout mask (LSE is pre-dropout);
//           V ring (N−1 hops):  O_i = Σ_j P̃_ij V_j.
// backward  Δ_i = rowsum(dO_i∘O_i);
//           K ring (N−1 hops): recompute P_ij = exp(Q_i K_jᵀ·scale − LSE_i) (the strategy
//           object is shared by every layer, so P of one layer cannot be kept until its
//           backward; see rsa.md);
//           V ring (N−1 hops) + travelling dV accumulators (N−1 hops):
//             dP_ij = (dO_i V_jᵀ)∘mask,  dS_ij = P_ij∘(dP_ij − Δ_i)  (in place of P),
//             dV_j += P̃_ijᵀ dO_i;
//           K ring (N−1 hops) + travelling dK accumulators (N−1 hops):
//             dQ_i += dS_ij K_j·scale,  dK_j += dS_ijᵀ Q_i·scale.
// Bytes sent per rank, KV_j = 4·B·T_j·Hkv·d (block j), Σ = Σ_j KV_j: rank i forwards every
// block but its successor's, Σ − KV_{i+1}, per block ring, and every accumulator but its
// own, Σ − KV_i, per accumulator pass: forward 2·(Σ − KV_{i+1}), backward
// 3·(Σ − KV_{i+1}) + 2·(Σ − KV_i); with even shards 2(N−1)·KV and 5(N−1)·KV.
// Masks: query t of batch row b sees key c iff lo_b(t) ≤ pos_c ≤ hi_b(t), the visible
// range of parallel/mask.hpp (documents, window, causal; causal alone: (−∞, pos_t]);
// masked scores are −∞, element by element. A block j that no row of batch row b sees
// (decided exactly per row from the block's sorted key positions) is skipped for that
// row: no score GEMM (−∞ / P = 0 filled), no P̃V, dS, dV, dQ or dK work. The rings stay
// uniform, so the bytes do not depend on the mask.
// --precision bf16 (d even): the K and V blocks travel and wait in bf16 (exact: QKV is stored
// in bf16), halving the block bytes, KV_j = 2·B·T_j·Hkv·d in the block rings; each visiting
// block is widened into one fp32 working block (Mem::scratch) for the score and P̃V GEMMs.
// The accumulators stay fp32 (4·B·T_j·Hkv·d per hop).
// Score columns are kept in block order (column C_j + t is token t of rank j, C_j =
// T_0 + … + T_{j−1}), which the row softmax does not care about; kpos_ maps a column to its
// global position. Ring buffers hold the longest block; each message carries its own.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// Query rows per dP tile in backward: the tile is kRowChunk×T_j per thread, so backward
// needs no second T×L buffer.
constexpr int kRowChunk = 64;
// Message tags, one pair (block, accumulator) per ring pass.
constexpr int kTagFwdK = 0x75a0, kTagFwdV = 0x75a2, kTagBwdP = 0x75a4, kTagBwdV = 0x75a6,
              kTagBwdK = 0x75a8;

class RsaAttention final : public AttentionStrategy {
 public:
  RsaAttention(Arena& arena, const SpSetup& sp, int64_t L, int B, int T, int H, int Hkv, int d)
      : comm_(sp.comm),
        N_(sp.sp_size()),
        rank_(sp.sp_rank()),
        B_(B),
        T_(T),
        H_(H),
        Hkv_(Hkv),
        d_(d),
        L_(L),
        nt_(num_threads()),
        rows_chunk_(std::min(T, kRowChunk)) {
    kpos_.reserve(size_t(L));
    for (int j = 0; j < N_; ++j) {
      const std::vector<int64_t> p = shard_positions(L, N_, j, sp.layout);
      len_.push_back(int(p.size()));
      col0_.push_back(int64_t(kpos_.size()));
      kpos_.insert(kpos_.end(), p.begin(), p.end());
      t_max_ = std::max(t_max_, len_.back());
    }
    kpos_sorted_ = kpos_;
    for (int j = 0; j < N_; ++j)
      std::sort(kpos_sorted_.begin() + col0_[j], kpos_sorted_.begin() + col0_[j] + len_[j]);
    const size_t bh_t = size_t(B) * H * T, kv = block_floats(t_max_);
    scores_ = Buffer(arena, Mem::scratch, bh_t * size_t(L), "rsa score rows (B,H,T,L)");
    tile_ = Buffer(arena, Mem::scratch, size_t(nt_) * rows_chunk_ * t_max_, "rsa dP tiles");
    dhead_ = Buffer(arena, Mem::scratch, size_t(B) * H * t_max_ * d, "rsa per-head dK/dV");
    delta_ = Buffer(arena, Mem::scratch, bh_t, "rsa delta");
    // bf16 blocks: B·Hkv·t·d is even when d is, so a block is exactly half as many floats.
    bf_ = sp.precision == Precision::bf16 && d % 2 == 0;
    const size_t kvb = bf_ ? kv / 2 : kv;
    if (bf_) work_ = Buffer(arena, Mem::scratch, kv, "rsa K/V block widened to fp32");
    blk_[0] = Buffer(arena, Mem::comm, kvb, "rsa K/V block");
    acc_[0] = Buffer(arena, Mem::comm, kv, "rsa dK/dV accumulator");
    if (N_ > 1) {
      blk_[1] = Buffer(arena, Mem::comm, kvb, "rsa K/V block (next)");
      acc_[1] = Buffer(arena, Mem::comm, kv, "rsa dK/dV accumulator (next)");
    }
  }

  const char* name() const override { return "rsa"; }

  // K ring + V ring: this rank forwards blocks i, i−1, …, i−N+2, every block but that of
  // its successor i+1 (which would come back home): Σ_j KV_j − KV_{i+1} per ring.
  uint64_t bytes_forward(const AttnShard&) const override { return 2 * ring_bytes(); }
  // K ring (recompute P), V ring + dV accumulators, K ring + dK accumulators; this rank
  // hands on the accumulators of blocks i−1, …, i−N+1, every block but its own.
  uint64_t bytes_backward(const AttnShard&) const override {
    return 3 * ring_bytes() + 2 * acc_bytes();
  }

  void forward(const AttnShard& s, float* o, float* lse) override {
    agree_on_shard(comm_, "rsa", [&] { check_shard(s); });
    prepare_mask(s);
    const float scale = 1.0f / std::sqrt(float(d_));
    ring_pass(s, H_, kTagFwdK, nullptr,
              [&](int j, const float* k, float*) { score_block(s, j, k, scale, nullptr); });
    softmax_rows(s, lse);
    std::memset(o, 0, sizeof(float) * size_t(B_) * T_ * H_ * d_);
    ring_pass(s, H_ + Hkv_, kTagFwdV, nullptr,
              [&](int j, const float* v, float*) { pv_block(j, v, o); });
  }

  void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                float* dqkv) override {
    agree_on_shard(comm_, "rsa", [&] { check_shard(s); });
    prepare_mask(s);
    const float scale = 1.0f / std::sqrt(float(d_));
    compute_delta(o, dout);
    ring_pass(s, H_, kTagBwdP, nullptr,
              [&](int j, const float* k, float*) { score_block(s, j, k, scale, lse); });
    ring_pass(s, H_ + Hkv_, kTagBwdV, dqkv,
              [&](int j, const float* v, float* acc) { ds_dv_block(s, j, v, dout, acc); });
    ring_pass(s, H_, kTagBwdK, dqkv,
              [&](int j, const float* k, float* acc) { dq_dk_block(s, j, k, scale, dqkv, acc); });
  }

 private:
  // Floats of a (B, Hkv, t, d) block: block j is block_floats(T_j).
  size_t block_floats(int t) const { return size_t(B_) * Hkv_ * t * d_; }
  // Bytes this rank sends in one block ring: Σ_{j ≠ i+1} e·B·T_j·Hkv·d (0 when N = 1), e = 4
  // (fp32 blocks) or 2 (bf16).
  uint64_t ring_bytes() const {
    uint64_t n = 0;
    for (int j = 0; j < N_; ++j)
      if (j != (rank_ + 1) % N_) n += block_floats(len_[j]) * (bf_ ? 2 : 4);
    return n;
  }
  // Bytes this rank sends in one accumulator pass: Σ_{j ≠ i} 4·B·T_j·Hkv·d.
  uint64_t acc_bytes() const {
    uint64_t n = 0;
    for (int j = 0; j < N_; ++j)
      if (j != rank_) n += block_floats(len_[j]) * sizeof(float);
    return n;
  }
  int64_t qkv_width() const { return int64_t(H_ + 2 * Hkv_) * d_; }
  int kv_head(int h) const { return h / (H_ / Hkv_); }
  // Row (b, h, t) of the score buffer starts at scores_ + ((b·H + h)·T + t)·L; block j's
  // columns are [C_j, C_j + T_j) of it.
  float* score_rows(int64_t bh) const { return scores_.data() + bh * T_ * L_; }
  // Visible key range [lo, hi] of this rank's query t in batch row b: the mask's bounds,
  // or causality alone (−∞, pos_t], or everything.
  void key_range(const AttnShard& s, int64_t b, int t, int64_t& lo, int64_t& hi) const {
    if (bounds_.active()) {
      lo = bounds_.lo()[b * T_ + t];
      hi = bounds_.hi()[b * T_ + t];
      return;
    }
    lo = std::numeric_limits<int64_t>::min();
    hi = s.causal ? s.pos[t] : std::numeric_limits<int64_t>::max();
  }
  // Per call: the key ranges of this rank's rows under the shard's mask, and vis_[b, j] =
  // whether some query of batch row b sees some key of block j (exact: the first key of
  // the sorted block ≥ lo is ≤ hi). Causal alone, this is "the block's first key is not
  // after this rank's last query", as before masks existed.
  void prepare_mask(const AttnShard& s) {
    bounds_.build(s.mask, s.pos, B_, T_, s.causal);
    vis_.assign(size_t(B_) * N_, 0);
    for (int b = 0; b < B_; ++b)
      for (int j = 0; j < N_; ++j) {
        const auto first = kpos_sorted_.begin() + col0_[j], last = first + len_[j];
        char& v = vis_[size_t(b) * N_ + j];
        for (int t = 0; t < T_ && !v; ++t) {
          int64_t lo, hi;
          key_range(s, b, t, lo, hi);
          const auto k = std::lower_bound(first, last, lo);
          v = k != last && *k <= hi;
        }
      }
  }
  bool visible(int64_t b, int j) const { return vis_[size_t(b) * N_ + j] != 0; }

  void check_shard(const AttnShard& s) const {
    SP_CHECK(s.qkv != nullptr && s.pos != nullptr, "rsa: qkv or pos is null");
    SP_CHECK(s.B == B_ && s.T == T_ && s.H == H_ && s.Hkv == Hkv_ && s.d == d_,
             "rsa: shard B=", s.B, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " d=", s.d,
             ", built for B=", B_, " T=", T_, " H=", H_, " Hkv=", Hkv_, " d=", d_);
    SP_CHECK(s.L == L_, "rsa: shard L=", s.L, ", built for L=", L_);
    const int64_t* mine = kpos_.data() + col0_[rank_];
    for (int t = 0; t < T_; ++t)
      SP_CHECK(s.pos[t] == mine[t], "rsa: position ", t, " of rank ", rank_, " is ", s.pos[t],
               ", the layout gives ", mine[t]);
  }

  AttnParams dropout_key(const AttnShard& s) const { return shard_kernel_params(s); }

  // Runs f(x, thread) for x in [0, n) on the OpenMP threads, BLAS single-threaded.
  template <class F>
  void parallel(int64_t n, F&& f) const {
    BlasSingleThread blas_one;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_)
    for (int64_t x = 0; x < n; ++x) f(x, omp_get_thread_num());
  }

  // (B, T, heads [col, col + Hkv), d) of qkv  ->  (B, Hkv, T, d) block (this rank's).
  void pack_block(const float* qkv, int col, float* blk) const {
    const int64_t W = qkv_width();
    parallel(int64_t(B_) * Hkv_, [&](int64_t x, int) {
      const int64_t b = x / Hkv_, kh = x % Hkv_;
      for (int t = 0; t < T_; ++t)
        std::memcpy(blk + (x * T_ + t) * d_, qkv + (b * T_ + t) * W + (col + kh) * d_,
                    sizeof(float) * d_);
    });
  }
  // dqkv heads [col, col + Hkv) += (B, Hkv, T, d) accumulator.
  void add_home(const float* acc, int col, float* dqkv) const {
    const int64_t W = qkv_width();
    parallel(int64_t(B_) * Hkv_, [&](int64_t x, int) {
      const int64_t b = x / Hkv_, kh = x % Hkv_;
      for (int t = 0; t < T_; ++t) {
        float* dst = dqkv + (b * T_ + t) * W + (col + kh) * d_;
        const float* src = acc + (x * T_ + t) * d_;
        for (int c = 0; c < d_; ++c) dst[c] += src[c];
      }
    });
  }

  // One pass of the ring over the K (col = H) or V (col = H + Hkv) blocks of all ranks.
  // Step 0 computes this rank's own block while the first hop is in flight; step
  // s = 1..N−1 computes the block of rank j = (i − s) mod N, received from rank i − 1
  // (and forwarded to i + 1 while computing, unless s = N − 1): N − 1 block hops. Every
  // message is block_floats(T_j) of the block it carries (buffers hold the longest).
  // With dqkv (backward), compute(j, blk, acc) also adds this rank's dK_j or dV_j
  // contribution into acc: the own block's goes home at once; the accumulator of block j
  // is started on rank j + 1 (its step 1), handed to the next rank after every step and,
  // after N − 1 hops, arrives at rank j, which adds it into its dqkv columns: N − 1
  // accumulator hops.
  template <class Compute>
  void ring_pass(const AttnShard& s, int col, int tag, float* dqkv, Compute&& compute) {
    const int i = rank_, N = N_, next = (i + 1) % N, prev = (i - 1 + N) % N;
    auto n = [&](int j) { return block_floats(len_[j]); };      // floats of block j
    auto nb = [&](int j) { return n(j) / (bf_ ? 2 : 1); };      // ... as it travels
    auto owner = [&](int st) { return (i - st % N + N) % N; };  // block computed at step st
    const bool with_acc = dqkv != nullptr;
    std::vector<Comm::Request> reqs;
    // Pending transfers are cancelled if an exception unwinds this pass.
    struct Cancel {
      Comm* c;
      std::vector<Comm::Request>& r;
      ~Cancel() {
        if (c) c->cancel_all(r);
      }
    } cancel{comm_, reqs};
    // At step st: send the block of step st onward, receive the block of step st + 1.
    auto post_hop = [&](int st, const float* send, float* recv) {
      reqs.push_back(comm_->irecv(recv, nb(owner(st + 1)), prev, tag));
      reqs.push_back(comm_->isend(send, nb(owner(st)), next, tag));
    };
    // The fp32 view of the block at step st's buffer: itself, or widened into work_.
    auto f32 = [&](int buf, int j) -> const float* {
      if (!bf_) return blk_[buf].data();
      to_float(work_.data(), reinterpret_cast<const bf16*>(blk_[buf].data()), int64_t(n(j)));
      return work_.data();
    };
    if (bf_) {
      pack_block(s.qkv, col, work_.data());
      to_bf16(reinterpret_cast<bf16*>(blk_[0].data()), work_.data(), int64_t(n(i)));
    } else {
      pack_block(s.qkv, col, blk_[0].data());
    }
    if (N > 1) post_hop(0, blk_[0].data(), blk_[1].data());
    if (with_acc) std::memset(acc_[0].data(), 0, sizeof(float) * n(i));
    compute(i, bf_ ? work_.data() : blk_[0].data(), with_acc ? acc_[0].data() : nullptr);
    if (with_acc) add_home(acc_[0].data(), col, dqkv);
    int cur = 0, a = 0;
    for (int st = 1; st < N; ++st) {
      comm_->wait_all(reqs);
      reqs.clear();
      cur ^= 1;
      const int j = owner(st);
      if (st < N - 1) post_hop(st, blk_[cur].data(), blk_[cur ^ 1].data());
      if (with_acc && st == 1) std::memset(acc_[a].data(), 0, sizeof(float) * n(j));
      compute(j, f32(cur, j), with_acc ? acc_[a].data() : nullptr);
      if (with_acc) {  // dK_j / dV_j onward; in comes rank i−1's, of the next step's block
        comm_->sendrecv(acc_[a].data(), n(j), next, acc_[a ^ 1].data(), n(owner(st + 1)), prev,
                        tag + 1);
        a ^= 1;
      }
    }
    if (!reqs.empty()) comm_->wait_all(reqs);
    if (with_acc && N > 1) add_home(acc_[a].data(), col, dqkv);
  }

  // Columns of block j in every score row: S = Q_i K_jᵀ·scale, −inf outside [lo, hi].
  // With lse (backward), the block is turned into P = exp(S − LSE) at once (0 where
  // masked or where the row sees no key).
  void score_block(const AttnShard& s, int j, const float* k, float scale, const float* lse) const {
    const int64_t W = qkv_width(), L = L_;
    const int Tj = len_[j];
    const int64_t* kp = kpos_.data() + col0_[j];
    const bool masking = s.causal || bounds_.active();
    parallel(int64_t(B_) * H_, [&](int64_t x, int) {
      const int64_t b = x / H_, h = x % H_;
      float* S = score_rows(x) + col0_[j];  // (T, T_j) at leading dimension L
      if (!visible(b, j)) {
        for (int t = 0; t < T_; ++t) std::fill_n(S + t * L, Tj, lse ? 0.0f : kNegInf);
        return;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T_, Tj, d_, scale,
                  s.qkv + b * T_ * W + h * d_, int(W), k + (b * Hkv_ + kv_head(int(h))) * Tj * d_,
                  d_, 0.0f, S, int(L));
      for (int t = 0; t < T_; ++t) {
        float* row = S + t * L;
        if (masking) {
          int64_t lo, hi;
          key_range(s, b, int(t), lo, hi);
          for (int c = 0; c < Tj; ++c)
            if (kp[c] < lo || kp[c] > hi) row[c] = kNegInf;
        }
        if (lse) {
          const float l = lse[x * T_ + t];
          if (l == kNegInf) {
            std::fill_n(row, Tj, 0.0f);
          } else {
            for (int c = 0; c < Tj; ++c) row[c] = std::exp(row[c] - l);  // exp(−inf) = 0
          }
        }
      }
    });
  }

  // Softmax over every full row (L columns): LSE = m + log Σ exp(S − m) with m the row
  // max, then the buffer holds P̃ = exp(S − LSE)·dropout factor. A row that sees no key
  // (all −inf) gets LSE = −inf and P = 0.
  void softmax_rows(const AttnShard& s, float* lse) {
    const AttnParams key = dropout_key(s);
    const bool drop = s.dropout_p > 0.0f;
    const int64_t rows = int64_t(B_) * H_ * T_, L = L_;
    float* scores = scores_.data();
#pragma omp parallel for schedule(static) num_threads(nt_)
    for (int64_t r = 0; r < rows; ++r) {  // r = (b, h, t), lse's (B, H, T) order
      float* row = scores + r * L;
      const int h = int(r / T_ % H_);
      const int64_t qpos = s.pos[r % T_];
      float m = kNegInf;
      for (int64_t c = 0; c < L; ++c) m = std::max(m, row[c]);
      if (m == kNegInf) {
        lse[r] = kNegInf;
        std::fill_n(row, L, 0.0f);
        continue;
      }
      double sum = 0.0;
      for (int64_t c = 0; c < L; ++c) sum += std::exp(row[c] - m);
      const float l = m + float(std::log(sum));
      lse[r] = l;
      for (int64_t c = 0; c < L; ++c) {
        float p = std::exp(row[c] - l);
        if (drop && p != 0.0f) p *= attention_dropout_factor(key, h, qpos, kpos_[c]);
        row[c] = p;
      }
    }
  }

  // O_i[:, h] += P̃_ij V_j for every head.
  void pv_block(int j, const float* v, float* o) const {
    const int64_t HD = int64_t(H_) * d_;
    parallel(int64_t(B_) * H_, [&](int64_t x, int) {
      const int64_t b = x / H_, h = x % H_;
      if (!visible(b, j)) return;  // P̃_ij = 0
      const int Tj = len_[j];
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T_, d_, Tj, 1.0f,
                  score_rows(x) + col0_[j], int(L_), v + (b * Hkv_ + kv_head(int(h))) * Tj * d_, d_,
                  1.0f, o + b * T_ * HD + h * d_, int(HD));
    });
  }

  // Δ (B, H, T) = rowsum(dO∘O); O and dO are (B, T, H, d).
  void compute_delta(const float* o, const float* dout) {
    const int64_t rows = int64_t(B_) * H_ * T_;
    float* delta = delta_.data();
#pragma omp parallel for schedule(static) num_threads(nt_)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t t = r % T_, h = r / T_ % H_, b = r / T_ / H_;
      const int64_t off = ((b * T_ + t) * H_ + h) * d_;
      float acc = 0.0f;
      for (int c = 0; c < d_; ++c) acc += dout[off + c] * o[off + c];
      delta[r] = acc;
    }
  }

  // acc (B, Hkv, T_j, d) += Σ over the query heads of each kv head's group of dhead
  // (B, H, T_j, d), for the batch rows that see block j (the others left dhead unwritten).
  void reduce_groups(int j, float* acc) const {
    const int g = H_ / Hkv_;
    const float* dh = dhead_.data();
    parallel(int64_t(B_) * Hkv_, [&](int64_t x, int) {
      const int64_t b = x / Hkv_, kh = x % Hkv_, n = int64_t(len_[j]) * d_;
      if (!visible(b, j)) return;
      float* dst = acc + x * n;
      for (int hh = 0; hh < g; ++hh) {
        const float* src = dh + (b * H_ + kh * g + hh) * n;
        for (int64_t e = 0; e < n; ++e) dst[e] += src[e];
      }
    });
  }

  // V_j arrived: dP = (dO_i V_jᵀ)∘mask row chunk by row chunk in a per-thread tile;
  // P_ij is replaced by dS_ij = P∘(dP − Δ) and dV_j += P̃_ijᵀ dO_i (per head, then summed
  // over the GQA group into acc).
  void ds_dv_block(const AttnShard& s, int j, const float* v, const float* dout, float* acc) const {
    const AttnParams key = dropout_key(s);
    const bool drop = s.dropout_p > 0.0f;
    const int64_t HD = int64_t(H_) * d_, L = L_;
    const int Tj = len_[j];
    const int64_t* kp = kpos_.data() + col0_[j];
    parallel(int64_t(B_) * H_, [&](int64_t x, int tid) {
      const int64_t b = x / H_;
      const int h = int(x % H_);
      if (!visible(b, j)) return;  // P_ij = 0: dS_ij = 0 and no dV contribution
      const float* vj = v + (b * Hkv_ + kv_head(h)) * Tj * d_;
      float* tile = tile_.data() + int64_t(tid) * rows_chunk_ * t_max_;  // (rows, T_j)
      float* dv = dhead_.data() + x * Tj * d_;                           // (T_j, d)
      for (int t0 = 0; t0 < T_; t0 += rows_chunk_) {
        const int rows = std::min(rows_chunk_, T_ - t0);
        const float* dO = dout + (b * T_ + t0) * HD + int64_t(h) * d_;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, Tj, d_, 1.0f, dO, int(HD), vj,
                    d_, 0.0f, tile, Tj);
        for (int t = 0; t < rows; ++t) {
          float* prow = score_rows(x) + (t0 + t) * L + col0_[j];
          float* trow = tile + int64_t(t) * Tj;
          const float dl = delta_.data()[x * T_ + t0 + t];
          const int64_t qpos = s.pos[t0 + t];
          for (int c = 0; c < Tj; ++c) {
            const float p = prow[c];
            if (p == 0.0f) {
              trow[c] = 0.0f;
              continue;
            }
            const float m = drop ? attention_dropout_factor(key, h, qpos, kp[c]) : 1.0f;
            prow[c] = p * (m * trow[c] - dl);  // dS
            trow[c] = p * m;                   // P̃
          }
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tj, d_, rows, 1.0f, tile, Tj, dO,
                    int(HD), t0 == 0 ? 0.0f : 1.0f, dv, d_);
      }
    });
    reduce_groups(j, acc);
  }

  // K_j arrived: dQ_i += dS_ij K_j·scale (into dqkv), dK_j += dS_ijᵀ Q_i·scale (into acc).
  void dq_dk_block(const AttnShard& s, int j, const float* k, float scale, float* dqkv,
                   float* acc) const {
    const int64_t W = qkv_width();
    parallel(int64_t(B_) * H_, [&](int64_t x, int) {
      const int64_t b = x / H_, h = x % H_;
      if (!visible(b, j)) return;  // dS_ij = 0
      const int Tj = len_[j];
      const float* dS = score_rows(x) + col0_[j];  // (T, T_j) at leading dimension L
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T_, d_, Tj, scale, dS, int(L_),
                  k + (b * Hkv_ + kv_head(int(h))) * Tj * d_, d_, 1.0f, dqkv + b * T_ * W + h * d_,
                  int(W));
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Tj, d_, T_, scale, dS, int(L_),
                  s.qkv + b * T_ * W + h * d_, int(W), 0.0f, dhead_.data() + x * Tj * d_, d_);
    });
    reduce_groups(j, acc);
  }

  Comm* comm_;
  int N_, rank_;
  int B_, T_, H_, Hkv_, d_;
  int64_t L_;
  int nt_;
  int rows_chunk_;
  int t_max_ = 0;              // the longest block, max_j T_j
  std::vector<int> len_;       // (N) T_j, keys of block j
  std::vector<int64_t> col0_;  // (N) C_j, first score column of block j
  std::vector<int64_t> kpos_;  // (L) global position of score column C_j + t
  Buffer scores_;              // (B, H, T, L) S, then P̃ (forward) / P, then dS (backward)
  Buffer tile_;                // (threads, rows_chunk, T_max) dP / P̃ tiles
  Buffer dhead_;               // (B, H, T_max, d) per-query-head dK_j or dV_j contribution
  Buffer delta_;               // (B, H, T) Δ
  bool bf_ = false;            // blocks travel as bf16 (--precision bf16, d even)
  Buffer work_;                // bf16: (B, Hkv, T_max, d) the block being computed, fp32
  Buffer blk_[2];              // (B, Hkv, T_max, d) K_j or V_j: computing / arriving
  Buffer acc_[2];              // (B, Hkv, T_max, d) dK_j or dV_j accumulator: own / arriving

  std::vector<int64_t> kpos_sorted_;  // (L) kpos_, ascending within each block j
  MaskBounds bounds_;                 // (B, T) visible key range of this rank's rows (mask)
  std::vector<char> vis_;             // (B, N) some row of batch row b sees block j
};

}  // namespace

SEQPAR_STRATEGY_FACTORY(make_rsa_attention) {
  const int N = sp.sp_size();
  SP_CHECK(N == 1 || sp.comm != nullptr, "rsa: sp degree ", N, " without a communicator");
  SP_CHECK(H % Hkv == 0, "rsa: H=", H, " query heads must be a multiple of Hkv=", Hkv,
           " key/value heads");
  const int64_t L = checked_sequence_length("rsa", sp, T);
  return std::make_unique<RsaAttention>(arena, sp, L, B, T, H, Hkv, d);
}

}  // namespace seqpar
