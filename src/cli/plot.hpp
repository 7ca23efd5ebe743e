// `seqpar plot DIR`: curves of a run directory's metrics.jsonl as PNG files in DIR/plots/,
// drawn by gnuplot (Debian's gnuplot-nox; scripts/setup.sh installs it). One process.
//   loss.png          training loss per step, and the validation loss where it was measured
//   tokens_per_s.png  training throughput (global tokens per second of step time)
//   memory.png        this rank's arena peak per category (MiB) and the total
//   answer_acc.png    retrieval answer accuracy (train and validation), when logged
// The data gnuplot reads and its script stay beside them (metrics.tsv, val.tsv, plots.gp),
// so a figure can be restyled by hand.
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace seqpar {

// Writes the PNGs and returns their paths. Throws seqpar::Error naming what is wrong: no
// such directory, no metrics.jsonl or no rows in it, no gnuplot on PATH (with how to
// install it), gnuplot failing, or a PNG it did not write.
std::vector<std::string> plot_run(const std::string& dir);

// The heatmap of a needle sweep (train/needle.hpp: needle_sweep's JSON): digit accuracy
// over context length (x) × needle depth (y), each cell labelled with its value, colours
// fixed to [0, 1]. Writes `png` with gnuplot (its data and script in a temporary directory,
// removed after). Throws seqpar::Error as plot_run does: no gnuplot on PATH (with how to
// install it), gnuplot failing, or no PNG written.
void plot_needle_heatmap(const nlohmann::json& sweep, const std::string& png);

// `seqpar plot --by-position REPORT.json ... --output PNG`: the validation loss against the
// token position (log axis) of each eval report written with `seqpar eval --by-position B
// --output REPORT.json`, one curve per report, labelled by its file name: the long-context
// curve (docs/eval.md). Throws as plot_needle_heatmap does, and InputError naming a report
// that is not JSON or has no "by_position".
void plot_by_position(const std::vector<std::string>& reports, const std::string& png);

// The executable `name` found on $PATH, or "" if none.
std::string find_on_path(const std::string& name);

}  // namespace seqpar
