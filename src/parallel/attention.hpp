// One interface for every attention strategy (local, and the sequence-parallel ones).
// The model hands a strategy this rank's shard of the packed QKV activations together
// with the GLOBAL positions of its tokens; the strategy returns this rank's shard of O
// (and the LSE that backward needs), and in backward this rank's dQ, dK, dV. The model
// never knows which strategy runs; a strategy never calls MPI directly (comm/ does).
//
// Every strategy must produce, for this rank's rows, the same O, LSE, dQ, dK, dV as
// `local` on the same global input (tests/mpi/test_strategies.cpp), and must say how
// many bytes it sends per call (analytic formula, checked against comm/'s counters;
// the formulas are in docs/strategies.md).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/arena.hpp"
#include "core/names.hpp"
#include "kernels/attention.hpp"
#include "parallel/layout.hpp"
#include "parallel/mask.hpp"

namespace seqpar {

// The attention strategies (DESIGN.md's table; one file each under parallel/).
enum class Strategy { local, ring, allgather, ulysses, usp, mqsp, rsa, materialized };
template <>
struct EnumNames<Strategy> {
  static constexpr const char* what = "attention strategy";
  static constexpr std::pair<Strategy, const char*> table[] = {
      {Strategy::local, "local"},
      {Strategy::ring, "ring"},
      {Strategy::allgather, "allgather"},
      {Strategy::ulysses, "ulysses"},
      {Strategy::usp, "usp"},
      {Strategy::mqsp, "mqsp"},
      {Strategy::rsa, "rsa"},
      {Strategy::materialized, "materialized"}};
};

class Comm;

struct AttnShard {
  const float* qkv = nullptr;    // (B, T, H + 2·Hkv, d): Q heads, then K heads, then V heads
  const int64_t* pos = nullptr;  // (T) global positions of this rank's tokens
  int B = 0, T = 0, H = 0, Hkv = 0, d = 0;
  int64_t L = 0;  // global sequence length
  bool causal = false;
  float dropout_p = 0.0f;  // attention-probability dropout
  uint64_t seed = 0;
  uint32_t step = 0, layer = 0;
  int head_offset = 0;  // global index of local head 0 (tensor parallelism): dropout keys
  // Document masks and sliding window of the whole (B, L) batch (parallel/mask.hpp),
  // identical on every rank; null: causality alone.
  const SeqMask* mask = nullptr;
};

// The sequence-parallel group a strategy runs in, and strategy options.
struct SpSetup {
  Comm* comm = nullptr;  // the sp group; null = single rank
  ShardLayout layout = ShardLayout::contiguous;
  int64_t L = 0;        // global sequence length (rank r holds shard_positions(L, N, r, layout))
  int mqsp_micro = 0;   // MQSP micro-query count m (0: m = N)
  int usp_ulysses = 0;  // USP: size u of the Ulysses groups, N = u·r (0: automatic)
  int materialized_layers = 1;  // `materialized`: layers whose T×T probabilities are kept
  // Storage of the K|V (and Q) blocks a strategy moves (--precision): bf16 halves those
  // buffers and bytes (lossless when QKV is stored in bf16, as the model does then);
  // gradients, partial outputs, LSE and softmax statistics always travel in fp32.
  Precision precision = Precision::fp32;
  int sp_size() const;
  int sp_rank() const;
};

class AttentionStrategy {
 public:
  virtual ~AttentionStrategy() = default;
  virtual const char* name() const = 0;
  // o (B, T, H, d) and lse (B, H, T) are overwritten (this rank's query rows).
  virtual void forward(const AttnShard& s, float* o, float* lse) = 0;
  // dqkv (B, T, H + 2·Hkv, d) += gradients of this rank's Q, K, V shard.
  virtual void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                        float* dqkv) = 0;
  // Bytes this rank sends in one forward / one backward call (analytic, fp32), counted
  // the way comm/ counts them (docs/comm.md).
  virtual uint64_t bytes_forward(const AttnShard& s) const = 0;
  virtual uint64_t bytes_backward(const AttnShard& s) const = 0;
};

// Kernel parameters shared by every strategy: shape (B, H, Hkv, d), causal masking and the
// dropout keys (seed, step, layer, head_offset) of the shard. Pointers, strides, token
// counts and positions are left for the caller.
AttnParams shard_kernel_params(const AttnShard& s);
// The shard attending to itself: Q, K, V read from the packed QKV buffer, O (B, T, H, d)
// and LSE (B, H, T) written, queries and keys at the shard's positions.
AttnParams shard_self_params(const AttnShard& s, float* o, float* lse);
// The same for backward: gradients dQ, dK, dV written into the packed dqkv buffer (+=).
AttnBwdParams shard_self_bwd_params(const AttnShard& s, const float* o, const float* lse,
                                    const float* dout, float* dqkv);

// The global sequence length a strategy's factory works with, checked against this rank's
// shard: sp.L, or T on a single rank without one. Throws naming `who`, the rank, T, the
// layout, L and sp when T is not the layout's shard length for this rank (any L ≥ sp
// splits; shards differ by one unit of the layout).
int64_t checked_sequence_length(const char* who, const SpSetup& sp, int T);

// Runs a strategy's per-call shard check on every rank of the sp group and agrees on the
// outcome (one all-reduce of a flag), so a shard that is wrong on one rank is refused on
// every rank instead of leaving the others waiting in the strategy's first collective.
// The failing rank rethrows its own message; the others name the failure as remote.
void agree_on_shard(Comm* comm, const char* who, const std::function<void()>& local_check);

// Builds a strategy. Scratch and communication buffers are allocated from `arena` now, for
// the shapes given, so the arena peak covers them. Throws (on every rank, since every rank
// sees the same arguments) for a shape it cannot run.
std::unique_ptr<AttentionStrategy> make_attention(Strategy s, Arena& arena, const SpSetup& sp,
                                                  int B, int T, int H, int Hkv, int d);
// Whether a strategy applies AttnShard::mask (document masks, sliding windows): all of
// them today. Training with --pack-documents or --window checks its strategy against this
// before the first step, so a new strategy that cannot apply a mask says false here.
bool applies_masks(Strategy s);
// By name (tests, benches): parse_enum<Strategy>(name), a UsageError for an unknown one.
std::unique_ptr<AttentionStrategy> make_attention(std::string_view name, Arena& arena,
                                                  const SpSetup& sp, int B, int T, int H, int Hkv,
                                                  int d);
// Every strategy's name, and those for which applies_masks() holds.
std::vector<std::string> attention_strategies();
std::vector<std::string> mask_strategies();

}  // namespace seqpar
