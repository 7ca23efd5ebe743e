// `ulysses`: DeepSpeed-Ulysses. An all-to-all turns this rank's (B, T, H + 2·Hkv, d) QKV
// shard into all L = Σ_r T_r tokens of the heads it owns; the blocked kernel runs full
// attention on those heads; an all-to-all brings O and LSE back to sequence sharding.
// Any L ≥ N: shards may differ in length (T_r = shard_len(L, N, r, layout), at most one
// unit of the layout apart), the all-to-alls are all-to-all-v with per-peer counts, and
// nothing is padded, so the result is exactly local's.
// Head plan, uneven head counts and the re-layout functions: parallel/ulysses.hpp.
// Document masks and sliding windows: every head-layout row knows its global position, so
// the kernel gets each query row's visible key range [lo, hi] (parallel/mask.hpp) and skips
// the tiles no row of the tile can see; the all-to-alls move the same bytes with or
// without a mask.
//
// Backward recomputes, and sends the least that makes it exact: Δ = rowsum(dO∘O) is a
// per-(token, head) quantity, so it is computed here in sequence layout and travels with
// LSE (2 floats per token and head) instead of O (d floats). Then QKV and dO go to head
// layout, the kernel backward runs on the owned heads, and dQ, dK, dV come back and are
// added into dqkv (replicated KV heads summed). Per call, with w[r] = nq[r] + 2·nkv[r],
// T = T_me this rank's tokens and L − T = Σ_{r≠me} T_r the others' (exact sums):
//   forward  = 4·B·( T·d·Σ_{r≠me} w[r] + (L − T)·nq[me]·(d + 1) )
//   backward = 4·B·( T·d·Σ_{r≠me} (w[r] + nq[r]) + 2·T·Σ_{r≠me} nq[r] + (L − T)·d·w[me] )
// (even shards: L − T = (N−1)·T).
// Memory (floats): QKV and dQKV in head layout 2·B·L·w[me]·d, O / dO in head layout
// B·L·nq[me]·d, LSE and Δ in head layout 2·B·nq[me]·L, one staging slab T·d·Σ_r w[r], stats
// buffers, the kernel's per-thread tiles: O(L·d·H/N) per rank (docs/strategies/ulysses.md).
#include "parallel/ulysses.hpp"

#include <algorithm>
#include <cstring>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {

// ---- head plan ---------------------------------------------------------------------

UlyssesPlan make_ulysses_plan(int N, int rank, int B, const std::vector<int>& tokens, int H,
                              int Hkv, int d) {
  SP_CHECK(N >= 1 && rank >= 0 && rank < N, "ulysses plan: rank ", rank, " outside a group of ", N);
  SP_CHECK(int(tokens.size()) == N, "ulysses plan: ", tokens.size(),
           " shard lengths for a group of ", N, " ranks");
  for (int r = 0; r < N; ++r)
    SP_CHECK(tokens[r] >= 1, "ulysses plan: rank ", r, " of the group has a shard of T=", tokens[r],
             " tokens; every rank needs at least one");
  const int T = tokens[rank];
  SP_CHECK(B >= 1 && H >= 1 && Hkv >= 1 && d >= 1, "ulysses plan: shape B=", B, " H=", H,
           " Hkv=", Hkv, " d=", d, " must be positive");
  SP_CHECK(H % Hkv == 0, "ulysses plan: H=", H, " query heads not divisible by Hkv=", Hkv,
           " key/value heads");
  UlyssesPlan p;
  p.N = N, p.rank = rank, p.B = B, p.T = T, p.H = H, p.Hkv = Hkv, p.d = d;
  p.tokens = tokens;
  p.t0.resize(N);
  for (int64_t r = 0, t = 0; r < N; t += tokens[r], ++r) p.t0[r] = t;
  p.q0.resize(N), p.nq.resize(N), p.kv0.resize(N), p.nkv.resize(N);
  const int G = H / Hkv;  // query heads per KV head
  for (int r = 0, h = 0; r < N; ++r) {
    p.q0[r] = h;
    p.nq[r] = H / N + (r < H % N ? 1 : 0);
    h += p.nq[r];
    p.kv0[r] = p.nq[r] > 0 ? p.q0[r] / G : 0;
    p.nkv[r] = p.nq[r] > 0 ? (p.q0[r] + p.nq[r] - 1) / G - p.kv0[r] + 1 : 0;
  }
  // Kernel pieces: a partial group, then whole groups, then a partial group.
  const int lo = p.q0[rank], hi = lo + p.nq[rank];
  for (int h = lo; h < hi;) {
    const int g = h / G;
    UlyssesPlan::Piece pc;
    pc.q = h - lo;
    pc.kv = g - p.kv0[rank];
    if (h % G == 0 && hi - h >= G) {
      const int groups = (hi - h) / G;
      pc.nq = groups * G;
      pc.nkv = groups;
    } else {
      pc.nq = std::min(hi, (g + 1) * G) - h;
      pc.nkv = 1;
    }
    h += pc.nq;
    p.pieces.push_back(pc);
  }
  return p;
}

int64_t UlyssesPlan::exchange_floats() const {
  int64_t w = 0;
  for (int r = 0; r < N; ++r) w += width(UlyssesParts::qkv, r);
  return int64_t(T) * d * w;
}

int64_t UlyssesPlan::stats_floats(int k) const {
  return int64_t(k) * B * std::max(int64_t(H) * T, int64_t(nq[rank]) * L());
}

uint64_t UlyssesPlan::bytes_seq_to_heads(UlyssesParts p) const {
  uint64_t w = 0;
  for (int r = 0; r < N; ++r)
    if (r != rank) w += uint64_t(width(p, r));
  return 4ull * B * T * d * w;
}

uint64_t UlyssesPlan::bytes_heads_to_seq(UlyssesParts p) const {
  return 4ull * B * d * uint64_t(others_tokens()) * uint64_t(width(p, rank));
}

uint64_t UlyssesPlan::bytes_stats_to_heads(int k) const {
  uint64_t h = 0;
  for (int r = 0; r < N; ++r)
    if (r != rank) h += uint64_t(nq[r]);
  return 4ull * B * T * uint64_t(k) * h;
}

uint64_t UlyssesPlan::bytes_stats_to_seq(int k) const {
  return 4ull * B * uint64_t(k) * uint64_t(others_tokens()) * uint64_t(nq[rank]);
}

// ---- exchanges ---------------------------------------------------------------------

namespace {

void check_group(const Comm* comm, const UlyssesPlan& plan) {
  if (comm == nullptr) {
    SP_CHECK(plan.N == 1, "ulysses: no communicator for a group of ", plan.N, " ranks");
    return;
  }
  SP_CHECK(comm->size() == plan.N && comm->rank() == plan.rank, "ulysses: plan for rank ",
           plan.rank, " of ", plan.N, " used on rank ", comm->rank(), " of ", comm->size(),
           " of comm '", comm->name(), "'");
}

// alltoallv over the group; with no communicator (N = 1) the one block is copied.
void exchange(Comm* comm, const float* send, const std::vector<int64_t>& sc,
              const std::vector<int64_t>& sd, float* recv, const std::vector<int64_t>& rc,
              const std::vector<int64_t>& rd) {
  if (comm != nullptr) {
    comm->alltoallv(send, sc, sd, recv, rc, rd);
    return;
  }
  std::copy_n(send + sd[0], sc[0], recv + rd[0]);
}

// Head ranges [start, start + count) of a packed seq-layout row that rank r's slab holds,
// in slab order (Q heads, then K heads, then V heads).
struct Span {
  int start, count;
};
int spans_of(const UlyssesPlan& p, UlyssesParts parts, int r, Span* s) {
  s[0] = {p.q0[r], p.nq[r]};
  if (parts == UlyssesParts::q) return 1;
  s[1] = {p.H + p.kv0[r], p.nkv[r]};
  s[2] = {p.H + p.Hkv + p.kv0[r], p.nkv[r]};
  return 3;
}

}  // namespace

void ulysses_seq_to_heads(Comm* comm, const UlyssesPlan& plan, UlyssesParts parts, const float* x,
                          float* y, float* buf) {
  check_group(comm, plan);
  const int N = plan.N, me = plan.rank, T = plan.T, d = plan.d;
  const int64_t L = plan.L(), xw = int64_t(plan.seq_width(parts)) * d;
  const int64_t yw = int64_t(plan.width(parts, me)) * d;  // floats per token of y
  std::vector<int64_t> sc(N), sd(N), rc(N), rd(N);
  for (int64_t r = 0, off = 0; r < N; ++r) {
    sc[r] = int64_t(T) * plan.width(parts, r) * d;
    sd[r] = off;
    off += sc[r];
    rc[r] = plan.tokens[r] * yw;
    rd[r] = plan.t0[r] * yw;
  }
  for (int b = 0; b < plan.B; ++b) {
    const float* xb = x + int64_t(b) * T * xw;  // (T, seq_width, d)
    // Slab for rank r: (T, width(r), d), its heads in span order.
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (int t = 0; t < T; ++t) {
      for (int r = 0; r < N; ++r) {
        Span sp[3];
        const int ns = spans_of(plan, parts, r, sp);
        float* dst = buf + sd[r] + int64_t(t) * plan.width(parts, r) * d;
        for (int i = 0; i < ns; ++i) {
          std::copy_n(xb + t * xw + int64_t(sp[i].start) * d, int64_t(sp[i].count) * d, dst);
          dst += int64_t(sp[i].count) * d;
        }
      }
    }
    // Tokens from rank r land at rows [t0[r], t0[r] + T_r) of batch row b of y.
    exchange(comm, buf, sc, sd, y + int64_t(b) * L * yw, rc, rd);
  }
}

void ulysses_heads_to_seq(Comm* comm, const UlyssesPlan& plan, UlyssesParts parts, const float* y,
                          float* x, bool accumulate, float* buf) {
  check_group(comm, plan);
  const int N = plan.N, me = plan.rank, T = plan.T, d = plan.d;
  const int64_t L = plan.L(), xw = int64_t(plan.seq_width(parts)) * d;
  const int64_t yw = int64_t(plan.width(parts, me)) * d;
  std::vector<int64_t> sc(N), sd(N), rc(N), rd(N);
  for (int64_t r = 0, off = 0; r < N; ++r) {
    sc[r] = plan.tokens[r] * yw;  // rank r's own T_r tokens go home
    sd[r] = plan.t0[r] * yw;
    rc[r] = int64_t(T) * plan.width(parts, r) * d;
    rd[r] = off;
    off += rc[r];
  }
  for (int b = 0; b < plan.B; ++b) {
    exchange(comm, y + int64_t(b) * L * yw, sc, sd, buf, rc, rd);
    float* xb = x + int64_t(b) * T * xw;
    // Rank r's slab (T, width(r), d) scatters back into the heads of its spans; ranks
    // are visited in order per token, so replicated KV heads are summed without races.
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (int t = 0; t < T; ++t) {
      float* row = xb + t * xw;
      if (!accumulate && parts == UlyssesParts::qkv) std::fill_n(row, xw, 0.0f);
      for (int r = 0; r < N; ++r) {
        Span sp[3];
        const int ns = spans_of(plan, parts, r, sp);
        const float* src = buf + rd[r] + int64_t(t) * plan.width(parts, r) * d;
        for (int i = 0; i < ns; ++i) {
          float* dst = row + int64_t(sp[i].start) * d;
          const int64_t n = int64_t(sp[i].count) * d;
          if (accumulate || parts == UlyssesParts::qkv) {
            for (int64_t c = 0; c < n; ++c) dst[c] += src[c];
          } else {
            std::copy_n(src, n, dst);
          }
          src += n;
        }
      }
    }
  }
}

void ulysses_stats_to_heads(Comm* comm, const UlyssesPlan& plan, int k, const float* const* x,
                            float* const* y, float* send, float* recv) {
  check_group(comm, plan);
  const int N = plan.N, me = plan.rank, B = plan.B, H = plan.H, T = plan.T, nqm = plan.nq[me];
  const int64_t L = plan.L();
  std::vector<int64_t> sc(N), sd(N), rc(N), rd(N);
  for (int r = 0; r < N; ++r) {
    // to rank r: (k, B, nq[r], T); from rank r: (k, B, nq[me], T_r)
    sc[r] = int64_t(k) * B * plan.nq[r] * T;
    sd[r] = int64_t(k) * B * plan.q0[r] * T;
    rc[r] = int64_t(k) * B * nqm * plan.tokens[r];
    rd[r] = int64_t(k) * B * nqm * plan.t0[r];
  }
  for (int r = 0; r < N; ++r)
    for (int i = 0; i < k; ++i)
      for (int b = 0; b < B; ++b)
        std::copy_n(x[i] + (int64_t(b) * H + plan.q0[r]) * T, int64_t(plan.nq[r]) * T,
                    send + sd[r] + (int64_t(i) * B + b) * plan.nq[r] * T);
  exchange(comm, send, sc, sd, recv, rc, rd);
  for (int r = 0; r < N; ++r)
    for (int i = 0; i < k; ++i)
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < nqm; ++h)
          std::copy_n(recv + rd[r] + ((int64_t(i) * B + b) * nqm + h) * plan.tokens[r],
                      plan.tokens[r], y[i] + (int64_t(b) * nqm + h) * L + plan.t0[r]);
}

void ulysses_stats_to_seq(Comm* comm, const UlyssesPlan& plan, int k, const float* const* y,
                          float* const* x, float* send, float* recv) {
  check_group(comm, plan);
  const int N = plan.N, me = plan.rank, B = plan.B, H = plan.H, T = plan.T, nqm = plan.nq[me];
  const int64_t L = plan.L();
  std::vector<int64_t> sc(N), sd(N), rc(N), rd(N);
  for (int r = 0; r < N; ++r) {
    // to rank r: (k, B, nq[me], T_r) of its tokens; from rank r: (k, B, nq[r], T)
    sc[r] = int64_t(k) * B * nqm * plan.tokens[r];
    sd[r] = int64_t(k) * B * nqm * plan.t0[r];
    rc[r] = int64_t(k) * B * plan.nq[r] * T;
    rd[r] = int64_t(k) * B * plan.q0[r] * T;
  }
  for (int r = 0; r < N; ++r)
    for (int i = 0; i < k; ++i)
      for (int b = 0; b < B; ++b)
        for (int h = 0; h < nqm; ++h)
          std::copy_n(y[i] + (int64_t(b) * nqm + h) * L + plan.t0[r], plan.tokens[r],
                      send + sd[r] + ((int64_t(i) * B + b) * nqm + h) * plan.tokens[r]);
  exchange(comm, send, sc, sd, recv, rc, rd);
  for (int r = 0; r < N; ++r)
    for (int i = 0; i < k; ++i)
      for (int b = 0; b < B; ++b)
        std::copy_n(recv + rd[r] + (int64_t(i) * B + b) * plan.nq[r] * T, int64_t(plan.nq[r]) * T,
                    x[i] + (int64_t(b) * H + plan.q0[r]) * T);
}

// ---- the strategy ------------------------------------------------------------------

namespace {

class UlyssesAttention final : public AttentionStrategy {
 public:
  UlyssesAttention(Arena& arena, const SpSetup& sp, int64_t L, int B, int H, int Hkv, int d)
      : comm_(sp.comm),
        plan_(make_ulysses_plan(sp.sp_size(), sp.sp_rank(), B, shard_lens(L, sp), H, Hkv, d)),
        L_(plan_.L()),
        wq_(plan_.width(UlyssesParts::qkv, plan_.rank)),
        nq_(plan_.nq[plan_.rank]),
        pos_(arena, Mem::scratch, plan_.N > 1 ? 2 * size_t(L_) : 0, "ulysses positions (L int64)"),
        buf_(arena, Mem::comm, plan_.exchange_floats(), "ulysses all-to-all slab"),
        qkv_h_(arena, Mem::comm, size_t(B) * L_ * wq_ * d, "ulysses qkv (head layout)"),
        dqkv_h_(arena, Mem::comm, size_t(B) * L_ * wq_ * d, "ulysses dqkv (head layout)"),
        o_h_(arena, Mem::comm, size_t(B) * L_ * nq_ * d, "ulysses o / dO (head layout)"),
        stats_send_(arena, Mem::comm, plan_.stats_floats(2), "ulysses lse/delta send"),
        stats_recv_(arena, Mem::comm, plan_.stats_floats(2), "ulysses lse/delta recv"),
        lse_h_(arena, Mem::scratch, size_t(B) * nq_ * L_, "ulysses lse (head layout)"),
        delta_h_(arena, Mem::scratch, size_t(B) * nq_ * L_, "ulysses delta (head layout)"),
        delta_(arena, Mem::scratch, size_t(B) * H * plan_.T, "ulysses delta (seq layout)"),
        scratch_(arena, Mem::scratch, attention_scratch_floats(d, num_threads()), "attn scratch") {
    // The positions this rank's shard must carry (checked on every call).
    if (sp.L > 0) mine_ = shard_positions(sp.L, plan_.N, plan_.rank, sp.layout);
    // With one rank the head layout is the shard itself and its positions are s.pos.
    if (plan_.N == 1) return;
    if (arena.dry_run()) return;  // the arena hands out fake addresses: touch nothing
    // Head-layout row t0[r] + i (source rank r, local index i) has position
    // shard_positions(r)[i].
    int64_t* pos = positions();
    for (int r = 0; r < plan_.N; ++r) {
      const std::vector<int64_t> pr = shard_positions(L, plan_.N, r, sp.layout);
      std::copy(pr.begin(), pr.end(), pos + plan_.t0[r]);
    }
  }

  const char* name() const override { return "ulysses"; }

  uint64_t bytes_forward(const AttnShard& s) const override {
    check_shape(s);
    return plan_.bytes_seq_to_heads(UlyssesParts::qkv) + plan_.bytes_heads_to_seq(UlyssesParts::q) +
           plan_.bytes_stats_to_seq(1);
  }

  uint64_t bytes_backward(const AttnShard& s) const override {
    check_shape(s);
    return plan_.bytes_stats_to_heads(2) + plan_.bytes_seq_to_heads(UlyssesParts::qkv) +
           plan_.bytes_seq_to_heads(UlyssesParts::q) + plan_.bytes_heads_to_seq(UlyssesParts::qkv);
  }

  void forward(const AttnShard& s, float* o, float* lse) override {
    agree_on_shard(comm_, "ulysses", [&] { check_shape(s); });
    build_bounds(s);
    ulysses_seq_to_heads(comm_, plan_, UlyssesParts::qkv, s.qkv, qkv_h_.data(), buf_.data());
    for_each_call(s, [&](const AttnParams& p) { attention_forward(p, false); });
    ulysses_heads_to_seq(comm_, plan_, UlyssesParts::q, o_h_.data(), o, false, buf_.data());
    const float* lse_h = lse_h_.data();
    ulysses_stats_to_seq(comm_, plan_, 1, &lse_h, &lse, stats_send_.data(), stats_recv_.data());
  }

  void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                float* dqkv) override {
    agree_on_shard(comm_, "ulysses", [&] { check_shape(s); });
    build_bounds(s);
    // Δ = rowsum(dO∘O) in sequence layout, (B, H, T) like LSE.
    {
      AttnParams p;
      p.o = const_cast<float*>(o);  // read only
      p.o_stride = int64_t(s.H) * s.d;
      p.o_bstride = p.o_stride * s.T;
      p.B = s.B, p.Tq = s.T, p.H = s.H, p.d = s.d;
      attention_delta(delta_.data(), dout, p);
    }
    const float* stats[2] = {lse, delta_.data()};
    float* stats_h[2] = {lse_h_.data(), delta_h_.data()};
    ulysses_stats_to_heads(comm_, plan_, 2, stats, stats_h, stats_send_.data(), stats_recv_.data());
    ulysses_seq_to_heads(comm_, plan_, UlyssesParts::qkv, s.qkv, qkv_h_.data(), buf_.data());
    ulysses_seq_to_heads(comm_, plan_, UlyssesParts::q, dout, o_h_.data(), buf_.data());
    std::fill_n(dqkv_h_.data(), dqkv_h_.size(), 0.0f);
    for_each_call(s, [&](const AttnParams& fp) {
      AttnBwdParams p;
      static_cast<AttnParams&>(p) = fp;
      const int64_t off_o = fp.o - o_h_.data();    // same view of dO as of O
      const int64_t off_q = fp.q - qkv_h_.data();  // same views of dQ, dK, dV
      const int64_t off_k = fp.k - qkv_h_.data();
      const int64_t off_v = fp.v - qkv_h_.data();
      p.dout = o_h_.data() + off_o;
      p.delta = delta_h_.data() + (fp.lse - lse_h_.data());
      p.dq = dqkv_h_.data() + off_q;
      p.dk = dqkv_h_.data() + off_k;
      p.dv = dqkv_h_.data() + off_v;
      p.dq_stride = p.dkv_stride = fp.q_stride;
      p.dq_bstride = p.dkv_bstride = fp.q_bstride;
      attention_backward(p);
    });
    ulysses_heads_to_seq(comm_, plan_, UlyssesParts::qkv, dqkv_h_.data(), dqkv, true, buf_.data());
  }

 private:
  // T_r of every rank of the sp group (the factory has checked this rank's).
  static std::vector<int> shard_lens(int64_t L, const SpSetup& sp) {
    std::vector<int> t(sp.sp_size());
    for (int r = 0; r < sp.sp_size(); ++r) t[r] = int(shard_len(L, sp.sp_size(), r, sp.layout));
    return t;
  }

  int64_t* positions() const { return reinterpret_cast<int64_t*>(pos_.data()); }

  void check_shape(const AttnShard& s) const {
    SP_CHECK(s.B == plan_.B && s.T == plan_.T && s.H == plan_.H && s.Hkv == plan_.Hkv &&
                 s.d == plan_.d && s.L == L_,
             "ulysses: shard B=", s.B, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " d=", s.d,
             " L=", s.L, ", built for B=", plan_.B, " T=", plan_.T, " H=", plan_.H,
             " Hkv=", plan_.Hkv, " d=", plan_.d, " L=", L_);
    SP_CHECK(s.pos != nullptr, "ulysses: shard positions are null");
    for (int t = 0; t < s.T && !mine_.empty(); ++t)
      SP_CHECK(s.pos[t] == mine_[t], "ulysses: token ", t, " of rank ", plan_.rank,
               " has position ", s.pos[t], " but the layout gives ", mine_[t],
               "; the data loader and the sp setup disagree on the layout");
  }

  // Visible key range of every head-layout query row (all L positions, all B rows) under
  // the shard's document mask / window; inactive without one (causality alone).
  void build_bounds(const AttnShard& s) {
    bounds_.build(s.mask, plan_.N > 1 ? positions() : s.pos, plan_.B, int(L_), s.causal);
  }

  // Calls fn with the kernel parameters of each piece of this rank's heads, reading
  // qkv_h_ and writing o_h_ / lse_h_. One piece: one call over all B. Several pieces
  // (uneven GQA split): one call per (batch row, piece), because LSE is (B, nq, L)
  // contiguous and a piece's rows are contiguous only within one batch row; such a call
  // (B = 1) reads the key ranges of its own row b, at offset b·L of the (B, L) bounds.
  template <class Fn>
  void for_each_call(const AttnShard& s, Fn&& fn) {
    const int d = plan_.d;
    const int64_t qs = int64_t(wq_) * d, qb = qs * L_;
    const int64_t os = int64_t(nq_) * d, ob = os * L_;
    const int64_t nkv = plan_.nkv[plan_.rank];
    const bool whole = plan_.pieces.size() == 1;
    for (const UlyssesPlan::Piece& pc : plan_.pieces)
      for (int b = 0; b < (whole ? 1 : plan_.B); ++b) {
        AttnParams p = shard_kernel_params(s);  // masking and dropout keys
        p.q = qkv_h_.data() + b * qb + int64_t(pc.q) * d;
        p.k = qkv_h_.data() + b * qb + (nq_ + pc.kv) * int64_t(d);
        p.v = qkv_h_.data() + b * qb + (nq_ + nkv + pc.kv) * int64_t(d);
        p.o = o_h_.data() + b * ob + int64_t(pc.q) * d;
        p.lse = lse_h_.data() + (int64_t(b) * nq_ + pc.q) * L_;
        p.q_stride = p.kv_stride = qs;
        p.q_bstride = p.kv_bstride = qb;
        p.o_stride = os;
        p.o_bstride = ob;
        p.q_pos = p.k_pos = plan_.N > 1 ? positions() : s.pos;
        p.B = whole ? plan_.B : 1;
        p.Tq = p.Tk = int(L_);
        p.H = pc.nq;
        p.Hkv = pc.nkv;
        p.head_offset =
            s.head_offset + plan_.q0[plan_.rank] + pc.q;  // dropout keyed by the global head
        p.scratch = scratch_.data();
        p.scratch_floats = int64_t(scratch_.size());
        bounds_.apply(p, whole ? 0 : int(b * L_));
        fn(p);
      }
  }

  Comm* comm_;
  UlyssesPlan plan_;
  int64_t L_;
  int wq_;                     // heads per token of this rank's head-layout QKV: nq + 2·nkv
  int nq_;                     // query heads this rank owns
  Buffer pos_;                 // (L) int64 positions of the head-layout tokens
  std::vector<int64_t> mine_;  // (T) the positions of this rank's shard in the layout
  Buffer buf_;                 // (T_me, Σ_r w[r], d) staging slab of every all-to-all
  Buffer qkv_h_;               // (B, L, nq + 2·nkv, d)
  Buffer dqkv_h_;              // (B, L, nq + 2·nkv, d)
  Buffer o_h_;                 // (B, L, nq, d): O in forward, dO in backward
  Buffer stats_send_;          // (2·B·max(H·T_me, nq·L))
  Buffer stats_recv_;          // (2·B·max(H·T_me, nq·L))
  Buffer lse_h_;               // (B, nq, L)
  Buffer delta_h_;             // (B, nq, L)
  Buffer delta_;               // (B, H, T)
  Buffer scratch_;             // kernel tiles
  MaskBounds bounds_;          // (B, L) visible key range of each head-layout query row
};

}  // namespace

SEQPAR_STRATEGY_FACTORY(make_ulysses_attention) {
  const int64_t L = checked_sequence_length("ulysses", sp, T);
  return std::make_unique<UlyssesAttention>(arena, sp, L, B, H, Hkv, d);
}

}  // namespace seqpar
