// seqpar export: a llama checkpoint as a Hugging Face LLaMA directory (train/hf_export).
#include <iostream>

#include "cli/command.hpp"
#include "train/hf_export.hpp"
#include "train/setup.hpp"

namespace seqpar {

namespace {

class ExportCommand : public Command {
 public:
  explicit ExportCommand(CLI::App& parent) {
    app = parent.add_subcommand(
        "export",
        "Write a llama checkpoint as a Hugging Face LLaMA directory (model.safetensors, "
        "config.json, tokenizer.model, and seqpar's logits for a reference window; "
        "tools/check_hf_export.py checks them with PyTorch). One process.");
    add_checkpoint_option(*app, checkpoint);
    app->add_option("--out", out,
                    "directory to write: new or empty (or --force), never inside a checkpoint")
        ->required();
    app->add_flag("--force", force, "write into --out even if it already holds files");
    app->add_option("--tokenizer", tokenizer,
                    "SentencePiece .model to copy beside the weights (checked against the "
                    "model's tokenizer hash); data/kjv-bpe8k.model for models trained on "
                    "kjv-bpe8k");
  }
  bool one_process() const override { return true; }
  nlohmann::json prepare(int) override {
    step_dir = resolve_checkpoint(checkpoint);
    check_output_dir(out, "--out", force);
    return {{"checkpoint", step_dir}, {"out", out}, {"tokenizer", tokenizer}, {"force", force}};
  }
  int run(Comm&) override {
    std::cout << export_hf(step_dir, out, tokenizer) << std::endl;
    return 0;
  }

 private:
  std::string checkpoint, step_dir, out, tokenizer;
  bool force = false;
};

}  // namespace

std::unique_ptr<Command> make_export_command(CLI::App& app) {
  return std::make_unique<ExportCommand>(app);
}

}  // namespace seqpar
