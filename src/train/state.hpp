// The training state of one rank: the model (parameters, gradients, activations, the
// attention strategy's buffers) and the AdamW moments, all from one arena, allocated
// once at start-up. The same constructor runs in the trainer and, in a dry-run arena,
// in the planner, so the planner's peak is the trainer's.
//
// Checkpoints hold full (unsharded) tensors: gather_* assembles them from the tp shards
// (and the ZeRO shards, through read_local), load places each rank's part from them, so a
// checkpoint resumes under any layout and any ZeRO level.
#pragma once
#include <memory>
#include <vector>

#include "core/arena.hpp"
#include "model/model.hpp"
#include "parallel/mesh.hpp"
#include "train/checkpoint.hpp"
#include "train/config.hpp"
#include "train/zero.hpp"

namespace seqpar {

// The world's mesh for cfg (collective over world).
Mesh make_mesh(Comm& world, const TrainConfig& cfg);
// What the model needs to know of the mesh and the configuration.
ModelParallel model_parallel(Mesh& mesh, const TrainConfig& cfg);

struct TrainState {
  // Builds the model for cfg on this mesh (model_parallel), with ZeRO (cfg.zero) over
  // mesh.shard_comm.
  TrainState(const TrainConfig& cfg, Arena& arena, Mesh& mesh, int B, int T);
  Mesh& mesh;
  std::unique_ptr<Zero> zero;  // null: --zero 0
  Model model;
  Buffer m, v;  // AdamW moments: P floats each, or this rank's ZeRO shard (zero->shard_size())

  // Initial weights (Model::init_weights's values, into the shard under ZeRO 3).
  void init_weights(uint64_t seed);

  // Floats [off, off + n) of this tp rank's full block `w` (P floats, laid out by
  // model.specs() offsets), whatever the ZeRO level. read_local is collective over
  // mesh.shard_comm (every rank passes the same off, n and gets the floats); write_local
  // takes the same data on every rank of the group, each keeping the part it holds.
  void read_local(Which w, int64_t off, int64_t n, float* out);
  void write_local(Which w, int64_t off, int64_t n, const float* in);

  // Full tensors of the weights ("<name>") and of the moments ("m.<name>", "v.<name>").
  // Collective over tp (null: tp = 1) and over mesh.shard_comm (read_local).
  std::vector<NamedTensor> gather_weights(const ModelConfig& cfg, Comm* tp);
  std::vector<NamedTensor> gather_optimizer(const ModelConfig& cfg, Comm* tp);
  // This rank's shard of a checkpoint (refused, naming the checkpoint, if its model differs).
  void load(const Checkpoint& ck, const ModelConfig& cfg);
};

}  // namespace seqpar
