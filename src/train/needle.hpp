// The needle-in-a-haystack sweep (`seqpar eval --task passkey`): a trained byte GPT is
// scored on the passkey task (train/data.hpp: make_passkey_source) at each context length L
// of a list and each needle depth d of another, on validation keys only (never trained on).
// Depth d puts the needle at offset round(d · room) of the sequence, room = the last offset
// at which it still ends before the question: d = 0 at the start, d = 1 just before the
// question. Each (L, d) cell reads the same validation samples 0 .. n−1 (the key of sample s
// depends on s only), teacher-forced, forward only, sharded like training (the mesh of the
// launch: dp × tp × sp, its strategy and layout), as `seqpar eval` does:
//
//   digit_acc(L, d) = #{answer digits whose argmax is the target} / (5 · n)
//   key_acc(L, d)   = #{samples whose 5 digits are all right} / n
//   answer_loss     = mean cross-entropy of the 5 answer digits (nats)
//
// n = --samples rounded up to whole global batches (batch · dp samples each).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/comm.hpp"
#include "train/config.hpp"

namespace seqpar {

// "256,1024,4096": integers >= 128 (the passkey task's shortest sequence), at least one,
// no repeats. Throws UsageError naming the bad entry.
std::vector<int64_t> parse_needle_lengths(const std::string& s);
// "0,0.25,1": numbers in [0, 1], at least one, no repeats. Throws UsageError naming the bad
// entry.
std::vector<double> parse_needle_depths(const std::string& s);

// Refuses (UsageError) a sweep the checkpoint's model or the launch's mesh cannot run: a
// model that does not read bytes as a GPT, a length the mesh cannot shard (the same rules as
// --seq-len in training: divisible by sp, 2·sp for zigzag, ...), samples < 1.
void check_needle_sweep(const TrainConfig& cfg, int world_size, const std::vector<int64_t>& lengths,
                        int64_t samples);

// Runs the sweep on the model of step directory `step_dir` under cfg's mesh (cfg: the run's
// configuration with this launch's mesh flags). Collective over world; errors reach every
// rank. Returns what every rank agrees on:
//   {"task": "passkey", "checkpoint", "step", "lengths": [L…], "depths": [d…],
//    "samples": n, "batch", "mesh": {…},
//    "digit_acc": [[…] per length, one per depth], "key_acc": [[…]], "answer_loss": [[…]],
//    "seconds": [[…]] (wall time of each cell, rank 0's)}
nlohmann::json needle_sweep(const TrainConfig& cfg, Comm& world, const std::string& step_dir,
                            const std::vector<int64_t>& lengths, const std::vector<double>& depths,
                            int64_t samples);

// The sweep as markdown: one table of digit accuracy and one of whole-key accuracy, a row
// per length, a column per depth.
std::string needle_table_markdown(const nlohmann::json& sweep);

}  // namespace seqpar
