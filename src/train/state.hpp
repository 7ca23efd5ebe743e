// The training state of one rank: the model (parameters, gradients, activations, the
// attention strategy's buffers) and the AdamW moments, all from one arena, allocated
// once at start-up. The same constructor runs in the trainer and, in a dry-run arena,
// in the planner, so the planner's peak is the trainer's.
//
// Checkpoints hold full (unsharded) tensors: gather_* assembles them from the tp shards,
// load_* places each rank's shard from them, so a checkpoint resumes under any layout.
#pragma once
#include <vector>

#include "core/arena.hpp"
#include "model/model.hpp"
#include "parallel/mesh.hpp"
#include "train/checkpoint.hpp"
#include "train/config.hpp"

namespace seqpar {

// The world's mesh for cfg (collective over world).
Mesh make_mesh(Comm& world, const TrainConfig& cfg);
// What the model needs to know of the mesh and the configuration.
ModelParallel model_parallel(Mesh& mesh, const TrainConfig& cfg);

struct TrainState {
  TrainState(const TrainConfig& cfg, Arena& arena, const ModelParallel& par, int B, int T);
  Model model;
  Buffer m, v;  // AdamW moments (P floats each)

  // Full tensors of the weights ("<name>") and of the moments ("m.<name>", "v.<name>").
  // Collective over tp (null: tp = 1).
  std::vector<NamedTensor> gather_weights(const ModelConfig& cfg, Comm* tp);
  std::vector<NamedTensor> gather_optimizer(const ModelConfig& cfg, Comm* tp);
  // This rank's shard of a checkpoint (refused, naming the checkpoint, if its model differs).
  void load(const Checkpoint& ck, const ModelConfig& cfg);
};

}  // namespace seqpar
