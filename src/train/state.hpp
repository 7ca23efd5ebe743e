// The training state of one rank: the model (parameters, gradients, activations, the
// attention strategy's buffers) and the AdamW moments, all from one arena, allocated
// once at start-up. The same constructor runs in the trainer and, in a dry-run arena,
// in the planner, so the planner's peak is the trainer's.
//
// Checkpoints hold full (unsharded) tensors, streamed through `io` by
// train/checkpoint_stream.hpp, so a checkpoint resumes under any layout.
#pragma once
#include <cstdint>

#include "core/arena.hpp"
#include "model/model.hpp"
#include "parallel/mesh.hpp"
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
  // The one buffer checkpoints stream through (checkpoint_buffer_floats(cfg.model, t)
  // floats, Mem::ckpt): allocated with the rest, so the planner's dry run counts it.
  Buffer io;

  // The checkpoint's only access to the parameter-shaped blocks (train/checkpoint_stream):
  // floats [off, off + n) of this tp rank's full block `w` (P floats laid out by
  // model.specs() offsets). read_local is collective over the ranks holding the same shard
  // (Mesh::shard_comm), and afterwards every one of them holds the floats in `out`;
  // write_local takes the same data on every one of them, and each keeps what it holds.
  // Without ZeRO every rank holds the whole block: both are copies.
  enum class Which { weights, m, v };
  void read_local(Which w, int64_t off, int64_t n, float* out);
  void write_local(Which w, int64_t off, int64_t n, const float* in);

 private:
  float* block(Which w, int64_t off, int64_t n);
};
}  // namespace seqpar
