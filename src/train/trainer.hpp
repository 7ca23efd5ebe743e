// The training loop: data → forward → backward → gradient all-reduce → clip → AdamW,
// with metrics (JSON lines), progress, checkpoints (periodic, final, on SIGTERM) and
// resume. The world is a dp × sp mesh (world = dp·sp); this engine runs sp = 1.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/config.hpp"

namespace seqpar {

class Comm;

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
  bool save_final = true;
  int64_t stop_after = 0;  // >0: checkpoint and stop after this many steps, as if interrupted
  int threads = 0;         // per rank; 0: OMP_NUM_THREADS or all cores / ranks on the node
  int64_t log_every = 1;
  std::string progress = "auto";  // auto | bar | lines | none
  std::string strategy = "local";
  int sp = 1;
  std::string layout = "contiguous";
  int tp = 1;                      // Megatron tensor (+ sequence) parallel degree
  std::string recompute = "none";  // none | selective | full
  bool tp_sp = true;               // Megatron sequence parallelism inside the tp group
  int mqsp_micro = 0;              // MQSP micro-query count m (0: m = sp)
  int usp_ulysses = 0;             // USP Ulysses group size u, sp = u·r (0: automatic)

  void validate() const;  // throws seqpar::Error naming the value
  nlohmann::json to_json() const;
  // Overlays the keys present in j (same names as to_json) onto *this.
  void merge_json(const nlohmann::json& j);
};

// Learning rate at step s (0-based): linear warm-up to lr over `warmup` steps, then
// cosine decay to min_lr at the last step.
float lr_at(const TrainConfig& c, int64_t s);

struct TrainResult {
  int64_t last_step = 0;  // number of completed steps
  double last_loss = 0.0;
  bool interrupted = false;    // stopped by a signal or stop_after, after saving
  std::vector<double> losses;  // loss of each step run by this call
  uint64_t arena_peak = 0;     // this rank's arena peak (bytes) over the whole run
};

// Runs on every rank of `world`. Throws seqpar::Error on bad input.
TrainResult train(const TrainConfig& cfg, Comm& world);

// Installs SIGTERM/SIGINT handlers that ask the loop to checkpoint and stop.
void install_stop_handlers();

}  // namespace seqpar
