// `usp`: Unified Sequence Parallelism — Ulysses × Ring on a 2-D mesh of N = u·r ranks
// (algorithm, group layout, byte formulas and memory: docs/strategies/usp.md).
//
// sp rank R = g·u + i: Ulysses group g = ranks {g·u, …, g·u + u − 1} (index i inside it),
// ring group i = ranks {i, u + i, …, (r−1)·u + i} (ring rank g). Forward:
//  1. Ulysses all-to-all inside group g (parallel/ulysses.hpp): this rank gets the
//     L_g = Σ_m T_{g·u+m} tokens of its group for its nq query heads (+ the nkv KV heads
//     they read); their global positions P_g = concat over m = 0..u−1 of
//     shard_positions(L, N, g·u + m). Any L ≥ N: shards differ by at most one unit of the
//     layout, so groups may differ in length (L_g); the all-to-alls are all-to-all-v and
//     the ring core carries blocks of their own length (workspace sized for max_g L_g).
//  2. ring attention over ring group i (parallel/ring.hpp) on those heads: every member
//     of ring group i owns the same heads, and ring step k brings the K|V block of
//     Ulysses group (g − k) mod r, positions P_{g−k}; partial (O, LSE) merge by LSE.
//  3. all-to-all back: O and LSE to sequence layout.
// Backward mirrors it: LSE, O, dO and QKV to head layout, ring backward (dQ, dK, dV +=
// into a zeroed head-layout dQKV), all-to-all dQKV back and += into dqkv (GQA replicas
// summed). The ring core computes Δ = rowsum(dO∘O) itself, so O travels to head layout
// (d floats per token and head) where pure Ulysses sends Δ (1 float); with r = 1 this
// strategy runs the kernel directly and moves exactly what `ulysses` moves.
//
// u = 1 is pure ring: the head layout is the shard itself, no copies. r = 1 is pure
// Ulysses: no ring workspace (its 5 K|V blocks would be wasted), one kernel call.
//
// Document masks and sliding windows (parallel/mask.hpp): the ring core gets the mask and
// skips hops, blocks and pieces no query of its rows can see (ring.hpp); with r = 1 the
// kernel gets each head-layout row's visible key range and skips invisible tiles. Calls
// that go per batch row b (several pieces) see a B = 1 view, so they get row b's own
// mask (one-row SeqMask, ring) or row b's key ranges (kernel); each such ring call then
// follows row b's own hop schedule.
//
// Byte counts: the traffic runs on two sub-communicators made here with Comm::split;
// comm/ counts it on them, so after every call their counters are added into the sp
// comm's (fold_stats) and the sp comm's stats() hold the whole volume, which equals the
// analytic bytes_forward / bytes_backward (computed from shapes and the mask, never from
// counters).
#include <algorithm>
#include <memory>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"
#include "parallel/ring.hpp"
#include "parallel/strategies.hpp"
#include "parallel/ulysses.hpp"

namespace seqpar {
namespace {

// The default Ulysses degree: the largest u | N that divides Hkv (and so H, since
// Hkv | H), i.e. as much all-to-all as the heads allow without uneven head groups or
// KV replication; u = 1 (pure ring) when nothing else fits.
int auto_ulysses(int N, int H, int Hkv) {
  for (int u = N; u > 1; --u)
    if (N % u == 0 && H % u == 0 && Hkv % u == 0) return u;
  return 1;
}

// Adds what comm/ counted on a sub-communicator into its parent's counters and clears it.
void fold_stats(Comm& sub, Comm* parent) {
  if (!sub.valid() || parent == nullptr) return;
  CommStats& from = sub.stats();
  CommStats& to = parent->stats();
  for (const auto& [op, bytes] : from.bytes_sent) to.bytes_sent[op] += bytes;
  for (const auto& [op, n] : from.calls) to.calls[op] += n;
  from.reset();
}

class UspAttention final : public AttentionStrategy {
 public:
  UspAttention(Arena& arena, const SpSetup& sp, int64_t L, int u, int B, int H, int Hkv, int d)
      : parent_(sp.comm),
        N_(sp.sp_size()),
        R_(sp.sp_rank()),
        u_(u),
        r_(N_ / u),
        g_(R_ / u),
        i_(R_ % u),
        L_(L),
        plan_(make_ulysses_plan(u, R_ % u, B, group_lens(L, sp, u, R_ / u), H, Hkv, d)),
        Lg_(plan_.L()),
        nq_(plan_.nq[i_]),
        nkv_(plan_.nkv[i_]),
        wq_(nq_ + 2 * nkv_) {
    // Sub-communicators: collective over the sp group; every rank takes the same branch.
    if (u_ > 1) ucomm_ = parent_->split(g_, i_, "usp-ulysses");
    if (r_ > 1) rcomm_ = parent_->split(i_, g_, "usp-ring");
    // P_g for every Ulysses group g (small metadata: L int64 in all, as `ring` keeps).
    int64_t Lg_max = 0;
    for (int g = 0; g < r_; ++g) {
      std::vector<int64_t> pg;
      for (int m = 0; m < u_; ++m) {
        const std::vector<int64_t> pm = shard_positions(L_, N_, g * u_ + m, sp.layout);
        pg.insert(pg.end(), pm.begin(), pm.end());
      }
      Lg_max = std::max(Lg_max, int64_t(pg.size()));
      kv_pos_.push_back(std::move(pg));
    }
    const size_t hl = size_t(B) * size_t(Lg_);  // tokens of the head layout, all batch rows
    if (u_ > 1) {
      buf_ = Buffer(arena, Mem::comm, plan_.exchange_floats(), "usp all-to-all slab");
      qkv_h_ = Buffer(arena, Mem::comm, hl * wq_ * d, "usp qkv (head layout)");
      dqkv_h_ = Buffer(arena, Mem::comm, hl * wq_ * d, "usp dqkv (head layout)");
      o_h_ = Buffer(arena, Mem::comm, hl * nq_ * d, "usp o / dO (head layout)");
      if (r_ > 1)
        oo_h_ = Buffer(arena, Mem::comm, hl * nq_ * d, "usp o for backward (head layout)");
      const int k = r_ > 1 ? 1 : 2;  // LSE (ring: Δ from O on the spot), or LSE and Δ
      stats_send_ = Buffer(arena, Mem::comm, plan_.stats_floats(k), "usp lse/delta send");
      stats_recv_ = Buffer(arena, Mem::comm, plan_.stats_floats(k), "usp lse/delta recv");
      lse_h_ = Buffer(arena, Mem::scratch, hl * nq_, "usp lse (head layout)");
      if (r_ == 1) delta_h_ = Buffer(arena, Mem::scratch, hl * nq_, "usp delta (head layout)");
    }
    if (r_ == 1) {
      delta_ = Buffer(arena, Mem::scratch, size_t(B) * H * plan_.T, "usp delta (seq layout)");
      scratch_ =
          Buffer(arena, Mem::scratch, attention_scratch_floats(d, num_threads()), "attn scratch");
    } else {
      // One ring workspace per kernel piece (pieces read disjoint KV heads, so the K|V
      // blocks add up to one of nkv heads); B = 1 when the calls go per batch row. Sized
      // for the longest group: ring rank j's block holds L_j rows.
      const int Bw = whole() ? B : 1;
      for (const UlyssesPlan::Piece& pc : plan_.pieces)
        ws_.push_back(std::make_unique<RingWorkspace>(arena, Bw, int(Lg_max), int(Lg_max), pc.nq,
                                                      pc.nkv, d, sp.precision));
    }
  }

  const char* name() const override { return "usp"; }

  // forward  = Ulysses: QKV seq→heads + O heads→seq + LSE heads→seq
  //          + ring forward on ring group, S_j = B·L_j·2·nkv·d·4 (ring rank j's block):
  //            Σ_{j≠g+1} S_j without a mask (every block but the one arriving last),
  //            else what the hop schedules move (ring_bytes below)
  uint64_t bytes_forward(const AttnShard& s) const override {
    check_shape(s);
    return plan_.bytes_seq_to_heads(UlyssesParts::qkv) + plan_.bytes_heads_to_seq(UlyssesParts::q) +
           plan_.bytes_stats_to_seq(1) + ring_bytes(s, false);
  }

  // backward = Ulysses: stats seq→heads (r > 1: LSE; r = 1: LSE, Δ) + QKV seq→heads
  //            + dO (and, r > 1, O) seq→heads + dQKV heads→seq
  //          + ring backward on ring group: Σ_{j≠g+1} S_j + Σ_{j≠g} S_j without a mask
  //            (K|V again, and every other block's dK|dV accumulator once)
  uint64_t bytes_backward(const AttnShard& s) const override {
    check_shape(s);
    const uint64_t q_moves = r_ > 1 ? 2 : 1;
    return plan_.bytes_stats_to_heads(r_ > 1 ? 1 : 2) +
           plan_.bytes_seq_to_heads(UlyssesParts::qkv) +
           q_moves * plan_.bytes_seq_to_heads(UlyssesParts::q) +
           plan_.bytes_heads_to_seq(UlyssesParts::qkv) + ring_bytes(s, true);
  }

  void forward(const AttnShard& s, float* o, float* lse) override {
    agree_on_shard(parent_, "usp", [&] { check_shard(s); });
    clear_sub_stats();
    prepare_mask(s);
    const bool ul = u_ > 1;
    const float* qkv_h = ul ? qkv_h_.data() : s.qkv;  // u = 1: head layout = sequence layout
    float* o_h = ul ? o_h_.data() : o;
    float* lse_h = ul ? lse_h_.data() : lse;
    if (ul) ulysses_seq_to_heads(uc(), plan_, UlyssesParts::qkv, s.qkv, qkv_h_.data(), buf_.data());
    for (size_t k = 0; k < plan_.pieces.size(); ++k)
      for (int b = 0; b < (whole() ? 1 : plan_.B); ++b) {
        const AttnParams p = call_params(s, plan_.pieces[k], b, qkv_h, o_h, lse_h);
        if (r_ == 1) {
          attention_forward(with_bounds(with_scratch(p), b), false);
        } else {
          ring_attention_forward(rc(), p, kv_pos_, *ws_[k], call_mask(s, b));
        }
      }
    if (ul) {
      ulysses_heads_to_seq(uc(), plan_, UlyssesParts::q, o_h_.data(), o, false, buf_.data());
      const float* lse_src = lse_h_.data();
      ulysses_stats_to_seq(uc(), plan_, 1, &lse_src, &lse, stats_send_.data(), stats_recv_.data());
    }
    fold_sub_stats();
  }

  void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                float* dqkv) override {
    agree_on_shard(parent_, "usp", [&] { check_shard(s); });
    clear_sub_stats();
    prepare_mask(s);
    const bool ul = u_ > 1;
    // Head-layout views; with u = 1 they are the caller's tensors themselves (dqkv
    // included: the kernel and the ring core both accumulate).
    const float* qkv_h = ul ? qkv_h_.data() : s.qkv;
    float* dqkv_h = ul ? dqkv_h_.data() : dqkv;
    const float* do_h = ul ? o_h_.data() : dout;
    float* lse_h = ul ? lse_h_.data() : const_cast<float*>(lse);  // read only
    // O in head layout: the ring core derives Δ from it. The kernel (r = 1) is given Δ
    // and never reads O, so its O view points at dO (in bounds, same layout).
    const float* o_h = r_ == 1 ? do_h : o;
    const float* delta_h = nullptr;
    if (r_ == 1) {
      // Δ = rowsum(dO∘O) in sequence layout, (B, H, T) like LSE; then both travel.
      AttnParams p;
      p.o = const_cast<float*>(o);  // read only
      p.o_stride = int64_t(s.H) * s.d;
      p.o_bstride = p.o_stride * s.T;
      p.B = s.B, p.Tq = s.T, p.H = s.H, p.d = s.d;
      attention_delta(delta_.data(), dout, p);
      delta_h = delta_.data();
      if (ul) {
        const float* st[2] = {lse, delta_.data()};
        float* st_h[2] = {lse_h_.data(), delta_h_.data()};
        ulysses_stats_to_heads(uc(), plan_, 2, st, st_h, stats_send_.data(), stats_recv_.data());
        delta_h = delta_h_.data();
      }
    } else if (ul) {
      ulysses_stats_to_heads(uc(), plan_, 1, &lse, &lse_h, stats_send_.data(), stats_recv_.data());
      ulysses_seq_to_heads(uc(), plan_, UlyssesParts::q, o, oo_h_.data(), buf_.data());
      o_h = oo_h_.data();
    }
    if (ul) {
      ulysses_seq_to_heads(uc(), plan_, UlyssesParts::qkv, s.qkv, qkv_h_.data(), buf_.data());
      ulysses_seq_to_heads(uc(), plan_, UlyssesParts::q, dout, o_h_.data(), buf_.data());
      std::fill_n(dqkv_h_.data(), dqkv_h_.size(), 0.0f);
    }
    for (size_t k = 0; k < plan_.pieces.size(); ++k)
      for (int b = 0; b < (whole() ? 1 : plan_.B); ++b) {
        AttnBwdParams p;
        static_cast<AttnParams&>(p) =
            call_params(s, plan_.pieces[k], b, qkv_h, const_cast<float*>(o_h), lse_h);
        // dO, dQKV and Δ share the layouts (and so the offsets) of O, QKV and LSE.
        p.dout = do_h + (p.o - o_h);
        p.dq = dqkv_h + (p.q - qkv_h);
        p.dk = dqkv_h + (p.k - qkv_h);
        p.dv = dqkv_h + (p.v - qkv_h);
        p.dq_stride = p.dkv_stride = p.q_stride;
        p.dq_bstride = p.dkv_bstride = p.q_bstride;
        if (r_ == 1) {
          p.delta = delta_h + (p.lse - lse_h);
          static_cast<AttnParams&>(p) = with_bounds(with_scratch(p), b);
          attention_backward(p);
        } else {
          ring_attention_backward(rc(), p, kv_pos_, *ws_[k], call_mask(s, b));
        }
      }
    if (ul)
      ulysses_heads_to_seq(uc(), plan_, UlyssesParts::qkv, dqkv_h_.data(), dqkv, true, buf_.data());
    fold_sub_stats();
  }

 private:
  // T_{g·u+m} for m = 0..u−1: the shard lengths of Ulysses group g's members.
  static std::vector<int> group_lens(int64_t L, const SpSetup& sp, int u, int g) {
    std::vector<int> t(u);
    for (int m = 0; m < u; ++m) t[m] = int(shard_len(L, sp.sp_size(), g * u + m, sp.layout));
    return t;
  }

  // Ring bytes of one call, following the hop schedules (parallel/ring.hpp): a block
  // travels only as far as the last ring rank that needs it, under causality, documents
  // or a window. Ring rank j's block is Ulysses group j's L_j tokens (groups may differ
  // in length). One piece: one ring call per piece over all B rows, schedule of the
  // whole mask, block S_j = B·L_j·2·nkv·d·4. Several pieces: one ring call per (row b,
  // piece), row b's own schedule; the pieces' blocks add up to one row's S_j/B, so
  //   bytes = Σ_b ring_bytes(schedule(row b), g, S/B).
  uint64_t ring_bytes(const AttnShard& s, bool backward) const {
    // blk: fp32 bytes (the dK|dV accumulators); the K|V blocks travel at half that in bf16.
    const bool bf = !ws_.empty() && ws_[0]->kv_bf16;
    auto bytes = [&](const RingSchedule& sc, const std::vector<uint64_t>& blk) {
      std::vector<uint64_t> kv = blk;
      if (bf)
        for (uint64_t& x : kv) x /= 2;
      return backward ? ring_bytes_backward(sc, g_, kv, blk) : ring_bytes_forward(sc, g_, kv);
    };
    std::vector<uint64_t> row, all;  // (r) bytes of ring rank j's block: one batch row, all B
    for (const auto& pj : kv_pos_) {
      row.push_back(uint64_t(pj.size()) * 2 * uint64_t(nkv_) * uint64_t(plan_.d) * 4);
      all.push_back(uint64_t(plan_.B) * row.back());
    }
    if (whole()) return bytes(ring_schedule(s.mask, s.causal, plan_.B, kv_pos_), all);
    uint64_t n = 0;
    for (int b = 0; b < plan_.B; ++b) {
      const SeqMask one = s.mask ? row_mask(*s.mask, b) : SeqMask{};
      n += bytes(ring_schedule(s.mask ? &one : nullptr, s.causal, 1, kv_pos_), row);
    }
    return n;
  }

  // The document mask and window of batch row b alone, for a B = 1 call.
  static SeqMask row_mask(const SeqMask& m, int b) {
    SeqMask one;
    one.B = 1;
    one.L = m.L;
    one.window = m.window;
    if (b < int(m.doc_starts.size())) one.doc_starts = {m.doc_starts[b]};
    return one;
  }

  // Per call, before any kernel or ring call: the one-row masks of per-row ring calls, or
  // the key ranges of the head-layout rows for the kernel (r = 1).
  void prepare_mask(const AttnShard& s) {
    row_masks_.clear();
    if (r_ == 1) {
      bounds_.build(s.mask, kv_pos_[g_].data(), plan_.B, int(Lg_), s.causal);
    } else if (!whole() && s.mask != nullptr) {
      for (int b = 0; b < plan_.B; ++b) row_masks_.push_back(row_mask(*s.mask, b));
    }
  }
  // The mask a ring call of batch row b (per-row calls) or of all rows gets.
  const SeqMask* call_mask(const AttnShard& s, int b) const {
    if (whole() || s.mask == nullptr) return s.mask;
    return &row_masks_[b];
  }
  // Kernel params with the key ranges of their rows: all B (one piece) or row b alone.
  AttnParams with_bounds(AttnParams p, int b) const {
    bounds_.apply(p, whole() ? 0 : int(b * Lg_));
    return p;
  }
  Comm* uc() { return ucomm_.valid() ? &ucomm_ : nullptr; }
  Comm* rc() { return rcomm_.valid() ? &rcomm_ : nullptr; }
  // One piece: one call over all B; several (uneven GQA split): one per (batch row,
  // piece), since LSE is (B, nq, L_g) contiguous and a piece's rows are contiguous only
  // inside one batch row.
  bool whole() const { return plan_.pieces.size() == 1; }

  // Counters of the sub-comms hold one call's traffic only (an exception may have left
  // a partial call's counts behind).
  void clear_sub_stats() {
    if (ucomm_.valid()) ucomm_.stats().reset();
    if (rcomm_.valid()) rcomm_.stats().reset();
  }
  void fold_sub_stats() {
    fold_stats(ucomm_, parent_);
    fold_stats(rcomm_, parent_);
  }

  void check_shape(const AttnShard& s) const {
    SP_CHECK(s.B == plan_.B && s.T == plan_.T && s.H == plan_.H && s.Hkv == plan_.Hkv &&
                 s.d == plan_.d && s.L == L_,
             "usp: shard B=", s.B, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " d=", s.d, " L=", s.L,
             ", built for B=", plan_.B, " T=", plan_.T, " H=", plan_.H, " Hkv=", plan_.Hkv,
             " d=", plan_.d, " L=", L_);
  }

  // Shape, and positions = this rank's slice of P_g (the layout the strategy was built for).
  void check_shard(const AttnShard& s) const {
    check_shape(s);
    SP_CHECK(s.pos != nullptr, "usp: shard positions are null");
    const int64_t* mine = kv_pos_[g_].data() + plan_.t0[i_];
    for (int t = 0; t < s.T; ++t)
      SP_CHECK(s.pos[t] == mine[t], "usp: token ", t, " of sp rank ", R_, " has position ",
               s.pos[t], " but the layout gives ", mine[t],
               "; the data loader and the sp setup disagree on the layout");
  }

  // Kernel / ring-core parameters of piece pc (batch row b when calls go per row) over
  // head-layout tensors qkv (B, L_g, nq + 2·nkv, d), o (B, L_g, nq, d), lse (B, nq, L_g).
  AttnParams call_params(const AttnShard& s, const UlyssesPlan::Piece& pc, int b, const float* qkv,
                         float* o, float* lse) const {
    const int d = plan_.d;
    const int64_t qs = int64_t(wq_) * d, qb = qs * Lg_;
    const int64_t os = int64_t(nq_) * d, ob = os * Lg_;
    AttnParams p = shard_kernel_params(s);  // masking and dropout keys
    p.q = qkv + b * qb + int64_t(pc.q) * d;
    p.k = qkv + b * qb + int64_t(nq_ + pc.kv) * d;
    p.v = qkv + b * qb + int64_t(nq_ + nkv_ + pc.kv) * d;
    p.o = o + b * ob + int64_t(pc.q) * d;
    p.lse = lse + (int64_t(b) * nq_ + pc.q) * Lg_;
    p.q_stride = p.kv_stride = qs;
    p.q_bstride = p.kv_bstride = qb;
    p.o_stride = os;
    p.o_bstride = ob;
    p.q_pos = p.k_pos = kv_pos_[g_].data();  // the ring core reads kv_pos_ instead of k_pos
    p.B = whole() ? plan_.B : 1;
    p.Tq = p.Tk = int(Lg_);
    p.H = pc.nq;
    p.Hkv = pc.nkv;
    // Dropout is keyed by the global head: this piece starts at model head q0[i] + pc.q.
    p.head_offset = s.head_offset + plan_.q0[i_] + pc.q;
    return p;
  }

  AttnParams with_scratch(AttnParams p) const {
    p.scratch = scratch_.data();
    p.scratch_floats = int64_t(scratch_.size());
    return p;
  }

  Comm* parent_;  // the sp group (null when N = 1); the sub-comms' counters go here
  int N_, R_;     // sp size and rank, R = g·u + i
  int u_, r_;     // Ulysses and ring degrees, N = u·r
  int g_, i_;     // Ulysses group index (= ring rank), index inside the Ulysses group
  int64_t L_;     // global sequence length
  UlyssesPlan plan_;
  int64_t Lg_;  // L_g = Σ_m T_{g·u+m}: tokens of this Ulysses group (head-layout rows, ring
                // block rows of this ring rank; other groups' blocks may be one unit apart)
  int nq_, nkv_, wq_;  // heads this rank owns in head layout; wq = nq + 2·nkv
  Comm ucomm_;         // Ulysses group (u ranks; invalid when u = 1)
  Comm rcomm_;         // ring group (r ranks; invalid when r = 1)
  std::vector<std::vector<int64_t>> kv_pos_;  // (r)(L_g) P_g of every Ulysses group
  Buffer buf_;                                // (T, Σ_m w[m], d) all-to-all staging slab
  Buffer qkv_h_;                              // (B, L_g, nq + 2·nkv, d)
  Buffer dqkv_h_;                             // (B, L_g, nq + 2·nkv, d)
  Buffer o_h_;                                // (B, L_g, nq, d): O in forward, dO in backward
  Buffer oo_h_;                               // (B, L_g, nq, d): O in backward (r > 1)
  Buffer stats_send_;                         // stats_floats(k), k = 1 (r > 1) or 2
  Buffer stats_recv_;
  Buffer lse_h_;    // (B, nq, L_g)
  Buffer delta_h_;  // (B, nq, L_g) (r = 1)
  Buffer delta_;    // (B, H, T) (r = 1)
  Buffer scratch_;  // kernel tiles (r = 1; the ring workspaces hold their own)
  std::vector<std::unique_ptr<RingWorkspace>> ws_;  // one per piece (r > 1)
  MaskBounds bounds_;               // (B, L_g) visible key range per head-layout row (r = 1)
  std::vector<SeqMask> row_masks_;  // (B) one-row masks of per-row ring calls (r > 1)
};

}  // namespace

SEQPAR_STRATEGY_FACTORY(make_usp_attention) {
  const int N = sp.sp_size();
  const int64_t L = checked_sequence_length("usp", sp, T);
  SP_CHECK(Hkv > 0 && H % Hkv == 0, "usp: H=", H, " query heads not divisible by Hkv=", Hkv,
           " key/value heads");
  SP_CHECK(sp.usp_ulysses >= 0, "usp: Ulysses degree u=", sp.usp_ulysses,
           " must be >= 0 (0 = automatic)");
  const int u = sp.usp_ulysses > 0 ? sp.usp_ulysses : auto_ulysses(N, H, Hkv);
  SP_CHECK(u <= N && N % u == 0, "usp: Ulysses degree u=", u,
           " does not divide the sequence-parallel degree sp=", N,
           " (need sp = u·r; valid u are the divisors of ", N, ")");
  return std::make_unique<UspAttention>(arena, sp, L, u, B, H, Hkv, d);
}

}  // namespace seqpar
