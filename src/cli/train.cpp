// seqpar train: the step loop (train/trainer.hpp) under this launch's mesh.
#include <iostream>

#include "cli/command.hpp"
#include "comm/comm.hpp"
#include "train/trainer.hpp"

namespace seqpar {

namespace {

class TrainCommand : public RunCommand {
 public:
  explicit TrainCommand(CLI::App& app)
      : RunCommand(app, "train", "Train a GPT or LLaMA (causal LM) or BERT (masked LM) model",
                   kTrain) {}

  int run(Comm& world) override {
    install_stop_handlers();
    const TrainResult r = train(cfg, world);
    if (r.setup_signal != 0) return 128 + r.setup_signal;  // the shell's convention
    if (world.rank() == 0 && !r.nothing_to_do) {
      std::cout << (r.interrupted ? "stopped" : "done") << " after step " << r.last_step;
      if (r.last_step > r.start_step) std::cout << ", loss " << r.last_loss;
      std::cout << std::endl;
    }
    return 0;
  }
};

}  // namespace

std::unique_ptr<Command> make_train_command(CLI::App& app) {
  return std::make_unique<TrainCommand>(app);
}

}  // namespace seqpar
