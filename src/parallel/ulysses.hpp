// DeepSpeed-Ulysses re-layout: the sequence↔head all-to-all, over any communicator of N
// ranks (the whole sp group for `ulysses`, one Ulysses group of u ranks inside `usp`).
//
// Sequence layout (what the model holds): rank r has its T_r tokens of every head,
//   x (B, T_r, H [+ 2·Hkv], d).
// Shards may differ in length (any L ≥ N, parallel/layout.hpp), so T_r is per rank.
// Head layout (what attention wants): each rank has all L = Σ_r T_r tokens of the heads
// it owns, tokens ordered by source rank then local index (rank r's at rows
// [t0[r], t0[r] + T_r), t0[r] = Σ_{r'<r} T_{r'}),
//   y (B, L, nq [+ 2·nkv], d).
// Their global positions are therefore the concatenation over ranks r = 0..N−1 of rank r's
// positions; the kernel masks by position, so any shard layout works.
//
// Head plan (uneven counts allowed, so H or Hkv need not divide by N): query heads are
// cut into N contiguous groups, the first H mod N ranks one head more,
//   nq[r] = ⌊H/N⌋ + [r < H mod N],  q0[r] = Σ_{r'<r} nq[r'],
// so some ranks own no head when H < N. With G = H/Hkv query heads per KV head (GQA),
// rank r receives the KV heads its query heads read, [⌊q0/G⌋, ⌊(q0+nq−1)/G⌋], so a KV
// head is replicated on every rank that owns one of its query heads. In the way back
// (heads_to_seq with accumulate) the replicas' dK/dV contributions are summed into the
// owner's rows.
//
// Every exchange is one alltoallv per batch row b (B calls), so the head layout is
// received straight into y and sent straight out of y: only one token-slab staging
// buffer of T_me·d·Σ_r w[r] floats is needed, w[r] = nq[r] + 2·nkv[r].
//
// Bytes this rank (index me) sends, fp32, counted as comm/ counts alltoallv (exact bytes
// to the other ranks: Σ_{r≠me} send_counts[r]·4). To rank r it sends its own T_me tokens
// of r's heads (seq→heads) or r's T_r tokens of its own heads (heads→seq):
//   seq_to_heads(q)      4·B·T_me·d·Σ_{r≠me} nq[r]
//   seq_to_heads(qkv)    4·B·T_me·d·Σ_{r≠me} (nq[r] + 2·nkv[r])
//   heads_to_seq(q)      4·B·d·nq[me]·Σ_{r≠me} T_r               (Σ_{r≠me} T_r = L − T_me)
//   heads_to_seq(qkv)    4·B·d·(nq[me] + 2·nkv[me])·Σ_{r≠me} T_r
//   stats_to_heads(k)    4·B·T_me·k·Σ_{r≠me} nq[r]
//   stats_to_seq(k)      4·B·k·nq[me]·Σ_{r≠me} T_r
// With even shards (T_r = T) Σ_{r≠me} T_r = (N−1)·T.
#pragma once
#include <cstdint>
#include <vector>

namespace seqpar {

class Comm;

// Which parts of a packed row travel: only query-head tensors (Q, O, dO, dQ: H heads per
// token) or packed QKV tensors (Q, K, V or dQ, dK, dV: H + 2·Hkv heads per token).
enum class UlyssesParts { q, qkv };

struct UlyssesPlan {
  int N = 1, rank = 0;                      // group size, this rank's index in it
  int B = 0, T = 0, H = 0, Hkv = 0, d = 0;  // T = tokens[rank]: this rank's shard
  std::vector<int> tokens;                  // (N) T_r: tokens of rank r's shard
  std::vector<int64_t> t0;                  // (N) first head-layout row of rank r's tokens
  std::vector<int> q0, nq;                  // (N) rank r owns query heads [q0[r], q0[r]+nq[r])
  std::vector<int> kv0, nkv;                // (N) rank r receives KV heads [kv0[r], kv0[r]+nkv[r])
  // This rank's heads cut into pieces the kernel can run in one call: the kernel maps
  // local query head h to local KV head h / (nq/nkv), which holds for a run of whole
  // GQA groups or for a part of one group, not for an arbitrary range. At most 3 pieces
  // (a group tail, whole groups, a group head); none when this rank owns no head.
  struct Piece {
    int q = 0, nq = 0;    // local query heads [q, q + nq) of this rank
    int kv = 0, nkv = 0;  // local KV heads [kv, kv + nkv) they read
  };
  std::vector<Piece> pieces;

  int64_t L() const { return t0[N - 1] + tokens[N - 1]; }  // Σ_r T_r
  int64_t others_tokens() const { return L() - T; }        // Σ_{r≠me} T_r
  int width(UlyssesParts p, int r) const {
    return p == UlyssesParts::q ? nq[r] : nq[r] + 2 * nkv[r];
  }
  int seq_width(UlyssesParts p) const { return p == UlyssesParts::q ? H : H + 2 * Hkv; }
  // Floats of the staging buffer `buf` of seq_to_heads / heads_to_seq (enough for qkv).
  int64_t exchange_floats() const;
  // Floats of each of the `send` and `recv` buffers of the stats exchanges for k arrays.
  int64_t stats_floats(int k) const;

  // Bytes this rank sends (formulas in the header comment).
  uint64_t bytes_seq_to_heads(UlyssesParts p) const;
  uint64_t bytes_heads_to_seq(UlyssesParts p) const;
  uint64_t bytes_stats_to_heads(int k) const;
  uint64_t bytes_stats_to_seq(int k) const;
};

// tokens: (N) T_r, the shard length of every rank of the group (every rank passes the
// same list). Throws unless H % Hkv == 0 and all sizes are positive (N ≥ 1,
// 0 ≤ rank < N, tokens.size() = N, every T_r ≥ 1).
UlyssesPlan make_ulysses_plan(int N, int rank, int B, const std::vector<int>& tokens, int H,
                              int Hkv, int d);

// x (B, T, seq_width, d) → y (B, L, width(me), d), y overwritten. buf: exchange_floats().
// comm: the group of plan.N ranks in which this rank is plan.rank; may be null iff N = 1.
// Collective: every rank of the group calls it, also those that own no head.
void ulysses_seq_to_heads(Comm* comm, const UlyssesPlan& plan, UlyssesParts parts, const float* x,
                          float* y, float* buf);

// y (B, L, width(me), d) → x (B, T, seq_width, d). accumulate = false: x overwritten;
// true: x += (for qkv, the dK/dV of a KV head held by several ranks are all added).
void ulysses_heads_to_seq(Comm* comm, const UlyssesPlan& plan, UlyssesParts parts, const float* y,
                          float* x, bool accumulate, float* buf);

// Per-(head, token) statistics such as LSE and Δ, k arrays moved in one alltoallv:
// x[i] (B, H, T) → y[i] (B, nq[me], L). send, recv: stats_floats(k) each. y overwritten.
void ulysses_stats_to_heads(Comm* comm, const UlyssesPlan& plan, int k, const float* const* x,
                            float* const* y, float* send, float* recv);
// y[i] (B, nq[me], L) → x[i] (B, H, T), x overwritten.
void ulysses_stats_to_seq(Comm* comm, const UlyssesPlan& plan, int k, const float* const* y,
                          float* const* x, float* send, float* recv);

}  // namespace seqpar
