// The activation layout: where every tensor saved for backward (per layer, and the working
// set shared by the layers under --recompute) and every backward scratch buffer lives.
// Sizes are computed here and nowhere else; the arena blocks are allocated once, at
// construction, in the order acts_, work_, scratch_ (the dry-run planner counts the same).
#include <algorithm>

#include "kernels/fused_xent.hpp"
#include "kernels/ops.hpp"
#include "model/model.hpp"

namespace seqpar {

// The widths the buffers are sized by (layout_buffers), computed once.
struct Model::BufferDims {
  int64_t N, R, C;           // sp-shard rows B·T, this tp rank's rows, width
  int64_t Wt, HDt, Ft, F1t;  // QKV, attention output, ffn and first ffn product columns
  int64_t Vt, nlog;          // this rank's vocabulary rows; logits floats (materialized)
  bool bf, mat;              // bf16 storage; materialized loss
};

void Model::layout_buffers() {
  const int64_t N = N_, R = R_, C = cfg_.C, d = cfg_.d();
  const int64_t Wt = int64_t(Ht_ + 2 * Hkvt_) * d, HDt = int64_t(Ht_) * d, Ft = Ft_;
  const int64_t F1t = cfg_.llama() ? 2 * Ft : Ft;  // first feed-forward product: [gate | up]
  const bool bf = par_.precision == Precision::bf16;
  // The head sees all N rows of the sp shard (gathered over tp under Megatron sequence
  // parallelism) and this rank's Vt vocabulary rows; the materialized loss keeps their
  // (N, Vt) logits, the fused one only per-row statistics.
  const bool mat = par_.loss == LossImpl::materialized;
  const int64_t Vt = Vt_, nlog = mat ? N * Vt : 0;
  const BufferDims k{N, R, C, Wt, HDt, Ft, F1t, Vt, nlog, bf, mat};
  layout_saved(k);
  layout_scratch(k);
}

void Model::layout_saved(const BufferDims& k) {
  const int64_t N = k.N, R = k.R, C = k.C, Wt = k.Wt, HDt = k.HDt, Ft = k.Ft, F1t = k.F1t;
  const Recompute rc = par_.recompute;
  // Bytes of each saved tensor of one layer (sizes in one place): the S tensors at the
  // storage type's es bytes per element, the statistics (mean|rstd, LSE) fp32; every slot
  // rounded up to whole floats so the fp32 ones stay aligned. (RMSNorm keeps no mean: its
  // slot is allocated all the same, 4·R bytes, to keep one layout.)
  const int64_t es = k.bf ? int64_t(sizeof(bf16)) : int64_t(sizeof(float));
  auto S_ = [&](int64_t n) { return (n * es + 3) / 4 * 4; };
  auto F_ = [](int64_t n) { return 4 * n; };
  struct Sizes {
    int64_t x_in, ln1, stats, qkv, att, lse, x_mid, ln2, fc1, gelu;
  } z{S_(R * C),   S_(R * C), F_(2 * R), S_(N * Wt),  S_(N * HDt),
      F_(N * Ht_), S_(R * C), S_(R * C), S_(N * F1t), S_(N * Ft)};
  const int64_t all =
      z.x_in + z.ln1 + z.stats + z.qkv + z.att + z.lse + z.x_mid + z.ln2 + z.stats + z.fc1 + z.gelu;
  // What each layer keeps, and what one shared working set holds (recomputed in backward):
  //   none:      everything per layer
  //   selective: everything but the attention core output (recomputed from QKV)
  //   full:      only the layer input; the rest is recomputed from it
  const int64_t per_layer = rc == Recompute::none        ? all
                            : rc == Recompute::selective ? all - z.att
                                                         : z.x_in;
  const int64_t shared = rc == Recompute::none        ? 0
                         : rc == Recompute::selective ? z.att
                                                      : all - z.x_in;
  // x_out in S; lnf, its statistics, the logits, lse and losses fp32 (the head computes in
  // fp32 and keeps nothing else).
  const int64_t nlog = k.nlog;
  const int64_t tail = S_(R * C) /*x_out*/ + F_(R * C) /*lnf*/ + F_(2 * R) + F_(nlog) +
                       F_(N) /*lse*/ + F_(R) /*losses*/;
  acts_ = Buffer(arena_, Mem::acts, (per_layer * cfg_.n_layer + tail) / 4, "activations");
  if (shared > 0) work_ = Buffer(arena_, Mem::acts, shared / 4, "recompute working set");
  char* p = reinterpret_cast<char*>(acts_.data());
  char* w = reinterpret_cast<char*>(work_.data());
  auto take_b = [](char*& q, int64_t bytes) {  // bytes: a multiple of 4
    char* r = q;
    q += bytes;
    return r;
  };
  auto takef = [&](char*& q, int64_t n) { return reinterpret_cast<float*>(take_b(q, F_(n))); };
  auto fill = [&](LayerActs& a, char*& q, bool with_x_in, bool with_att) {
    if (with_x_in) a.x_in = take_b(q, z.x_in);
    a.ln1 = take_b(q, z.ln1);
    a.ln1_mean = takef(q, R);
    a.ln1_rstd = takef(q, R);
    a.qkv = take_b(q, z.qkv);
    if (with_att) a.att = take_b(q, z.att);
    a.lse = takef(q, N * Ht_);
    a.x_mid = take_b(q, z.x_mid);
    a.ln2 = take_b(q, z.ln2);
    a.ln2_mean = takef(q, R);
    a.ln2_rstd = takef(q, R);
    a.fc1 = take_b(q, z.fc1);
    a.gelu = take_b(q, z.gelu);
  };
  la_.assign(cfg_.n_layer, LayerActs{});
  if (rc == Recompute::full) fill(wk_, w, false, true);
  if (rc == Recompute::selective) wk_.att = take_b(w, z.att);
  for (auto& a : la_) {
    if (rc == Recompute::full) {
      a = wk_;
      a.x_in = take_b(p, z.x_in);
    } else {
      fill(a, p, true, rc == Recompute::none);
      if (rc == Recompute::selective) a.att = wk_.att;
    }
  }
  x_out_ = take_b(p, S_(R * C));
  lnf_ = takef(p, R * C);
  lnf_mean_ = takef(p, R);
  lnf_rstd_ = takef(p, R);
  logits_ = takef(p, nlog);
  lse_ = takef(p, N);
  losses_ = takef(p, R);
}

void Model::layout_scratch(const BufferDims& k) {
  const int64_t N = k.N, R = k.R, C = k.C, Wt = k.Wt, HDt = k.HDt, Ft = k.Ft, F1t = k.F1t;
  const int64_t Vt = k.Vt, nlog = k.nlog;
  const bool bf = k.bf;
  // Backward scratch, reused by every layer.
  const int64_t full = tp_ > 1 && seq_par_ ? N * C : 0;
  const int64_t n_xent = k.mat ? 0 : fused_xent_scratch_floats(par_.loss_chunks, N, Vt);
  // bf16: the linears' fp32 row tiles, and fp32 QKV and O for the strategies. In forward
  // these widen into dqkv_ and datt_ (idle until backward); in backward into dfc1_ and
  // dgelu_ (idle once the layer's MLP backward is done) when those are large enough.
  // An fp32 inference model keeps only what forward and logits() use: the gathered rows
  // (tp) and one row of logits; no gradient buffers and no loss statistics.
  const int64_t bw = par_.inference && !bf ? 0 : 1;
  const int64_t n_lin =
      bf ? linear_scratch_floats(std::max({C, HDt, Ft}), std::max({Wt, C, F1t})) : 0;
  const int64_t n_qkv32 = bf && F1t < Wt ? N * Wt : 0, n_o32 = bf && Ft < HDt ? N * HDt : 0;
  const int64_t n_scratch =
      bw * (3 * R * C + full + N * Wt + N * HDt + N * F1t + N * Ft + nlog + 4 * N + n_xent) + full +
      Vt + n_lin + n_qkv32 + n_o32;
  scratch_ = Buffer(arena_, Mem::scratch, n_scratch, "backward scratch");
  float* f = scratch_.data();
  auto take = [](float*& q, int64_t n) {
    float* r = q;
    q += n;
    return r;
  };
  dx_ = take(f, bw * R * C);
  dtmp_ = take(f, bw * R * C);
  dln_ = take(f, bw * R * C);
  full_ = take(f, full);
  dfull_ = take(f, bw * full);
  dqkv_ = take(f, bw * N * Wt);
  datt_ = take(f, bw * N * HDt);
  dfc1_ = take(f, bw * N * F1t);
  dgelu_ = take(f, bw * N * Ft);
  dlogits_ = take(f, bw * nlog);
  dlosses_ = take(f, bw * N);
  xent_m_ = take(f, bw * N);
  xent_s_ = take(f, bw * N);
  xent_zt_ = take(f, bw * N);
  xent_scratch_ = take(f, bw * n_xent);
  row_logits_ = take(f, Vt);
  lin_scratch_ = take(f, n_lin);
  bwd_qkv32_ = n_qkv32 ? take(f, n_qkv32) : dfc1_;
  bwd_o32_ = n_o32 ? take(f, n_o32) : dgelu_;
}

}  // namespace seqpar
