// seqpar check: validate a configuration on every rank and print its per-rank memory.
#include <iostream>

#include "cli/command.hpp"
#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "train/planner.hpp"
#include "train/setup.hpp"

namespace seqpar {

namespace {

class CheckCommand : public RunCommand {
 public:
  explicit CheckCommand(CLI::App& app)
      : RunCommand(app, "check",
                   "Validate a configuration on every rank (values, mesh, shapes, data) and print "
                   "its per-rank memory by category from a dry run, without training. Run under "
                   "the same mpiexec as the training job.",
                   kCheck) {}

  int run(Comm& world) override {
    // The runtime baseline of the process train would be: the same threads, the data.
    apply_threads(cfg, world.size());
    std::unique_ptr<DataSource> src;
    agree_or_throw(world, [&] { src = open_data(cfg, Split::train); });
    // The whole process per rank against --max-memory (train/planner.hpp): printed either
    // way, then refused on every rank (exit 2) when it does not fit.
    const ProcessPlan pp = process_plan(cfg, world);
    if (world.rank() == 0) {
      nlohmann::json j = {{"ok", pp.fits()}, {"config", cfg.to_json()}};
      j.update(pp.terms());
      for (int c = 0; c < kMemCategories; ++c)
        j["peak_by_category"][mem_name(Mem(c))] = pp.arena.peak[c];
      std::cout << j.dump(2) << std::endl;
    }
    refuse_over_memory(pp, cfg);
    return 0;
  }
};

}  // namespace

std::unique_ptr<Command> make_check_command(CLI::App& app) {
  return std::make_unique<CheckCommand>(app);
}

}  // namespace seqpar
