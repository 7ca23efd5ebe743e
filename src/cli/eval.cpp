// seqpar eval: the held-out loss of a checkpoint (train/eval.hpp), or with --task passkey
// the needle-in-a-haystack sweep (train/needle.hpp), sharded like training.
#include "train/eval.hpp"

#include <iostream>

#include "cli/command.hpp"
#include "cli/options.hpp"
#include "cli/plot.hpp"
#include "comm/comm.hpp"
#include "core/file.hpp"
#include "train/needle.hpp"
#include "train/setup.hpp"

namespace seqpar {

namespace {

class EvalCommand : public Command {
 public:
  explicit EvalCommand(CLI::App& parent) {
    app = parent.add_subcommand(
        "eval",
        "Validation loss and perplexity of a saved model on the held-out split of its data "
        "(docs/eval.md), forward only, sharded like training: run it under the same mpiexec "
        "and mesh flags (--sp, --tp, --sp-strategy, --layout, --batch) as the training job. "
        "Prints one JSON object (val_loss, val_ppl, val_tokens, ...).");
    add_checkpoint_option(*app, checkpoint);
    app->add_option("--output", output, "also write the JSON report to this file");
    app->add_option("--by-position", by_position,
                    "also the loss of the validation tokens in B log-spaced position buckets "
                    "over [0, L) (\"by_position\" in the JSON; `seqpar plot --by-position` "
                    "draws it): the long-context curve, flat or falling when the model uses its "
                    "context")
        ->check(CLI::Range(1, 4096));
    app->add_option("--task", task,
                    "passkey: instead of the validation loss, the needle-in-a-haystack sweep: "
                    "passkey accuracy on validation keys at each --lengths × --depths (prints "
                    "markdown tables; --output gets the JSON)")
        ->check(CLI::IsMember({"passkey"}));
    app->add_option("--lengths", lengths_str,
                    "with --task: context lengths, comma-separated, each >= 128 and shardable on "
                    "the mesh (any length, not only the training one), e.g. 256,1024,4096");
    app->add_option("--depths", depths_str,
                    "with --task: needle depths in [0, 1], comma-separated (0 = at the start, "
                    "1 = just before the question), default 0,0.25,0.5,0.75,1");
    app->add_option("--samples", samples,
                    "with --task: validation keys per (length, depth) cell, rounded up to whole "
                    "global batches")
        ->capture_default_str();
    app->add_option("--heatmap", heatmap,
                    "with --task: also draw digit accuracy over length × depth as this PNG "
                    "(needs gnuplot)");
    add_option_rows(*app, kEval, train_options(), given, /*run_defaults=*/true);
  }

  nlohmann::json prepare(int world_size) override {
    // Every rank reads the same files, so a missing checkpoint is refused on every rank.
    step_dir = resolve_checkpoint(checkpoint);
    cfg = configure_from_checkpoint(step_dir, given);
    for (const auto& [flag, path] : {std::pair{"--output", output}, {"--heatmap", heatmap}})
      if (!path.empty())
        check_output_path(path, flag, {{"the data", cfg.data}, {"--checkpoint", step_dir}});
    SP_CHECK_USAGE(!task.empty() || (lengths_str.empty() && depths_str.empty() && heatmap.empty()),
                   "--lengths, --depths and --heatmap belong to the sweep: add --task passkey");
    SP_CHECK_USAGE(task.empty() || by_position == 0,
                   "--by-position measures the validation loss, not the --task sweep");
    if (task.empty()) {
      cfg.validate_for_world(world_size);
    } else {
      SP_CHECK_USAGE(!lengths_str.empty(), "--task passkey needs --lengths (e.g. 256,1024,4096)");
      lengths = parse_needle_lengths(lengths_str);
      depths = parse_needle_depths(depths_str.empty() ? "0,0.25,0.5,0.75,1" : depths_str);
      check_needle_sweep(cfg, world_size, lengths, samples);
      // Refused before the sweep's work, not after it.
      SP_CHECK_USAGE(heatmap.empty() || !find_on_path("gnuplot").empty(), "--heatmap ", heatmap,
                     ": gnuplot not found on PATH. Install Debian's gnuplot-nox (apt-get "
                     "install gnuplot-nox, or bash scripts/setup.sh), or leave out --heatmap");
    }
    nlohmann::json j = cfg.all_to_json();
    j.update({{"checkpoint", step_dir},
              {"output", output},
              {"task", task},
              {"lengths", lengths},
              {"depths", depths},
              {"samples", samples},
              {"heatmap", heatmap},
              {"by_position", by_position}});
    return j;
  }

  int run(Comm& world) override {
    const bool rank0 = world.rank() == 0;
    if (!task.empty()) {
      const nlohmann::json sweep = needle_sweep(cfg, world, step_dir, lengths, depths, samples);
      // Rank 0 writes; a failure (gnuplot missing, a bad path) reaches every rank.
      agree_or_throw(world, [&] {
        if (!rank0) return;
        std::cout << needle_table_markdown(sweep) << std::flush;
        if (!output.empty()) write_file_atomic(output, sweep.dump(2) + "\n");
        if (!heatmap.empty()) {
          plot_needle_heatmap(sweep, heatmap);
          std::cout << "\nheatmap: " << heatmap << std::endl;
        }
      });
      return 0;
    }
    const nlohmann::json report = evaluate_checkpoint(cfg, world, step_dir, by_position);
    agree_or_throw(world, [&] {
      if (!rank0) return;
      std::cout << report.dump() << std::endl;
      if (!output.empty()) write_file_atomic(output, report.dump(2) + "\n");
    });
    return 0;
  }

 private:
  TrainConfig cfg;
  nlohmann::json given = nlohmann::json::object();
  std::string checkpoint, step_dir, output, task, lengths_str, depths_str, heatmap;
  int64_t samples = 32;
  int by_position = 0;
  std::vector<int64_t> lengths;
  std::vector<double> depths;
};

}  // namespace

std::unique_ptr<Command> make_eval_command(CLI::App& app) {
  return std::make_unique<EvalCommand>(app);
}

}  // namespace seqpar
