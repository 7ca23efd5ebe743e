// Progress reporting on rank 0: a one-line bar with ETA when stderr is a terminal,
// plain lines on stdout otherwise (logs, CI), nothing with "none".
#pragma once
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "train/config.hpp"

namespace seqpar {

class Progress {
 public:
  Progress(ProgressMode mode, bool active, int64_t total_steps);
  void update(int64_t step, double loss, double tokens_per_s, const nlohmann::json& record);
  void finish();

 private:
  bool bar_ = false, lines_ = false;
  int64_t total_;
  std::chrono::steady_clock::time_point start_;
  int64_t first_step_ = -1;
};

}  // namespace seqpar
