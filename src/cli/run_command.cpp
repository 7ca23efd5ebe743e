// The configuration that train, plan and check share.
#include "cli/command.hpp"
#include "cli/options.hpp"
#include "train/setup.hpp"

namespace seqpar {

RunCommand::RunCommand(CLI::App& parent, const char* name, const char* help, unsigned sub) {
  app = parent.add_subcommand(name, help);
  app->add_option("--config", config_path,
                  "JSON config file (keys as in config.json); flags given on the command line "
                  "override its values")
      ->check(CLI::ExistingFile);
  add_option_rows(*app, sub, train_options(), given);
}

nlohmann::json RunCommand::prepare(int world_size) {
  cfg = configure_run(config_path, given, world_size);
  return cfg.all_to_json();
}

}  // namespace seqpar
