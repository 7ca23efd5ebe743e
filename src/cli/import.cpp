// seqpar import: a Hugging Face model directory as step 0 of a run (train/hf_import).
#include <iostream>

#include "cli/command.hpp"
#include "core/file.hpp"
#include "train/checkpoint.hpp"
#include "train/data.hpp"
#include "train/hf_import.hpp"
#include "train/setup.hpp"

namespace seqpar {

namespace {

class ImportCommand : public RunCommand {
 public:
  explicit ImportCommand(CLI::App& parent)
      : RunCommand(parent, "import",
                   "Import a Hugging Face model directory (LlamaForCausalLM or "
                   "MistralForCausalLM: config.json, model.safetensors or its shards in "
                   "F32/BF16/F16, tokenizer.model or tokenizer.json, copied into RUN) as step 0 of "
                   "a run: --out RUN "
                   "--data TOKENS plus the training flags of the run that will continue it "
                   "(written to RUN/config.json). One process.",
                   kTrain) {
    app->add_option("--hf", hf, "the Hugging Face model directory")->required();
  }
  bool one_process() const override { return true; }
  nlohmann::json prepare(int world_size) override {
    given["init_from"] = hf;
    SP_CHECK_USAGE(given.contains("data"),
                   "import needs --data: the token file the run will train on, encoded with ", hf,
                   "'s tokenizer (seqpar tokenize encode --model ", hf,
                   "/tokenizer.model or tokenizer.json)");
    SP_CHECK_USAGE(given.contains("out"), "import needs --out RUN: the run directory to create");
    nlohmann::json j = RunCommand::prepare(world_size);
    SP_CHECK_USAGE(!has_checkpoint(cfg.out + "/checkpoints"), "--out ", cfg.out,
                   " already holds checkpoints; import starts a run, choose another --out");
    open_data(cfg, Split::train, "the model of " + hf);  // the data fits its tokenizer
    return j;
  }
  int run(Comm&) override {
    const std::string dir = import_hf(hf, cfg.out + "/checkpoints", cfg, data_identity(cfg.data));
    nlohmann::json c = cfg.to_json();
    c.erase("init_from");
    write_file_atomic(cfg.out + "/config.json", c.dump(2) + "\n");
    std::cout << "imported " << hf << " as " << dir << "\ncontinue it with: seqpar train --config "
              << cfg.out << "/config.json --resume" << std::endl;
    return 0;
  }

 private:
  std::string hf;
};

}  // namespace

std::unique_ptr<Command> make_import_command(CLI::App& app) {
  return std::make_unique<ImportCommand>(app);
}

}  // namespace seqpar
