// `mqsp`: Micro-Query Sequence Parallelism (seed 000; docs/strategies/mqsp.md).
//
// Rank i keeps its K_i, V_i (T_i keys) and all-gathers the queries, so it holds Q for all
// L rows in the gathered (rank-major) order g = G_j + t, G_j = T_0 + … + T_{j−1}, row g at
// global position shard_positions(L, N, j)[t]. Shards may differ in length (any L ≥ N:
// T_j = shard_len(L, N, j)), so the gathers are all-gather-v. It then walks m micro-query
// chunks of ⌈L/m⌉ or ⌊L/m⌋
// consecutive gathered rows; chunk k covers rows [⌊kL/m⌋, ⌊(k+1)L/m⌋), so its rows belong
// to a contiguous range of ranks (one "segment" per owner) whatever the layout. Per chunk,
// for every (b, h) at once, with S the chunk's column block of scores against the local keys:
//
//   S = Q_c K_iᵀ/√d (+ causal mask by global position)          (c × T_i per head)
//   M   = allreduce_max_i  rowmax(S)                              (B·H·c floats)
//   E   = exp(S − M),  Σ = allreduce_sum_i rowsum(E)              (B·H·c floats)
//   P   = E / Σ,  P̃ = P∘keep/(1−p)  (dropout keyed by global positions)
//   O_c = Σ_i P̃ V_i, reduced segment by segment onto each owner   (reduce, rotating roots)
//   LSE = M + log Σ  (every rank has M, Σ; the owner stores its rows)
//
// which is the paper's distributed softmax (row max, then row sum). The score buffer
// (B, H, ⌈L/m⌉, T_i) is the same memory for every chunk: O(B·H·L²/(N·m)).
//
// Backward all-gathers [Q | dO | LSE | Δ] in one call (Q again: one strategy object serves
// every layer, so the forward's gathered Q is gone by then), then recomputes each chunk:
//   P = exp(S − LSE),  dP = dO_c V_iᵀ,  dS = P∘(dP∘keep/(1−p) − Δ),
//   dV_i += P̃ᵀ dO_c,  dK_i += dSᵀ Q_c/√d   (local, straight into dqkv),
//   dQ_c = dS K_i/√d partial, reduced onto the owner of each segment, added into dqkv.
//
// Masks. Query row g of batch row b sees key j iff lo_b(g) ≤ pos_j ≤ hi_b(g), the visible
// range of parallel/mask.hpp (document, window, causal; causal alone: (−∞, pos_g]). Masked
// scores are −∞ (forward) and P = 0 (backward), element by element. A (segment, b) whose
// rows see none of this rank's keys (decided exactly per row from the sorted local key
// positions) skips its GEMMs; every collective runs unchanged, so the bytes do not depend
// on the mask.
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

// ⌊bytes·num/den⌋, the rounding comm/ applies to all-reduce and reduce (docs/comm.md).
uint64_t scaled(uint64_t bytes, uint64_t num, uint64_t den) {
  return static_cast<uint64_t>(static_cast<unsigned __int128>(bytes) * num / den);
}

// Rows [t0, t0 + len) of rank `owner`, at rows [off, off + len) of a chunk.
struct Segment {
  int owner = 0, t0 = 0, len = 0, off = 0;
  int id = 0;  // index over all chunks' segments (the per-call live_ table)
};

// One micro-query chunk: gathered rows [g0, g0 + rows).
struct Chunk {
  int64_t g0 = 0;
  int rows = 0;
  std::vector<Segment> segs;
};

class MqspAttention final : public AttentionStrategy {
 public:
  MqspAttention(Arena& arena, const SpSetup& sp, int64_t L, int B, int T, int H, int Hkv, int d)
      : comm_(sp.comm),
        N_(sp.sp_size()),
        rank_(sp.sp_rank()),
        B_(B),
        T_(T),
        H_(H),
        Hkv_(Hkv),
        d_(d),
        L_(L) {
    SP_CHECK(H % Hkv == 0, "mqsp: H=", H, " not divisible by Hkv=", Hkv);
    // Every rank's positions, in gathered order, and where its rows start (metadata, made
    // once): rank j holds T_j = shard_len(L, N, j) rows, gathered at G_j = Σ_{j'<j} T_j'.
    all_pos_.reserve(L_);
    for (int j = 0; j < N_; ++j) {
      const std::vector<int64_t> pj = shard_positions(L_, N_, j, sp.layout);
      rows_.push_back(int(pj.size()));
      row0_.push_back(int64_t(all_pos_.size()));
      all_pos_.insert(all_pos_.end(), pj.begin(), pj.end());
    }
    row0_.push_back(L_);  // the factory checked T = T_rank
    m_ = sp.mqsp_micro == 0 ? N_ : sp.mqsp_micro;
    SP_CHECK(m_ >= 1 && m_ <= L_, "mqsp: micro-query count m=", m_, " must be in [1, L=", L_,
             "] (0 selects m = sp = ", N_, ")");
    build_chunks();
    // This rank's key positions, sorted (the per-row visibility search).
    keys_sorted_.assign(all_pos_.begin() + row0_[rank_], all_pos_.begin() + row0_[rank_] + T);
    std::sort(keys_sorted_.begin(), keys_sorted_.end());

    const int64_t HD = int64_t(H) * d;
    // Rank j's blocks of the two all-gather-v calls: Q (B, T_j, H, d) forward, and
    // [Q | dO | LSE | Δ] backward; both start at B·G_j·(…) since the slabs are rank-major.
    for (int j = 0; j < N_; ++j) {
      q_counts_.push_back(int64_t(B) * rows_[j] * HD);
      pack_counts_.push_back(pack_floats(rows_[j]));
    }
    nt_ = std::max(1, std::min(num_threads(), B * Hkv));
    if (N_ > 1) {
      pack_ = Buffer(arena, Mem::comm, pack_floats(T), "mqsp all-gather send");
      recv_ = Buffer(arena, Mem::comm, size_t(max_seg_) * B * HD, "mqsp reduce recv");
    }
    gath_ = Buffer(arena, Mem::comm, pack_floats(L_), "mqsp gathered Q|dO|LSE|delta");
    part_ = Buffer(arena, Mem::comm, size_t(c_max_) * B * HD, "mqsp partial O/dQ");
    stats_ = Buffer(arena, Mem::comm, 2 * size_t(B) * H * c_max_, "mqsp row max/sum");
    scores_ = Buffer(arena, Mem::scratch, size_t(B) * H * c_max_ * T, "mqsp scores");
    dp_ = Buffer(arena, Mem::scratch, size_t(nt_) * c_max_ * T, "mqsp dP");
    // MPI's temporaries (comm.hpp: Comm::scratch_bytes): the row statistics' all-reduces
    // (B·H·c floats) and the reduce of a segment onto its owner (up to max_seg·B·H·d
    // floats), one at a time; the all-gather-v copies nothing.
    if (N_ > 1)
      arena.note_outside(
          std::max(comm_->scratch_bytes(Coll::allreduce, uint64_t(B) * H * c_max_ * sizeof(float)),
                   comm_->scratch_bytes(Coll::reduce, uint64_t(max_seg_) * B * HD * sizeof(float))),
          "mqsp statistics all-reduce and segment reduce");
  }

  const char* name() const override { return "mqsp"; }

  // Forward: all-gather-v Q (this rank's B·T_i·H·d floats to each of the N−1 others), then
  // per chunk all-reduce max and sum (B·H·c floats each) and reduce each owner segment of
  // the partial O (len·B·H·d floats).
  uint64_t bytes_forward(const AttnShard& s) const override {
    if (N_ == 1) return 0;
    const uint64_t n = N_, HD = uint64_t(s.H) * s.d;
    uint64_t bytes = (n - 1) * uint64_t(q_counts_[rank_]) * 4;
    for (const Chunk& ch : chunks_) {
      bytes += 2 * scaled(uint64_t(s.B) * s.H * ch.rows * 4, 2 * (n - 1), n);
      for (const Segment& sg : ch.segs) bytes += scaled(uint64_t(sg.len) * s.B * HD * 4, n - 1, n);
    }
    return bytes;
  }

  // Backward: all-gather-v [Q | dO | LSE | Δ] (B·T_i·H·(2d + 2) floats from this rank),
  // then per chunk reduce each owner segment of the partial dQ (len·B·H·d floats).
  uint64_t bytes_backward(const AttnShard& s) const override {
    if (N_ == 1) return 0;
    const uint64_t n = N_, HD = uint64_t(s.H) * s.d;
    uint64_t bytes = (n - 1) * uint64_t(pack_counts_[rank_]) * 4;
    for (const Chunk& ch : chunks_)
      for (const Segment& sg : ch.segs) bytes += scaled(uint64_t(sg.len) * s.B * HD * 4, n - 1, n);
    return bytes;
  }

  void forward(const AttnShard& s, float* o, float* lse) override {
    agree_on_shard(comm_, "mqsp", [&] { check_shard(s); });
    prepare_mask(s);
    const int B = B_, T = T_, H = H_, d = d_, group = H_ / Hkv_;
    const int64_t HD = int64_t(H) * d, W = int64_t(H + 2 * Hkv_) * d;
    const int64_t BHD = int64_t(B) * HD, cT = int64_t(c_max_) * T;
    const float scale = 1.0f / std::sqrt(float(d));
    const AttnParams drop = dropout_params(s);
    const bool masking = s.causal || bounds_.active();
    const int ft = std::max(1, std::min(num_threads(), B * H));

    // All-gather-v Q: rank j's block (B, T_j, H, d) lands at gath + B·G_j·H·d.
    float* gath = gath_.data();
    float* send = N_ > 1 ? pack_.data() : gath;
    for (int64_t bt = 0; bt < int64_t(B) * T; ++bt)
      std::memcpy(send + bt * HD, s.qkv + bt * W, sizeof(float) * HD);
    if (N_ > 1) comm_->allgatherv(send, gath, q_counts_);

    BlasSingleThread blas_one;
    for (const Chunk& ch : chunks_) {
      const int c = ch.rows;
      float* mx = stats_.data();                       // (B, H, c) row max, then global
      float* sm = stats_.data() + int64_t(B) * H * c;  // (B, H, c) row sum, then global
#pragma omp parallel for schedule(dynamic, 1) num_threads(ft)
      // (1) S = Q_c K_iᵀ·scale, mask (−∞ outside [lo, hi]), local row max
      for (int u = 0; u < B * H; ++u) {
        const int b = u / H, h = u % H, hk = h / group;
        float* S = scores_.data() + u * cT;  // (c, T)
        const float* k = s.qkv + int64_t(b) * T * W + HD + int64_t(hk) * d;
        for (const Segment& sg : ch.segs) {
          float* Sg = S + int64_t(sg.off) * T;
          if (!live(b, sg)) {  // no row of the segment sees any local key
            std::fill(Sg, Sg + int64_t(sg.len) * T, kNegInf);
            continue;
          }
          const int To = rows_[sg.owner];  // the owner's block is (B, T_owner, H, d)
          const float* q = gath + int64_t(B) * row0_[sg.owner] * HD +
                           (int64_t(b) * To + sg.t0) * HD + int64_t(h) * d;
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, sg.len, T, d, scale, q, HD, k, W,
                      0.0f, Sg, T);
        }
        for (int r = 0; r < c; ++r) {
          float* Sr = S + int64_t(r) * T;
          float m = kNegInf;
          if (masking) {
            int64_t lo, hi;
            key_range(b, ch.g0 + r, s.causal, lo, hi);
            for (int j = 0; j < T; ++j) Sr[j] = s.pos[j] < lo || s.pos[j] > hi ? kNegInf : Sr[j];
          }
          for (int j = 0; j < T; ++j) m = std::max(m, Sr[j]);
          mx[int64_t(u) * c + r] = m;
        }
      }
      if (N_ > 1) comm_->allreduce_max(mx, size_t(B) * H * c);
#pragma omp parallel for schedule(dynamic, 1) num_threads(ft)
      // (2) E = exp(S − M), local row sum
      for (int u = 0; u < B * H; ++u) {
        float* S = scores_.data() + u * cT;
        for (int r = 0; r < c; ++r) {
          float* Sr = S + int64_t(r) * T;
          const float M = mx[int64_t(u) * c + r];
          const float mu = M == kNegInf ? 0.0f : M;  // a row no rank can see: E = 0
          float sum = 0.0f;
          for (int j = 0; j < T; ++j) {
            Sr[j] = std::exp(Sr[j] - mu);
            sum += Sr[j];
          }
          sm[int64_t(u) * c + r] = sum;
        }
      }
      if (N_ > 1) comm_->allreduce_sum(sm, size_t(B) * H * c);
#pragma omp parallel for schedule(dynamic, 1) num_threads(ft)
      // (3) P̃ = E/Σ·keep/(1−p);  partial O_c (c, B, H, d) = P̃ V_i
      for (int u = 0; u < B * H; ++u) {
        const int b = u / H, h = u % H, hk = h / group;
        float* S = scores_.data() + u * cT;
        for (int r = 0; r < c; ++r) {
          float* Sr = S + int64_t(r) * T;
          const float sum = sm[int64_t(u) * c + r];
          const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
          for (int j = 0; j < T; ++j) Sr[j] *= inv;
          if (s.dropout_p > 0.0f) {
            const int64_t qp = all_pos_[ch.g0 + r];
            for (int j = 0; j < T; ++j) Sr[j] *= attention_dropout_factor(drop, h, qp, s.pos[j]);
          }
        }
        const float* v = s.qkv + int64_t(b) * T * W + HD + int64_t(Hkv_) * d + int64_t(hk) * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, d, T, 1.0f, S, T, v, W, 0.0f,
                    part_.data() + int64_t(u) * d, BHD);
      }
      // (4) O rows summed on their owner; LSE = M + log Σ from the global statistics
      for (const Segment& sg : ch.segs) {
        const float* src = reduce_segment(sg);
        if (sg.owner != rank_) continue;
        for (int r = 0; r < sg.len; ++r)
          for (int b = 0; b < B; ++b)
            for (int h = 0; h < H; ++h) {
              const int64_t t = sg.t0 + r, u = int64_t(b) * H + h;
              std::memcpy(o + (b * T + t) * HD + int64_t(h) * d,
                          src + (int64_t(r) * B + b) * HD + h * d, sizeof(float) * d);
              const float M = mx[u * c + sg.off + r], sum = sm[u * c + sg.off + r];
              lse[u * T + t] = sum > 0.0f ? M + std::log(sum) : kNegInf;
            }
      }
    }
  }

  void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                float* dqkv) override {
    agree_on_shard(comm_, "mqsp", [&] { check_shard(s); });
    prepare_mask(s);
    const int B = B_, T = T_, H = H_, d = d_, group = H_ / Hkv_;
    const int64_t HD = int64_t(H) * d, W = int64_t(H + 2 * Hkv_) * d, QB = int64_t(B) * T * HD;
    const int64_t BHD = int64_t(B) * HD, cT = int64_t(c_max_) * T;
    const float scale = 1.0f / std::sqrt(float(d));
    const AttnParams drop = dropout_params(s);

    // Pack [Q (B,T,H,d) | dO (B,T,H,d) | LSE (B,H,T) | Δ (B,H,T)] and all-gather-v it:
    // rank j's block (T_j rows) lands at gath + pack_floats(G_j).
    float* gath = gath_.data();
    float* send = N_ > 1 ? pack_.data() : gath;
    for (int64_t bt = 0; bt < int64_t(B) * T; ++bt) {
      std::memcpy(send + bt * HD, s.qkv + bt * W, sizeof(float) * HD);
      std::memcpy(send + QB + bt * HD, dout + bt * HD, sizeof(float) * HD);
    }
    std::memcpy(send + 2 * QB, lse, sizeof(float) * B * H * T);
    float* delta = send + 2 * QB + int64_t(B) * H * T;  // Δ = rowsum(dO∘O)
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (int64_t u = 0; u < int64_t(B) * H * T; ++u) {
      const int64_t t = u % T, h = u / T % H, b = u / T / H;
      const float* a = dout + (b * T + t) * HD + h * d;
      const float* z = o + (b * T + t) * HD + h * d;
      float acc = 0.0f;
      for (int x = 0; x < d; ++x) acc += a[x] * z[x];
      delta[u] = acc;
    }
    if (N_ > 1) comm_->allgatherv(send, gath, pack_counts_);

    BlasSingleThread blas_one;
    for (const Chunk& ch : chunks_) {
      const int c = ch.rows;
      // One unit per (b, kv head): it alone writes that head's dK_i, dV_i rows.
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt_)
      for (int u = 0; u < B * Hkv_; ++u) {
        const int b = u / Hkv_, hk = u % Hkv_;
        float* dP = dp_.data() + omp_get_thread_num() * cT;  // (c, T)
        const float* k = s.qkv + int64_t(b) * T * W + HD + int64_t(hk) * d;
        const float* v = k + int64_t(Hkv_) * d;
        float* dk = dqkv + int64_t(b) * T * W + HD + int64_t(hk) * d;
        float* dv = dk + int64_t(Hkv_) * d;
        for (int h = hk * group; h < (hk + 1) * group; ++h) {
          float* S = scores_.data() + (int64_t(b) * H + h) * cT;  // (c, T): S → P̃
          for (const Segment& sg : ch.segs) {
            float* Sg = S + int64_t(sg.off) * T;
            float* dPg = dP + int64_t(sg.off) * T;
            if (!live(b, sg)) {  // no visible key: P = dS = 0
              std::fill(Sg, Sg + int64_t(sg.len) * T, 0.0f);
              std::fill(dPg, dPg + int64_t(sg.len) * T, 0.0f);
              continue;
            }
            // the owner's block: [Q | dO (B, To, H, d) | LSE | Δ (B, H, To)]
            const int To = rows_[sg.owner];
            const int64_t QBo = int64_t(B) * To * HD;
            const float* blk = gath + pack_floats(row0_[sg.owner]);
            const int64_t row0 = (int64_t(b) * To + sg.t0) * HD + int64_t(h) * d;
            const float* q = blk + row0;
            const float* g = blk + QBo + row0;
            const float* ls = blk + 2 * QBo + (int64_t(b) * H + h) * To + sg.t0;
            const float* dl = ls + int64_t(B) * H * To;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, sg.len, T, d, scale, q, HD, k, W,
                        0.0f, Sg, T);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, sg.len, T, d, 1.0f, g, HD, v, W,
                        0.0f, dPg, T);
            for (int r = 0; r < sg.len; ++r) {
              float* Sr = Sg + int64_t(r) * T;
              float* dPr = dPg + int64_t(r) * T;
              const int64_t qp = all_pos_[ch.g0 + sg.off + r];
              int64_t lo, hi;
              key_range(b, ch.g0 + sg.off + r, s.causal, lo, hi);
              const float nl = ls[r] == kNegInf ? kNegInf : -ls[r];  // no key: P = 0
              for (int j = 0; j < T; ++j) {
                const bool masked = s.pos[j] < lo || s.pos[j] > hi;
                const float p = masked ? 0.0f : std::exp(Sr[j] + nl);
                const float f =
                    s.dropout_p > 0.0f ? attention_dropout_factor(drop, h, qp, s.pos[j]) : 1.0f;
                Sr[j] = p * f;
                dPr[j] = p * (dPr[j] * f - dl[r]);
              }
            }
            // dV_i += P̃ᵀ dO_seg;  dK_i += scale · dSᵀ Q_seg
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, d, sg.len, 1.0f, Sg, T, g, HD,
                        1.0f, dv, W);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, d, sg.len, scale, dPg, T, q, HD,
                        1.0f, dk, W);
          }
          // partial dQ_c (c, B, H, d) = scale · dS K_i
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c, d, T, scale, dP, T, k, W, 0.0f,
                      part_.data() + (int64_t(b) * H + h) * d, BHD);
        }
      }
      for (const Segment& sg : ch.segs) {
        const float* src = reduce_segment(sg);
        if (sg.owner != rank_) continue;
        for (int r = 0; r < sg.len; ++r)
          for (int b = 0; b < B; ++b) {
            float* dq = dqkv + (int64_t(b) * T + sg.t0 + r) * W;
            const float* a = src + (int64_t(r) * B + b) * HD;
            for (int64_t x = 0; x < HD; ++x) dq[x] += a[x];
          }
      }
    }
  }

 private:
  // Floats of `rows` query rows in the backward all-gather: Q, dO (B,rows,H,d) + LSE, Δ
  // (B,H,rows). One rank's block is pack_floats(T_j); it starts at pack_floats(G_j).
  int64_t pack_floats(int64_t rows) const {
    return int64_t(B_) * rows * H_ * (2 * int64_t(d_) + 2);
  }

  void build_chunks() {
    c_max_ = 0;
    max_seg_ = 0;
    for (int k = 0; k < m_; ++k) {
      Chunk ch;
      ch.g0 = int64_t(k) * L_ / m_;
      const int64_t g1 = int64_t(k + 1) * L_ / m_;
      ch.rows = int(g1 - ch.g0);
      for (int64_t g = ch.g0; g < g1;) {
        // owner of row g: the last j with G_j ≤ g (every T_j ≥ 1, so exactly one)
        const int j = int(std::upper_bound(row0_.begin(), row0_.end(), g) - row0_.begin()) - 1;
        const int64_t end = std::min<int64_t>(g1, row0_[j + 1]);
        Segment sg;
        sg.owner = j;
        sg.t0 = int(g - row0_[j]);
        sg.len = int(end - g);
        sg.off = int(g - ch.g0);
        sg.id = n_segs_++;
        ch.segs.push_back(sg);
        max_seg_ = std::max(max_seg_, sg.len);
        g = end;
      }
      c_max_ = std::max(c_max_, ch.rows);
      chunks_.push_back(std::move(ch));
    }
  }

  // Visible key range [lo, hi] of gathered query row g in batch row b: the mask's bounds,
  // or causality alone (−∞, pos_g], or everything.
  void key_range(int b, int64_t g, bool causal, int64_t& lo, int64_t& hi) const {
    if (bounds_.active()) {
      lo = bounds_.lo()[int64_t(b) * L_ + g];
      hi = bounds_.hi()[int64_t(b) * L_ + g];
      return;
    }
    lo = std::numeric_limits<int64_t>::min();
    hi = causal ? all_pos_[g] : std::numeric_limits<int64_t>::max();
  }

  // Per call: the key ranges of every gathered row under the shard's mask, and live_[b, id]
  // = whether some row of segment id (batch row b) sees some key of this rank (exact:
  // the first local key ≥ lo is ≤ hi). Without documents or a window under causality this
  // is min_j pos_j ≤ max position of the segment's rows, as before masks existed.
  void prepare_mask(const AttnShard& s) {
    bounds_.build(s.mask, all_pos_.data(), B_, int(L_), s.causal);
    live_.assign(size_t(B_) * n_segs_, 0);
    for (int b = 0; b < B_; ++b)
      for (const Chunk& ch : chunks_)
        for (const Segment& sg : ch.segs) {
          char& lv = live_[size_t(b) * n_segs_ + sg.id];
          for (int r = 0; r < sg.len && !lv; ++r) {
            int64_t lo, hi;
            key_range(b, ch.g0 + sg.off + r, s.causal, lo, hi);
            auto k = std::lower_bound(keys_sorted_.begin(), keys_sorted_.end(), lo);
            lv = k != keys_sorted_.end() && *k <= hi;
          }
        }
  }
  bool live(int b, const Segment& sg) const { return live_[size_t(b) * n_segs_ + sg.id] != 0; }

  // Sums the segment's rows of part_ (len, B, H, d) over the ranks onto its owner; returns
  // where the owner finds the sum (null elsewhere).
  const float* reduce_segment(const Segment& sg) {
    const int64_t BHD = int64_t(B_) * H_ * d_;
    const float* src = part_.data() + sg.off * BHD;
    if (N_ == 1) return src;
    float* dst = sg.owner == rank_ ? recv_.data() : nullptr;
    comm_->reduce_sum(src, dst, size_t(sg.len) * BHD, sg.owner);
    return dst;
  }

  AttnParams dropout_params(const AttnShard& s) const { return shard_kernel_params(s); }

  void check_shard(const AttnShard& s) const {
    SP_CHECK(s.B == B_ && s.T == T_ && s.H == H_ && s.Hkv == Hkv_ && s.d == d_,
             "mqsp: shard B=", s.B, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " d=", s.d,
             ", built for B=", B_, " T=", T_, " H=", H_, " Hkv=", Hkv_, " d=", d_);
    SP_CHECK(s.L == L_, "mqsp: shard L=", s.L, ", built for L=", L_);
    SP_CHECK(s.dropout_p >= 0.0f && s.dropout_p < 1.0f, "mqsp: dropout_p=", s.dropout_p,
             " outside [0, 1)");
    const int64_t* mine = all_pos_.data() + row0_[rank_];
    SP_CHECK(std::equal(mine, mine + T_, s.pos), "mqsp: rank ", rank_,
             " was given positions that are not its shard of the layout");
  }

  Comm* comm_;
  int N_, rank_, B_, T_, H_, Hkv_, d_;
  int64_t L_ = 0;
  int m_ = 1, c_max_ = 0, max_seg_ = 0, nt_ = 1, n_segs_ = 0;
  std::vector<int64_t> all_pos_;      // (L) global position of gathered row g
  std::vector<int> rows_;             // (N) T_j, rows of rank j
  std::vector<int64_t> row0_;         // (N + 1) G_j, first gathered row of rank j; G_N = L
  std::vector<int64_t> q_counts_;     // (N) floats of rank j's Q block, B·T_j·H·d
  std::vector<int64_t> pack_counts_;  // (N) floats of rank j's backward block
  std::vector<int64_t> keys_sorted_;  // (T) this rank's key positions, ascending
  std::vector<Chunk> chunks_;
  MaskBounds bounds_;       // (B, L) visible key range of each gathered row (mask only)
  std::vector<char> live_;  // (B, segments) some row of the segment sees a local key

  Buffer pack_;    // (B·T·H·(2d+2)) all-gather send (N > 1)
  Buffer gath_;    // (B·L·H·(2d+2)) gathered Q (forward) or Q|dO|LSE|Δ (backward), by rank
  Buffer part_;    // (c_max, B, H, d) partial O or dQ of one chunk
  Buffer recv_;    // (max_seg, B, H, d) owner's reduced rows (N > 1)
  Buffer stats_;   // (2, B, H, c_max) row max, row sum
  Buffer scores_;  // (B, H, c_max, T) the micro-step score buffer, reused every chunk
  Buffer dp_;      // (nt, c_max, T) backward dP/dS per thread
};

}  // namespace

SEQPAR_STRATEGY_FACTORY(make_mqsp_attention) {
  const int64_t L = checked_sequence_length("mqsp", sp, T);
  return std::make_unique<MqspAttention>(arena, sp, L, B, T, H, Hkv, d);
}

}  // namespace seqpar
