// The training state of one rank: the model (parameters, gradients, activations, the
// attention strategy's buffers) and the AdamW moments, all from one arena, allocated
// once at start-up. The same constructor runs in the trainer and, in a dry-run arena,
// in the planner, so the planner's peak is the trainer's.
//
// Checkpoints hold full (unsharded) tensors, streamed through `io` by
// train/checkpoint_stream.hpp (the tp shards assembled, the ZeRO shards read through
// read_local), so a checkpoint resumes under any layout and any ZeRO level.
#pragma once
#include <cstdint>
#include <memory>

#include "core/arena.hpp"
#include "model/model.hpp"
#include "parallel/mesh.hpp"
#include "train/config.hpp"
#include "train/zero.hpp"

namespace seqpar {

// The world's mesh for cfg (collective over world).
Mesh make_mesh(Comm& world, const TrainConfig& cfg);
// What the model needs to know of the mesh and the configuration.
ModelParallel model_parallel(Mesh& mesh, const TrainConfig& cfg);
// {dp, tp, sp, sp_strategy, layout}: the mesh as reports and manifests record it.
nlohmann::json mesh_json(const Mesh& mesh, const TrainConfig& cfg);

struct TrainState {
  // Builds the model for cfg on this mesh (model_parallel), with ZeRO (cfg.zero) over
  // mesh.shard_comm.
  TrainState(const TrainConfig& cfg, Arena& arena, Mesh& mesh, int B, int T);
  Mesh& mesh;
  std::unique_ptr<Zero> zero;  // null: --zero 0
  Model model;
  Buffer m, v;  // AdamW moments: P floats each, or this rank's ZeRO shard (zero->shard_size())
  // The one buffer checkpoints stream through (checkpoint_buffer_floats(cfg.model, t)
  // floats, Mem::ckpt): allocated with the rest, so the planner's dry run counts it.
  Buffer io;

  // Initial weights (Model::init_weights's values, into the shard under ZeRO 3).
  void init_weights(uint64_t seed);

  // The checkpoint's only access to the parameter-shaped blocks (train/checkpoint_stream):
  // floats [off, off + n) of this tp rank's full block `w` (P floats, laid out by
  // model.specs() offsets), whatever the ZeRO level. read_local is collective over
  // mesh.shard_comm (every rank passes the same off, n and gets the floats); write_local
  // takes the same data on every rank of the group, each keeping the part it holds.
  // Without ZeRO every rank holds the whole block: both are copies.
  using Which = seqpar::Which;
  void read_local(Which w, int64_t off, int64_t n, float* out);
  void write_local(Which w, int64_t off, int64_t n, const float* in);
};
}  // namespace seqpar
