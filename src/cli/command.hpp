// A subcommand of seqpar. main() only dispatches: it builds every command's flags, parses
// argv, and runs the selected command in three phases:
//   1. prepare(): this rank alone, no communication: resolve and check everything the
//      command needs (set-up in train/setup.hpp); returns what every rank must agree on.
//   2. main(): one agreement of every rank on its verdict and on prepare()'s JSON.
//   3. run(): the work, on every rank; returns the exit code.
// Library code throws; main() turns UsageError into exit 2 and any other error into 1.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "train/config.hpp"

namespace seqpar {

class Comm;

class Command {
 public:
  virtual ~Command() = default;
  virtual nlohmann::json prepare(int world_size) = 0;
  virtual int run(Comm& world) = 0;
  // Runs in one process only (tokenize, export, plot): refused under mpiexec -n > 1.
  virtual bool one_process() const { return false; }
  CLI::App* app = nullptr;
};

// train, plan and check: the whole training configuration (defaults < --config file <
// flags), resolved and validated for the world by configure_run.
class RunCommand : public Command {
 public:
  RunCommand(CLI::App& parent, const char* name, const char* help, unsigned sub);
  nlohmann::json prepare(int world_size) override;

 protected:
  TrainConfig cfg;
  nlohmann::json given = nlohmann::json::object();  // flags, by config key
  std::string config_path;
};

// --checkpoint (alias --run) of eval, generate and export, resolved by
// train/setup.hpp's resolve_checkpoint.
CLI::Option* add_checkpoint_option(CLI::App& app, std::string& path);

std::unique_ptr<Command> make_train_command(CLI::App& app);
std::unique_ptr<Command> make_plan_command(CLI::App& app);
std::unique_ptr<Command> make_check_command(CLI::App& app);
std::unique_ptr<Command> make_eval_command(CLI::App& app);
std::unique_ptr<Command> make_generate_command(CLI::App& app);
std::unique_ptr<Command> make_export_command(CLI::App& app);
std::unique_ptr<Command> make_tokenize_command(CLI::App& app);
std::unique_ptr<Command> make_plot_command(CLI::App& app);
std::unique_ptr<Command> make_import_command(CLI::App& app);

}  // namespace seqpar
