// The run directory (--out): what one training run owns on disk.
//   run.lock         exclusive lock (flock) held by rank 0 from before anything is written
//                    until the process ends; it holds "<pid> <host>" of the holder
//   config.json      the resolved configuration
//   metrics.jsonl    one JSON object per logged step, each line written whole
//   checkpoints/     step_NNNNNNNN/ directories and the `latest` hint (train/checkpoint.hpp)
// Two runs on one directory would mix their files; the lock refuses the second one, and
// whoever holds it may remove the unfinished checkpoint temporaries a killed run left.
// docs/checkpoints.md says what is kept and why.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "comm/comm.hpp"
#include "core/file.hpp"

namespace seqpar {

class RunDir {
 public:
  // Collective over world. Rank 0 creates `out` and checkpoints/, takes the lock (a
  // directory held by a live run is refused, naming its pid and host) and removes
  // unfinished checkpoint temporaries. A failure is reported on every rank.
  RunDir(const std::string& out, Comm& world);
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::string& path() const { return out_; }
  std::string checkpoints() const { return out_ + "/checkpoints"; }

  // Rank 0 writes; the others return. Collective over world: failures reach every rank.
  void write_config(const nlohmann::json& cfg);
  // Keeps the metrics rows of steps <= keep_through (a resumed run replays the steps after
  // its checkpoint, so their old rows go) and drops torn lines; then appends from there.
  void open_metrics(int64_t keep_through);

  // Rank 0 only (not collective): appends one row with a single write(2). A failed write
  // is cut back (no torn line) and reported once on stderr with the reason; the run and its
  // checkpoints go on.
  void append_metrics(const nlohmann::json& row);

 private:
  std::string out_;
  Comm* world_;
  bool rank0_;
  Fd lock_fd_;     // closing it (at exit, or when the process dies) releases the flock
  Fd metrics_fd_;  // declared after the lock: closed before it
  bool metrics_failed_ = false;
};

}  // namespace seqpar
