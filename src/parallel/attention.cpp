#include "comm/comm.hpp"
#include "core/check.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {

AttnParams shard_kernel_params(const AttnShard& s) {
  AttnParams p;
  p.B = s.B;
  p.H = s.H;
  p.Hkv = s.Hkv;
  p.d = s.d;
  p.causal = s.causal;
  p.dropout_p = s.dropout_p;
  p.seed = s.seed;
  p.step = s.step;
  p.layer = s.layer;
  p.head_offset = s.head_offset;  // tensor parallelism: global index of local head 0
  return p;
}

AttnParams shard_self_params(const AttnShard& s, float* o, float* lse) {
  const int64_t W = int64_t(s.H + 2 * s.Hkv) * s.d;  // floats per token of packed QKV
  AttnParams p = shard_kernel_params(s);
  p.q = s.qkv;
  p.k = s.qkv + int64_t(s.H) * s.d;
  p.v = s.qkv + int64_t(s.H + s.Hkv) * s.d;
  p.o = o;
  p.lse = lse;
  p.q_stride = p.kv_stride = W;
  p.q_bstride = p.kv_bstride = W * s.T;
  p.o_stride = int64_t(s.H) * s.d;
  p.o_bstride = int64_t(s.H) * s.d * s.T;
  p.q_pos = p.k_pos = s.pos;
  p.Tq = p.Tk = s.T;
  return p;
}

AttnBwdParams shard_self_bwd_params(const AttnShard& s, const float* o, const float* lse,
                                    const float* dout, float* dqkv) {
  const int64_t W = int64_t(s.H + 2 * s.Hkv) * s.d;
  AttnBwdParams p;
  // o and lse are only read in backward; AttnParams holds them as writable for forward.
  static_cast<AttnParams&>(p) =
      shard_self_params(s, const_cast<float*>(o), const_cast<float*>(lse));
  p.dout = dout;
  p.dq = dqkv;
  p.dk = dqkv + int64_t(s.H) * s.d;
  p.dv = dqkv + int64_t(s.H + s.Hkv) * s.d;
  p.dq_stride = p.dkv_stride = W;
  p.dq_bstride = p.dkv_bstride = W * s.T;
  return p;
}

int64_t checked_sequence_length(const char* who, const SpSetup& sp, int T) {
  const int N = sp.sp_size();
  const int64_t L = sp.L > 0 ? sp.L : (N == 1 ? int64_t(T) : 0);
  SP_CHECK(L > 0, who, ": the sp setup has no sequence length L (got ", sp.L, ") for sp=", N);
  check_shardable(L, N, sp.layout);
  const int64_t want = shard_len(L, N, sp.sp_rank(), sp.layout);
  SP_CHECK(T == want, who, ": rank ", sp.sp_rank(), " has a shard of T=", T, " tokens but the ",
           layout_name(sp.layout), " layout of L=", L, " over sp=", N, " gives it ", want);
  return L;
}

void agree_on_shard(Comm* comm, const char* who, const std::function<void()>& local_check) {
  std::exception_ptr err;
  try {
    local_check();
  } catch (...) {
    err = std::current_exception();
  }
  const bool all = comm == nullptr || comm->size() == 1 ? err == nullptr : comm->all_ok(!err);
  if (err) std::rethrow_exception(err);
  SP_CHECK(all, who, ": the shard given to another rank of the sp group is not the one the ",
           "strategy was built for (see that rank's message)");
}

int SpSetup::sp_size() const { return comm ? comm->size() : 1; }
int SpSetup::sp_rank() const { return comm ? comm->rank() : 0; }

bool applies_masks(Strategy) { return true; }

std::unique_ptr<AttentionStrategy> make_attention(Strategy s, Arena& arena, const SpSetup& sp,
                                                  int B, int T, int H, int Hkv, int d) {
  SP_CHECK(B >= 1 && T >= 1 && H >= 1 && Hkv >= 1 && d >= 1, "attention shape B=", B, " T=", T,
           " H=", H, " Hkv=", Hkv, " d=", d, " must be positive");
  switch (s) {
    case Strategy::local:
      return make_local_attention(arena, sp, B, T, H, Hkv, d);
    case Strategy::ring:
      return make_ring_attention(arena, sp, B, T, H, Hkv, d);
    case Strategy::allgather:
      return make_allgather_attention(arena, sp, B, T, H, Hkv, d);
    case Strategy::ulysses:
      return make_ulysses_attention(arena, sp, B, T, H, Hkv, d);
    case Strategy::usp:
      return make_usp_attention(arena, sp, B, T, H, Hkv, d);
    case Strategy::mqsp:
      return make_mqsp_attention(arena, sp, B, T, H, Hkv, d);
    case Strategy::rsa:
      return make_rsa_attention(arena, sp, B, T, H, Hkv, d);
    case Strategy::materialized:
      return make_materialized_attention(arena, sp, B, T, H, Hkv, d);
  }
  SP_FAIL("attention strategy ", int(s), " has no constructor");
}

std::unique_ptr<AttentionStrategy> make_attention(std::string_view name, Arena& arena,
                                                  const SpSetup& sp, int B, int T, int H, int Hkv,
                                                  int d) {
  return make_attention(parse_enum<Strategy>(name), arena, sp, B, T, H, Hkv, d);
}

std::vector<std::string> attention_strategies() { return enum_names<Strategy>(); }

std::vector<std::string> mask_strategies() {
  std::vector<std::string> out;
  for (const auto& [s, name] : EnumNames<Strategy>::table)
    if (applies_masks(s)) out.emplace_back(name);
  return out;
}

}  // namespace seqpar
