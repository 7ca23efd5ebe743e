// ZeRO (Rajbhandari et al., 2020) over the ranks that hold the same parameter block: the
// dp × sp ranks of one tp rank (Mesh::shard_comm), n of them. docs/zero.md has the
// algorithm, the bytes per step and the memory per level.
//
// Partition. The block is cut into units (model/model.hpp: unit 0 = embedding, head, final
// norm; unit 1 + l = layer l), each packed in spec order (U_u floats); rank k of the group
// owns the contiguous range [start_k, start_k + c_k) of every unit's packed vector, with
// c_k = ⌊U_u/n⌋ + [k < U_u mod n]. Its shard is those ranges, unit after unit:
// S = Σ_u c_k(u) ≈ P/n floats. A unit is the unit of communication: one all-gather before
// its forward and its backward (level 3), one reduce-scatter after its backward (levels 2, 3).
//
//   level 1: AdamW moments (m, v) hold the shard only. After the backward each unit's
//            gradient is packed into a unit-sized working buffer and reduce-scattered (the
//            owner's part lands back in the full gradient block); each rank updates its
//            shard of the parameters, then every unit is all-gathered back into the full
//            parameter block through the same buffer.
//   level 2: also the gradients: each unit's gradient is reduce-scattered (non-blocking) as
//            soon as its backward is done, from one of two layer-sized working buffers
//            (plus one for unit 0, whose gradient gathers over the whole backward), into the
//            gradient shard. The model keeps no full gradient block.
//   level 3: also the parameters: each unit is all-gathered into one of two layer-sized
//            working buffers just before its forward and its backward, the next unit's
//            gather posted (non-blocking) while the current one computes; unit 0 lives in
//            its own buffer from forward to the end of backward. No full parameter block.
//
// Before its reduce-scatter a unit's gradient is first summed where the model's layout
// needs it: replicated parameters over tp (Megatron sequence parallelism: each tp rank holds
// a partial gradient), replicated kv heads over their kv group (Hkv < tp).
#pragma once
#include <cstdint>
#include <vector>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "model/model.hpp"

namespace seqpar {

// The parameter-shaped blocks of a training state: weights and the AdamW moments.
enum class Which { weights, m, v };

class Zero final : public ParamSource {
 public:
  // level 1..3. specs: this tp rank's param_specs(cfg, tp, ·). group: the ranks holding this block
  // (Mesh::shard_comm). repl: where replicated parameters' partial gradients are summed
  // before the reduce-scatter (tp_comm under Megatron sequence parallelism; null when they
  // are already whole). kv: the kv group of replicated kv heads (null: none). Allocates
  // its buffers (shards, working buffers) from arena at once.
  Zero(int level, const ModelConfig& cfg, const std::vector<ParamSpec>& specs, int tp, Comm& group,
       Comm* repl, Comm* kv, Arena& arena);
  ~Zero() override;

  int level() const { return level_; }
  int64_t shard_size() const { return S_; }  // floats of this rank's shard

  // ParamSource (levels 2 and 3 hold gradients, level 3 parameters).
  bool holds_params() const override { return level_ >= 3; }
  bool holds_grads() const override { return level_ >= 2; }
  float* fetch(int u, int next) override;
  void drop(int u) override;
  float* grad(int u) override;
  void grad_done(int u) override;

  // This rank's shard as segments of the full block: [flat, flat + n) of the tp rank's
  // block is [shard, shard + n) of the shard. A segment lies in one tensor and is either
  // wholly a replicated kv head or not.
  struct Seg {
    int64_t flat, shard, n;
    bool decay;  // AdamW weight decay applies
    bool repl;   // a replicated parameter (same on every tp rank)
    bool kv;     // part of a replicated kv head (Hkv < tp)
  };
  const std::vector<Seg>& segments() const { return segs_; }
  float* param_shard() { return p_shard_.data(); }  // level 3 (S floats)
  float* grad_shard() { return g_shard_.data(); }   // levels 2, 3 (S floats)

  // Level 1, after the backward: Σ over the world of this rank's part of every unit's
  // gradient into its place in `grads` (the full block; the other parts are left as they
  // were). Collective over the group.
  void reduce_scatter_grads(float* grads);
  // Levels 1, 2: every rank has updated its shard of `params` (the full block); all-gather
  // each unit so that every rank holds all of it again, through the unit working buffer
  // (level 1) or the gradient working buffers, idle after the update (level 2).
  // Collective over the group.
  void allgather_params(float* params);
  // Level 3: the parameter shard changed (update, load): gathered units are stale.
  void invalidate();
  // Level 3: initial weights of the shard (Model::init_weights's values).
  void init_weights(const ModelConfig& cfg, uint64_t seed);

  // Floats [off, off + n) of the full block from a shard-layout `shard` (collective over
  // the group: every rank passes the same off, n and gets them all), and back (no
  // communication: each rank keeps the part it owns).
  void read(const float* shard, int64_t off, int64_t n, float* out);
  void write(float* shard, int64_t off, int64_t n, const float* in) const;

 private:
  struct Unit {
    std::vector<std::pair<int64_t, int64_t>> ranges;  // (flat offset, floats), packed order
    int64_t size = 0;                                 // U_u
    int64_t repl = 0;  // floats of the replicated prefix (replicated specs come first)
    std::vector<std::pair<int64_t, int64_t>> kv;  // (packed offset, floats) of kv heads
    std::vector<int64_t> counts, starts;          // per rank: c_k, start_k
    std::vector<int64_t> base;  // per rank: the unit's offset in that rank's shard
  };
  struct Piece {  // [flat, flat + n) of the block, owned by `owner` at its shard offset
    int64_t flat, n;
    int owner;
    int64_t shard, packed;  // offset in the owner's shard; offset in the unit's packed block
    int unit;
  };
  struct Slot {
    float* buf = nullptr;
    int unit = -1;         // whose data it holds (or is receiving)
    bool held = false;     // handed to the model (not dropped / done yet)
    bool pending = false;  // a non-blocking collective is in flight on it
    Comm::Request req;
  };
  void settle(Slot& s);  // waits for its collective
  void prefetch(int u);
  Slot* param_slot(int u);

  int level_, n_, rank_;
  Comm& group_;
  Comm* repl_;
  Comm* kv_;
  std::vector<ParamSpec> specs_;
  std::vector<Unit> units_;
  std::vector<Piece> pieces_;  // tile the block, sorted by flat
  std::vector<Seg> segs_;
  int64_t S_ = 0, max_layer_ = 0;
  Buffer p_shard_, g_shard_, p_outer_, g_outer_, p_slots_, g_slots_;
  Buffer unit_buf_;  // level 1: one unit, packed (max(U0, Ul) floats)
  Slot ps_[2], gs_[2];
};

}  // namespace seqpar
