// `local`: the single-rank reference strategy. The whole sequence is on this rank, so
// one call of the blocked kernel (kernels/attention.hpp) over all keys is exact.
// Memory: O(L·d) — the kernel's per-thread tiles plus Δ (B, H, T), and with a document
// mask or window the visible key range of each row, 2·B·T int64.
#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/attention.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
namespace {

class LocalAttention final : public AttentionStrategy {
 public:
  LocalAttention(Arena& arena, int B, int T, int H, int d)
      : scratch_(arena, Mem::scratch, attention_scratch_floats(d, num_threads()), "attn scratch"),
        delta_(arena, Mem::scratch, size_t(B) * H * T, "attn delta") {}

  const char* name() const override { return "local"; }
  uint64_t bytes_forward(const AttnShard&) const override { return 0; }
  uint64_t bytes_backward(const AttnShard&) const override { return 0; }

  void forward(const AttnShard& s, float* o, float* lse) override {
    AttnParams p = params(s, o, lse);
    bounds_.build(s.mask, s.pos, s.B, s.T, s.causal);
    bounds_.apply(p);
    attention_forward(p, false);
  }

  void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                float* dqkv) override {
    AttnBwdParams p = shard_self_bwd_params(s, o, lse, dout, dqkv);
    p.scratch = scratch_.data();
    p.scratch_floats = int64_t(scratch_.size());
    attention_delta(delta_.data(), dout, p);
    p.delta = delta_.data();
    bounds_.build(s.mask, s.pos, s.B, s.T, s.causal);
    bounds_.apply(p);
    attention_backward(p);
  }

 private:
  AttnParams params(const AttnShard& s, float* o, float* lse) {
    AttnParams p = shard_self_params(s, o, lse);
    p.scratch = scratch_.data();
    p.scratch_floats = int64_t(scratch_.size());
    return p;
  }

  Buffer scratch_;
  Buffer delta_;
  MaskBounds bounds_;  // visible key range of each query row (document masks, window)
};

}  // namespace

SEQPAR_STRATEGY_FACTORY(make_local_attention) {
  SP_CHECK(sp.sp_size() == 1,
           "strategy 'local' needs a sequence-parallel degree of 1, got sp=", sp.sp_size(),
           "; pick a sequence-parallel strategy with --sp-strategy");
  return std::make_unique<LocalAttention>(arena, B, T, H, d);
}

}  // namespace seqpar
