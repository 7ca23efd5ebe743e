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

struct EvalResult {
  double loss = 0.0;             // val_loss: Σ token losses / Σ counted targets (world)
  double ppl = 0.0;              // exp(loss)
  double tokens = 0.0;           // counted targets (world)
  double answers = 0.0;          // retrieval answers scored (world), 0 for plain text
  double answers_correct = 0.0;  // of which the argmax was the target
  int64_t keys = 0;              // samples with answers (world)
  int64_t keys_correct = 0;      // of which every answer's argmax was right (whole key)
  int64_t samples = 0;           // validation samples read: batches · B · dp
  // {"val_loss", "val_ppl", "val_tokens", "val_samples"} (+ "val_answer_acc" and
  // "val_key_acc" = keys_correct / keys with answers).
  nlohmann::json to_json() const;
};

// cfg.eval_batches global batches of `val` (a Split::validation source), this rank's shard
// at positions `pos`, targets masked by cfg.loss_on. Forward only: the model's activations
// are overwritten, its parameters and gradients untouched. Collective over world.
EvalResult evaluate(Model& model, Mesh& mesh, Comm& world, const TrainConfig& cfg,
                    const DataSource& val, const std::vector<int64_t>& pos);

// Checkpoint paths and their configuration: train/setup.hpp.

// Copies the weights of checkpoint `ck` into `model`'s shards. Throws (UsageError) when
// the checkpoint's model is not `mc`, or a tensor is missing or of another shape.
void load_weights(Model& model, const Checkpoint& ck, const ModelConfig& mc);

// `seqpar eval`: loads the weights of step directory `step_dir` (checked against cfg.model)
// into a model on cfg's mesh and evaluates it on the validation split of cfg.data. Returns
// the report every rank agrees on: EvalResult::to_json plus checkpoint, step, data, mesh.
// Collective over world; errors reach every rank.
nlohmann::json evaluate_checkpoint(const TrainConfig& cfg, Comm& world,
                                   const std::string& step_dir);

}  // namespace seqpar
