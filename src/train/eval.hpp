// Held-out evaluation: the loss of a model on the validation split of its data
// (train/data.hpp: Split::validation), forward only with dropout off, under the training
// mesh (dp × tp × sp, the same shards and strategy as a training step).
//
//   val_loss = Σ_ranks Σ_counted targets ℓ / Σ_ranks #counted targets   (token-weighted)
//   val_ppl  = exp(val_loss)                                            (per counted target)
//
// Global validation batch k (0-based) holds validation samples k·B·dp .. (k+1)·B·dp − 1, as
// training step k holds its samples: dp replica r takes B of them, sp rank its positions.
// The samples depend only on (data, L, k), never on the run's seed or the mesh, so two
// meshes with the same global batch B·dp score the same tokens. docs/eval.md.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/comm.hpp"
#include "model/model.hpp"
#include "parallel/mesh.hpp"
#include "train/checkpoint.hpp"
#include "train/config.hpp"
#include "train/data.hpp"

namespace seqpar {

// The validation loss of the tokens at global positions [begin, end) (eval --by-position).
struct PositionBucket {
  int64_t begin = 0, end = 0;
  double loss_sum = 0.0, tokens = 0.0;  // world sums
};
// B buckets over [0, L), log-spaced: bucket k (1..B) ends at ⌊L^(k/B)⌋ (at least one
// position past the previous end), the first begins at 0 and the last ends at L. Fewer
// than B when L is small.
std::vector<PositionBucket> position_buckets(int64_t L, int B);

struct EvalResult {
  double loss = 0.0;             // val_loss: Σ token losses / Σ counted targets (world)
  double ppl = 0.0;              // exp(loss)
  double tokens = 0.0;           // counted targets (world)
  double answers = 0.0;          // retrieval answers scored (world), 0 for plain text
  double answers_correct = 0.0;  // of which the argmax was the target
  int64_t keys = 0;              // samples with answers (world)
  int64_t keys_correct = 0;      // of which every answer's argmax was right (whole key)
  int64_t samples = 0;           // validation samples read: batches · B · dp
  std::vector<PositionBucket> by_position;  // with eval --by-position: the loss per bucket
  // {"val_loss", "val_ppl", "val_tokens", "val_samples"} (+ "val_answer_acc" and
  // "val_key_acc" = keys_correct / keys with answers), and "by_position": [{"begin", "end",
  // "tokens", "loss", "ppl"}] when measured.
  nlohmann::json to_json() const;
};

// cfg.eval_batches global batches of `val` (a Split::validation source), this rank's shard
// at positions `pos`, targets masked by cfg.loss_on. Forward only: the model's activations
// are overwritten, its parameters and gradients untouched. Collective over world.
// by_position > 0: also the loss in that many log-spaced position buckets (the long-context
// curve: flat or falling with position when the model uses its context).
EvalResult evaluate(Model& model, Mesh& mesh, Comm& world, const TrainConfig& cfg,
                    const DataSource& val, const std::vector<int64_t>& pos, int by_position = 0);

// Checkpoint paths and their configuration: train/setup.hpp.

// Copies the weights of checkpoint `ck` into `model`'s shards. Throws (UsageError) when
// the checkpoint's model is not `mc`, or a tensor is missing or of another shape.
void load_weights(Model& model, const Checkpoint& ck, const ModelConfig& mc);

// `seqpar eval`: loads the weights of step directory `step_dir` (checked against cfg.model)
// into a model on cfg's mesh and evaluates it on the validation split of cfg.data. Returns
// the report every rank agrees on: EvalResult::to_json plus checkpoint, step, data, mesh.
// Collective over world; errors reach every rank.
nlohmann::json evaluate_checkpoint(const TrainConfig& cfg, Comm& world, const std::string& step_dir,
                                   int by_position = 0);

}  // namespace seqpar
