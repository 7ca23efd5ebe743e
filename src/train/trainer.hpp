// The training loop: a run directory (train/run_dir.hpp) locked for this run, a training
// state (train/state.hpp) started fresh or resumed from the newest complete checkpoint,
// and steps (train/step.hpp), with metrics, progress and checkpoints (periodic, final, on
// SIGTERM/SIGINT). The world is a dp × tp × sp mesh.
#pragma once
#include <cstdint>
#include <vector>

#include "train/config.hpp"

namespace seqpar {

class Comm;

struct TrainResult {
  int64_t start_step = 0;  // the step training started from (the checkpoint's on resume)
  int64_t last_step = 0;   // number of completed steps
  double last_loss = 0.0;
  bool interrupted = false;    // stopped by a signal or stop_after, after saving
  bool nothing_to_do = false;  // resumed at or beyond --steps: nothing trained or saved
  int setup_signal = 0;        // stopped by this signal during the set-up: nothing trained
  std::vector<double> losses;  // loss of each step run by this call
  uint64_t arena_peak = 0;     // this rank's arena peak (bytes) over the whole run
  uint64_t peak_rss = 0;       // VmHWM at the end (after the final save), max over ranks
};

// Runs on every rank of `world`. Throws seqpar::Error (UsageError for a setting that
// cannot run) on every rank alike.
TrainResult train(const TrainConfig& cfg, Comm& world);

// SIGTERM/SIGINT ask the loop to checkpoint and stop after the current step; a second
// SIGINT (Ctrl-C again) ends the process at once (exit 130), the checkpoints already
// saved staying as they are.
void install_stop_handlers();

}  // namespace seqpar
