// Checkpoints of a training state, streamed: no process ever holds a whole model.
//
// The files are those of train/checkpoint.hpp (model.safetensors with the full unsharded
// weights, optimizer.safetensors with "m.<name>" and "v.<name>", in model.specs() order),
// but they go tensor by tensor, and a large tensor in chunks of whole global rows, through
// TrainState::io: one arena buffer (Mem::ckpt) the planner counts with everything else.
//
// Save (collective over world): for each chunk of rows [r0, r0 + nr) of a tensor,
//   * every rank reads its tp rank's part of those rows with TrainState::read_local (a
//     copy, or under ZeRO a gather over the shard group);
//   * the tp group of world rank 0 all-gathers the parts (tensor-parallel shards: rows for
//     split_dim 0, a column range of every row for split_dim 1, see ParamSpec::segments),
//     world rank 0 places them as global rows and appends them to the file, whose header
//     was computed up front from the specs; the FNV-1a hash is taken as the bytes go out.
// A failure to write on world rank 0 is held until the stream ends (the other ranks are
// still in its collectives), then reported on every rank, and nothing is installed.
//
// Load (each rank on its own, no collective): the files are verified against the manifest
// (open_checkpoint), then every rank preads each chunk of global rows, cuts its tp rank's
// part out and hands it to TrainState::write_local.
//
// Buffer: chunk = min(8 Mi floats (32 MiB), the largest tensor) floats, and at least one
// global row times the number of tp ranks that hold a row (kv heads replicated over tp),
// so that every gathered chunk fits. One chunk at tp = 1 (read_local and pread fill it in
// file order); two at tp > 1 (the gathered parts and the assembled rows). 32 MiB per
// write amortises the syscall and the collective (~10 µs) over ~10 ms of copying, and
// bounds the buffer whatever the model: ≤ 64 MiB, against 12 bytes per parameter before.
#pragma once
#include <cstdint>
#include <string>

#include "parallel/mesh.hpp"
#include "train/checkpoint.hpp"
#include "train/state.hpp"

namespace seqpar {

constexpr int64_t kCheckpointChunkCapFloats = int64_t(8) << 20;  // 32 MiB

// Floats of one chunk (min(cap, largest tensor), at least a row per holder) and of the
// whole buffer (1 chunk at tp = 1, 2 at tp > 1). Save and load take the chunk from the size
// of TrainState::io, and refuse one below checkpoint_chunk_floats(cfg, tp, 1).
int64_t checkpoint_chunk_floats(const ModelConfig& cfg, int tp,
                                int64_t cap = kCheckpointChunkCapFloats);
int64_t checkpoint_buffer_floats(const ModelConfig& cfg, int tp);

// Writes <root>/step_<step>/ from the state. Collective over world; world rank 0 writes.
// Returns the step directory on world rank 0, "" elsewhere; an error on world rank 0
// (including "already exists") is thrown on every rank.
std::string save_state_checkpoint(TrainState& st, Mesh& mesh, Comm& world, const ModelConfig& cfg,
                                  const std::string& root, int64_t step,
                                  const nlohmann::json& state,
                                  const nlohmann::json& manifest_extra);

// This rank's part of checkpoint `ck` (from open_checkpoint: verified, tensors not read)
// into the state; refused, naming the checkpoint, if its model or a tensor differs.
void load_state_checkpoint(TrainState& st, const Checkpoint& ck, const ModelConfig& cfg, int tp,
                           int tp_rank);

}  // namespace seqpar
