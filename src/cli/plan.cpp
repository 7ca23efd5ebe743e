// seqpar plan: the longest sequence that fits a per-rank budget (dry run, train/planner).
#include <iostream>

#include "cli/command.hpp"
#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "core/memory.hpp"
#include "train/data.hpp"
#include "train/planner.hpp"
#include "train/setup.hpp"

namespace seqpar {

namespace {

class PlanCommand : public RunCommand {
 public:
  explicit PlanCommand(CLI::App& app)
      : RunCommand(app, "plan",
                   "Longest sequence that fits a per-rank memory budget (dry run: allocation "
                   "only, no arithmetic). Run under mpiexec -n N with --sp N for N ranks.",
                   kPlan) {
    this->app
        ->add_option("--budget", budget_str,
                     "bytes per rank, with an optional suffix: 512MiB, 1GiB, 2G")
        ->capture_default_str();
    this->app->add_option("--max-len", max_len, "largest sequence length to consider")
        ->capture_default_str();
  }

  nlohmann::json prepare(int world_size) override {
    nlohmann::json j = RunCommand::prepare(world_size);
    budget = parse_bytes(budget_str, "budget");
    SP_CHECK_USAGE(max_len >= 2, "--max-len must be >= 2, got ", max_len);
    j.update({{"budget", budget}, {"max_len", max_len}});
    return j;
  }

  int run(Comm& world) override {
    // The runtime baseline of the process train would be: the same threads, and the data
    // source loaded (a text corpus is resident).
    apply_threads(cfg, world.size());
    std::unique_ptr<DataSource> src;
    agree_or_throw(world, [&] { src = make_source(cfg.data, cfg.seed, cfg.seq_len); });
    const MemoryPlan p = longest_under_budget(cfg, world, budget, max_len);
    // The whole process at the planned L (arena, with the checkpoint's stream buffer, +
    // runtime baseline), and whether it fits --max-memory.
    TrainConfig at = cfg;
    if (p.L > 0) at.seq_len = p.L;
    const ProcessPlan pp = process_plan(at, world);
    if (world.rank() == 0) {
      nlohmann::json j = {{"strategy", cfg.strategy},
                          {"sp", cfg.sp},
                          {"layout", cfg.layout},
                          {"budget_bytes", budget},
                          {"longest_seq_len", p.L}};
      j.update(pp.terms());  // the whole process at L (total_bytes 0: no L fits)
      j["total_bytes"] = p.L > 0 ? pp.total : 0;
      j["fits_max_memory"] = p.L > 0 && pp.fits();
      j["peak_bytes"] = p.peak_total;
      for (int c = 0; c < kMemCategories; ++c) j["peak_by_category"][mem_name(Mem(c))] = p.peak[c];
      std::cout << j.dump() << std::endl;
    }
    return 0;
  }

 private:
  std::string budget_str = "1GiB";
  int64_t max_len = int64_t(1) << 26;
  uint64_t budget = 0;
};

}  // namespace

std::unique_ptr<Command> make_plan_command(CLI::App& app) {
  return std::make_unique<PlanCommand>(app);
}

}  // namespace seqpar
