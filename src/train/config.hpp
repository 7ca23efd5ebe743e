// Training configuration: every setting of a run, read once (defaults < config file <
// flags) and parsed there into typed values, so the rest of the code never compares
// strings. Each setting is one row of train_options() (core/options.hpp): its key, flag,
// help, default, check, subcommands and resume role are declared there and nowhere else.
// validate() checks each value alone and the pairs that must agree; validate_for_world()
// checks what depends on the number of ranks (the mesh, the shard shapes). Both throw
// seqpar::UsageError naming the value.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/options.hpp"
#include "model/config.hpp"
#include "model/model.hpp"
#include "parallel/layout.hpp"
#include "train/data.hpp"

namespace seqpar {

enum class ProgressMode { automatic, bar, lines, none };
template <>
struct EnumNames<ProgressMode> {
  static constexpr const char* what = "progress mode";
  static constexpr std::pair<ProgressMode, const char*> table[] = {
      {ProgressMode::automatic, "auto"},
      {ProgressMode::bar, "bar"},
      {ProgressMode::lines, "lines"},
      {ProgressMode::none, "none"}};
};
inline const char* progress_name(ProgressMode p) { return enum_name(p); }

// Threads per rank: OpenMP gives each its stack and OpenBLAS its buffers, so a count far
// beyond any machine's cores only exhausts memory (100000 threads: 8.9 GB before a refusal).
constexpr int kMaxThreads = 1024;

struct TrainConfig {
  ModelConfig model;
  int64_t seq_len = 256;  // L, global sequence length
  int batch = 8;          // sequences per data-parallel replica per step
  int64_t steps = 200;
  float lr = 1e-3f, min_lr = 1e-4f;
  int64_t warmup = 20;
  float weight_decay = 0.1f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float grad_clip = 1.0f;  // 0: off
  uint64_t seed = 1234;
  std::string data = "kjv";  // "kjv", "passkey" or a path to a text file
  std::string out = "runs/default";
  int64_t ckpt_every = 0;  // 0: only at the end (and on SIGTERM)
  bool resume = false;
  std::string init_from;  // a Hugging Face model directory the fresh run starts from
  bool save_final = true;
  int64_t stop_after = 0;  // >0: checkpoint and stop after this many steps, as if interrupted
  // Per-rank limit for the whole process (arena peak + runtime baseline + checkpoint host
  // copies): bytes with a unit ("8GiB"), or "available" (default: the memory the machine
  // offers, the smallest over ranks). Not part of the run's identity (config.json).
  std::string max_memory = "available";
  int threads =
      0;  // per rank (at most kMaxThreads); 0: OMP_NUM_THREADS or all cores / ranks on the node
  int64_t log_every = 1;
  ProgressMode progress = ProgressMode::automatic;
  bool profile = false;  // --profile: per-phase step times (core/profile.hpp)
  Strategy strategy = Strategy::local;
  int sp = 1;
  ShardLayout layout = ShardLayout::contiguous;
  int tp = 1;                             // Megatron tensor (+ sequence) parallel degree
  Recompute recompute = Recompute::none;  // none | selective | full
  bool tp_sp = true;                      // Megatron sequence parallelism inside the tp group
  // ZeRO level over the ranks holding the same parameter shard (train/zero.hpp): 0 off,
  // 1 AdamW moments, 2 + gradients, 3 + parameters. Not a resume key: checkpoints are
  // layout-independent, a run saved under one level resumes under any other.
  int zero = 0;
  int mqsp_micro = 0;               // MQSP micro-query count m (0: m = sp)
  int usp_ulysses = 0;              // USP Ulysses group size u, sp = u·r (0: automatic)
  LossImpl loss = LossImpl::fused;  // fused (chunked, no logits) or materialized
  int64_t loss_chunk = 0;           // fused loss: tokens per chunk (0: the default)
  // Storage of the saved activations (docs/precision.md). Not a resume key: the weights and
  // optimizer state are fp32 either way, so a run resumes in the other precision.
  Precision precision = Precision::fp32;
  // Packed documents (docs/data.md): attention and loss stay inside each document of a
  // sample (token data only); RoPE positions global or restarting per document (reset
  // needs pack_documents); sliding-window attention over `window` keys (0: off).
  bool pack_documents = false;
  DocPositions doc_positions = DocPositions::global;
  int64_t window = 0;
  // Which targets the loss counts: all, or only a retrieval task's answers (train/data.hpp).
  LossOn loss_on = LossOn::all;
  // Held-out evaluation (train/eval.hpp): every eval_every steps (0: never) and after the
  // last step, the loss over eval_batches global batches of the validation split.
  int64_t eval_every = 0;
  int64_t eval_batches = 8;
  // Settings (config key names) that --resume may accept with a value other than the
  // checkpoint's; the rest of resume_keys() must match.
  std::vector<std::string> overrides;

  Packing packing() const { return Packing{pack_documents, doc_positions, window}; }

  void validate() const;                     // throws UsageError naming the value
  void validate_for_world(int world) const;  // mesh and shard shapes for `world` ranks
  nlohmann::json to_json() const;            // the run's identity: config.json, manifest
  // Overlays the keys present in j (same names as to_json, plus resume, stop_after and
  // overrides) onto *this; the wrong type or an unknown key throws UsageError.
  void merge_json(const nlohmann::json& j);
  // Every setting with its value, the run's identity and the launch's alike (the agreement
  // every rank must reach before any work).
  nlohmann::json all_to_json() const;
};

// Every setting of a run, one row each: the model's (model/config.cpp) then the run's.
const OptionTable<TrainConfig>& train_options();

// Keys whose value changes what a resumed run means (its data, its shapes, its schedule
// and optimizer): resuming with another value is refused unless named in --override. The
// rows marked resume_key.
const std::vector<std::string>& resume_keys();
std::string resume_keys_list();  // "data, seq_len, ...": for messages and --help

// Learning rate at step s (0-based): linear warm-up to lr over `warmup` steps, then
// cosine decay to min_lr at the last step.
float lr_at(const TrainConfig& c, int64_t s);

}  // namespace seqpar
