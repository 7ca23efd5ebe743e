// `allgather`: context parallelism by all-gathering K and V (the Llama 3 paper's scheme,
// Megatron's --cp-comm-type allgather). Algorithm, bytes and memory:
// docs/strategies/allgather.md.
//
// Rank r of N keeps its T query rows; every rank all-gathers the packed [K|V] shards, so
// each holds the whole sequence's keys and values as N blocks, block j at the positions
// shard_positions(L, N, j, layout). Forward runs the blocked kernel of the local queries
// against each block j that any local query can see, merging (O, LSE) by log-sum-exp
// (accumulate = true, from the "no key seen" state (0, −∞)), which is exact for any split
// of the key set. Backward gathers K|V again (nothing of size L is kept between the two
// passes), computes dQ locally and dK|dV for every block into a gathered gradient buffer,
// and reduce-scatters it, so rank j receives Σ_r (rank r's queries' contribution to
// block j):
//   dQ_r = Σ_j scale·dS_rj K_j,   dK_j = Σ_r scale·dS_rjᵀ Q_r,   dV_j = Σ_r P̃_rjᵀ dO_r.
// With GQA (Hkv < H) a K|V shard is small next to the queries, which is why this scheme is
// cheap there; it cannot overlap the gather with compute the way the ring does.
// Bytes this rank sends, S = B·T·2·Hkv·d·4:  forward (N−1)·S (all-gather),
// backward 2·(N−1)·S (all-gather + reduce-scatter). Comm memory: (2N + 1)·S/4 floats.
// --precision bf16: the K|V shards are packed and gathered as bf16 (exact: QKV is stored in
// bf16) and the kernel reads them as k16 / v16; the dK|dV buffers stay fp32. Forward
// (N−1)·S/2, backward (N−1)·S/2 + (N−1)·S; comm memory (1.5N + 1)·S/4 floats.
// Shards may differ in length (L not divisible by N): all-gather-v and reduce-scatter-v.
#include <algorithm>
#include <cstring>
#include <limits>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

class AllGatherAttention final : public AttentionStrategy {
 public:
  AllGatherAttention(Arena& arena, const SpSetup& sp, int64_t L, int B, int T, int H, int Hkv,
                     int d)
      : comm_(sp.comm && sp.comm->size() > 1 ? sp.comm : nullptr),
        N_(sp.sp_size()),
        r_(sp.sp_rank()),
        L_(L),
        B_(B),
        T_(T),
        H_(H),
        Hkv_(Hkv),
        d_(d),
        bf_(sp.precision == Precision::bf16),
        blk_(size_t(B) * T * 2 * Hkv * d),
        mine_(arena, Mem::comm, blk_, "allgather own K|V"),
        // bf16: two elements per float (2·Hkv·d per token keeps every count even).
        all_(arena, Mem::comm, size_t(B) * L * 2 * Hkv * d / (bf_ ? 2 : 1),
             "allgather K|V of every rank"),
        dall_(arena, Mem::comm, size_t(B) * L * 2 * Hkv * d, "allgather dK|dV of every rank"),
        delta_(arena, Mem::scratch, size_t(B) * H * T, "allgather delta"),
        scratch_(arena, Mem::scratch, attention_scratch_floats(d, num_threads()), "attn scratch") {
    int64_t off = 0;
    for (int j = 0; j < N_; ++j) {
      kv_pos_.push_back(shard_positions(L_, N_, j, sp.layout));
      counts_.push_back(int64_t(B) * int64_t(kv_pos_[j].size()) * 2 * Hkv * d);
      kv_counts_.push_back(counts_.back() / (bf_ ? 2 : 1));
      offsets_.push_back(off);
      off += counts_[j];
    }
    sorted_ = kv_pos_;
    for (auto& v : sorted_) std::sort(v.begin(), v.end());
    // MPI's temporaries (comm.hpp: Comm::scratch_bytes): the reduce-scatter-v of dK|dV over
    // the whole sequence (B·L·2·Hkv·d floats); the all-gather-v of K|V copies nothing.
    if (comm_)
      arena.note_outside(comm_->scratch_bytes(Coll::reduce_scatter, dall_.size() * sizeof(float)),
                         "allgather dK|dV reduce-scatter");
  }

  const char* name() const override { return "allgather"; }
  // all-gather-v: this rank's block to the N−1 others; reduce-scatter-v: every other
  // rank's block once (docs/comm.md). Even shards: (N−1)·S and 2·(N−1)·S.
  uint64_t bytes_forward(const AttnShard& s) const override {
    check_shape(s);
    return uint64_t(N_ - 1) * blk_ * (bf_ ? 2 : 4);
  }
  uint64_t bytes_backward(const AttnShard& s) const override {
    check_shape(s);
    uint64_t others = 0;
    for (int j = 0; j < N_; ++j)
      if (j != r_) others += uint64_t(counts_[j]);
    return uint64_t(N_ - 1) * blk_ * (bf_ ? 2 : 4) + others * 4;
  }

  void forward(const AttnShard& s, float* o, float* lse) override {
    agree_on_shard(comm_, "allgather", [&] { check_shard(s); });
    gather(s);
    AttnParams p = shard_self_params(s, o, lse);
    p.scratch = scratch_.data();
    p.scratch_floats = int64_t(scratch_.size());
    bounds_.build(s.mask, s.pos, s.B, s.T, s.causal);
    bounds_.apply(p);
    const int64_t hd = int64_t(H_) * d_;
    for (int64_t row = 0; row < int64_t(B_) * T_; ++row) std::fill_n(o + row * hd, hd, 0.0f);
    std::fill_n(lse, int64_t(B_) * H_ * T_, kNegInf);
    for (int j = 0; j < N_; ++j) {
      if (!needed(s, j)) continue;  // no local query sees any key of block j
      AttnParams q = p;
      point_at(q, j);
      attention_forward(q, true);
    }
  }

  void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                float* dqkv) override {
    agree_on_shard(comm_, "allgather", [&] { check_shard(s); });
    gather(s);
    AttnBwdParams p = shard_self_bwd_params(s, o, lse, dout, dqkv);
    p.scratch = scratch_.data();
    p.scratch_floats = int64_t(scratch_.size());
    attention_delta(delta_.data(), dout, p);
    p.delta = delta_.data();
    bounds_.build(s.mask, s.pos, s.B, s.T, s.causal);
    bounds_.apply(p);
    std::fill_n(dall_.data(), dall_.size(), 0.0f);
    const int64_t kvd = int64_t(Hkv_) * d_;
    for (int j = 0; j < N_; ++j) {  // ascending j: dQ's sum order is fixed
      if (!needed(s, j)) continue;
      AttnBwdParams q = p;
      point_at(q, j);
      float* g = dall_.data() + offsets_[j];
      q.dk = g;
      q.dv = g + kvd;
      q.dkv_stride = 2 * kvd;
      q.dkv_bstride = 2 * kvd * q.Tk;
      attention_backward(q);
    }
    // mine_ (B, T, 2·Hkv·d) = Σ_r block r_ of every rank's dK|dV; then into dqkv's K, V.
    if (comm_)
      comm_->reduce_scatterv_sum(dall_.data(), mine_.data(), counts_);
    else
      std::copy_n(dall_.data(), blk_, mine_.data());
    const int64_t W = int64_t(H_ + 2 * Hkv_) * d_, rows = int64_t(B_) * T_;
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (int64_t u = 0; u < rows; ++u) {
      float* dst = dqkv + u * W + int64_t(H_) * d_;  // dK then dV columns of the token
      const float* src = mine_.data() + u * 2 * kvd;
      for (int64_t c = 0; c < 2 * kvd; ++c) dst[c] += src[c];
    }
  }

 private:
  void check_shape(const AttnShard& s) const {
    SP_CHECK(s.B == B_ && s.T == T_ && s.H == H_ && s.Hkv == Hkv_ && s.d == d_,
             "allgather: shard has B=", s.B, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " d=", s.d,
             " but the strategy was built for B=", B_, " T=", T_, " H=", H_, " Hkv=", Hkv_,
             " d=", d_);
  }
  void check_shard(const AttnShard& s) const {
    check_shape(s);
    SP_CHECK(s.L == L_, "allgather: shard says L=", s.L, " but the sp group was set up for L=", L_);
    SP_CHECK(s.pos != nullptr, "allgather: shard positions are null");
    for (int t = 0; t < T_; ++t)
      SP_CHECK(s.pos[t] == kv_pos_[r_][t], "allgather: token ", t, " of rank ", r_,
               " has position ", s.pos[t], " but the layout gives ", kv_pos_[r_][t]);
  }

  // all_ (N, B, T, 2·Hkv·d) = every rank's packed [K|V] shard, in rank order.
  void gather(const AttnShard& s) {
    const int64_t W = int64_t(s.H + 2 * s.Hkv) * s.d, kvd = int64_t(s.Hkv) * s.d;
    const int64_t rows = int64_t(B_) * T_;
    float* dst = comm_ ? mine_.data() : all_.data();
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (int64_t u = 0; u < rows; ++u) {
      const float* kv = s.qkv + u * W + int64_t(s.H) * s.d;
      if (bf_)
        to_bf16(reinterpret_cast<bf16*>(dst) + u * 2 * kvd, kv, 2 * kvd);
      else
        std::memcpy(dst + u * 2 * kvd, kv, 2 * kvd * sizeof(float));
    }
    if (comm_) comm_->allgatherv(mine_.data(), all_.data(), kv_counts_);
  }

  // The kernel's view of block j of all_, at rank j's key positions.
  void point_at(AttnParams& q, int j) const {
    const int64_t kvd = int64_t(Hkv_) * d_;
    q.Tk = int(kv_pos_[j].size());
    if (bf_) {
      q.k = q.v = nullptr;
      q.k16 = reinterpret_cast<const bf16*>(all_.data()) + offsets_[j];
      q.v16 = q.k16 + kvd;
    } else {
      q.k = all_.data() + offsets_[j];
      q.v = q.k + kvd;
    }
    q.kv_stride = 2 * kvd;
    q.kv_bstride = 2 * kvd * q.Tk;
    q.k_pos = kv_pos_[j].data();
  }

  // Exact: some local query sees some key of block j under causality, documents, window.
  bool needed(const AttnShard& s, int j) const {
    return any_key_visible(s.mask, s.causal, s.B, s.pos, s.T, sorted_[j].data(),
                           int64_t(sorted_[j].size()));
  }

  Comm* comm_;  // null when N = 1
  int N_, r_;
  int64_t L_;
  int B_, T_, H_, Hkv_, d_;
  bool bf_;     // K|V shards gathered as bf16
  size_t blk_;  // elements of one packed K|V shard: B·T·2·Hkv·d
  Buffer mine_, all_, dall_, delta_, scratch_;
  std::vector<std::vector<int64_t>> kv_pos_, sorted_;  // (N)(T_j) positions of each block
  std::vector<int64_t> counts_, offsets_;  // (N) elements of block j and where it starts
  std::vector<int64_t> kv_counts_;         // (N) floats of block j's K|V as gathered
  MaskBounds bounds_;
};

}  // namespace

SEQPAR_STRATEGY_FACTORY(make_allgather_attention) {
  const int64_t L = checked_sequence_length("allgather", sp, T);
  SP_CHECK(H % Hkv == 0, "allgather: H=", H, " query heads not divisible by Hkv=", Hkv);
  return std::make_unique<AllGatherAttention>(arena, sp, L, B, T, H, Hkv, d);
}

}  // namespace seqpar
