// One optimizer step on one rank: build this rank's batch shard, forward, token-weighted
// loss over all ranks, backward, gradient sums over the mesh, global-norm clipping, AdamW.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/comm.hpp"
#include "parallel/mesh.hpp"
#include "train/config.hpp"
#include "train/data.hpp"
#include "train/state.hpp"

namespace seqpar {

struct StepResult {
  double loss = 0.0;       // Σ token losses / Σ counted targets, over the world
  double grad_norm = 0.0;  // before clipping
  float lr = 0.0f;
  double answers = 0.0;          // retrieval answers scored this step (world)
  double answers_correct = 0.0;  // of which the argmax was the target
  double targets = 0.0;          // target tokens the loss counted (world): all but the −1 ones
};

// Step s (0-based) on the global samples first_sample .. first_sample + B·dp − 1 (this
// rank takes its dp_rank's B of them, at token positions `pos`). Collective over world.
StepResult train_step(TrainState& state, Mesh& mesh, Comm& world, const TrainConfig& cfg,
                      const DataSource& src, const std::vector<int64_t>& pos, int64_t s,
                      uint64_t first_sample);

}  // namespace seqpar
