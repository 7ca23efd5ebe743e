// seqpar command line. The only place that parses argv or chooses an exit code:
//   0 success, 1 runtime error (bad data, I/O, divergence), 2 usage error (flags, config,
//   shapes that do not divide, a setting a resume refuses).
// Start-up is two phases. Each rank first parses its argv and config on its own, with no
// communication, whatever it finds. Then every rank takes part in one agreement (an
// all-gather of each rank's verdict, then of its command and configuration), so a rank
// with a bad flag, an unknown one, or another subcommand (an MPMD launch) is refused on
// every rank together: the bad rank prints its reason, the others "rank k refused: ...",
// one line each. Errors found later that every rank learns of together (agree_or_throw)
// exit at once; one that only some ranks hit waits briefly for the others, then aborts the
// job so no rank waits forever in a collective.
#include <mpi.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/generate.hpp"
#include "cli/plot.hpp"
#include "cli/tokenize.hpp"
#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/file.hpp"
#include "core/memory.hpp"
#include "train/checkpoint.hpp"
#include "train/data.hpp"
#include "train/eval.hpp"
#include "train/hf_export.hpp"
#include "train/needle.hpp"
#include "train/planner.hpp"
#include "train/trainer.hpp"

using namespace seqpar;

namespace {

// Waits up to `timeout_s` for every rank to reach the same point; false if some never do.
bool all_ranks_arrive(double timeout_s) {
  MPI_Request req;
  if (MPI_Ibarrier(MPI_COMM_WORLD, &req) != MPI_SUCCESS) return false;
  auto t0 = std::chrono::steady_clock::now();
  int done = 0;
  while (!done) {
    if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return false;
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > timeout_s)
      return false;
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

// One line per error, written with one write(2) so ranks sharing a terminal do not
// interleave mid-line.
void print_line(const std::string& line) {
  const std::string l = line + "\n";
  (void)!::write(STDERR_FILENO, l.data(), l.size());
}

int fail(const std::exception& e, int rank, int size) {
  const auto* err = dynamic_cast<const Error*>(&e);
  const int code = dynamic_cast<const UsageError*>(&e) ? 2 : 1;
  std::string m = e.what();
  if (size > 1 && m.rfind("[rank ", 0) != 0 && m.rfind("rank ", 0) != 0)
    m = "[rank " + std::to_string(rank) + "] " + m;
  print_line("seqpar: error: " + m);
  if (size > 1 && !(err && err->agreed) && !all_ranks_arrive(10.0)) {
    print_line("seqpar: [rank " + std::to_string(rank) +
               "] other ranks did not fail; aborting the job");
    MPI_Abort(MPI_COMM_WORLD, code);
  }
  return code;
}

nlohmann::json load_config_file(const std::string& path) {
  std::ifstream f(path);
  SP_CHECK_USAGE(f.good(), "config file '", path, "' cannot be opened");
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::parse_error& e) {
    SP_FAIL_USAGE("config file '", path, "' is not valid JSON: ", e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f) then fails the write with EFBIG, reported like a full
  // disk, instead of killing the process mid-checkpoint.
  std::signal(SIGXFSZ, SIG_IGN);
  MpiSession mpi(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);

  CLI::App app{
      "seqpar: train long-sequence Transformers with sequence parallelism over MPI.\n"
      "Run under mpiexec for several ranks, e.g. mpiexec -n 4 seqpar train --sp 1 (data "
      "parallel)."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "seqpar 0.1.0");

  CLI::App* tr =
      app.add_subcommand("train", "Train a GPT or LLaMA (causal LM) or BERT (masked LM) model");
  CLI::App* pl = app.add_subcommand(
      "plan",
      "Longest sequence that fits a per-rank memory budget (dry run: allocation only, no "
      "arithmetic). Run under mpiexec -n N with --sp N for N ranks.");
  CLI::App* ck = app.add_subcommand(
      "check",
      "Validate a configuration on every rank (values, mesh, shapes, data) and print its "
      "per-rank memory by category from a dry run, without training. Run under the same "
      "mpiexec as the training job.");
  add_tokenize_command(app);
  add_generate_command(app);
  CLI::App* ex = app.add_subcommand(
      "export",
      "Write a llama checkpoint as a Hugging Face LLaMA directory (model.safetensors, "
      "config.json, tokenizer.model, and seqpar's logits for a reference window; "
      "tools/check_hf_export.py checks them with PyTorch). One process.");
  std::string ex_ckpt, ex_out, ex_tok;
  ex->add_option("--checkpoint", ex_ckpt,
                 "a step directory, a checkpoints/ root or a run directory (its newest "
                 "complete checkpoint)")
      ->required();
  ex->add_option("--out", ex_out, "directory to write")->required();
  ex->add_option("--tokenizer", ex_tok,
                 "SentencePiece .model to copy beside the weights (checked against the model's "
                 "tokenizer hash); data/kjv-bpe8k.model for models trained on kjv-bpe8k");
  CLI::App* ev = app.add_subcommand(
      "eval",
      "Validation loss and perplexity of a saved model on the held-out split of its data "
      "(docs/eval.md), forward only, sharded like training: run it under the same mpiexec and "
      "mesh flags (--sp, --tp, --sp-strategy, --layout, --batch) as the training job. Prints "
      "one JSON object (val_loss, val_ppl, val_tokens, ...).");
  std::string ev_run, ev_ckpt, ev_output;
  ev->add_option("--run", ev_run, "run directory (seqpar train --out): its newest checkpoint");
  ev->add_option("--checkpoint", ev_ckpt,
                 "a step directory, a checkpoints/ root or a run directory (its newest complete "
                 "checkpoint)");
  ev->add_option("--output", ev_output, "also write the JSON report to this file");
  // The needle-in-a-haystack sweep (train/needle.hpp, docs/eval.md).
  std::string ev_task, ev_lengths, ev_depths, ev_heatmap;
  int64_t ev_samples = 32;
  ev->add_option("--task", ev_task,
                 "passkey: instead of the validation loss, the needle-in-a-haystack sweep: "
                 "passkey accuracy on validation keys at each --lengths × --depths (prints "
                 "markdown tables; --output gets the JSON)")
      ->check(CLI::IsMember({"passkey"}));
  ev->add_option("--lengths", ev_lengths,
                 "with --task: context lengths, comma-separated, each >= 128 and shardable on "
                 "the mesh (any length, not only the training one), e.g. 256,1024,4096");
  ev->add_option("--depths", ev_depths,
                 "with --task: needle depths in [0, 1], comma-separated (0 = at the start, "
                 "1 = just before the question), default 0,0.25,0.5,0.75,1");
  ev->add_option("--samples", ev_samples,
                 "with --task: validation keys per (length, depth) cell, rounded up to whole "
                 "global batches")
      ->capture_default_str();
  ev->add_option("--heatmap", ev_heatmap,
                 "with --task: also draw digit accuracy over length × depth as this PNG "
                 "(needs gnuplot)");
  CLI::App* pt = app.add_subcommand(
      "plot",
      "Draw a run's loss, validation loss, tokens/s and arena peak memory per category "
      "against the step, as PNGs in DIR/plots/ (needs gnuplot: Debian's gnuplot-nox). One "
      "process.");
  std::string plot_dir;
  pt->add_option("DIR", plot_dir, "run directory holding metrics.jsonl")->required();
  std::string config_path;
  CLI::App* cur = tr;  // the subcommand the shared options below are added to
  // Flags are collected into a JSON object with the config-file key names, so the
  // precedence is one rule: defaults < config file < flags.
  nlohmann::json flags = nlohmann::json::object();
  auto opt_s = [&](const char* flag, const char* key, const char* help) {
    return cur
        ->add_option_function<std::string>(
            flag, [&flags, key](const std::string& v) { flags[key] = v; }, help)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  };
  auto opt_i = [&](const char* flag, const char* key, const char* help) {
    return cur
        ->add_option_function<int64_t>(
            flag, [&flags, key](const int64_t& v) { flags[key] = v; }, help)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  };
  auto opt_f = [&](const char* flag, const char* key, const char* help) {
    return cur
        ->add_option_function<double>(
            flag, [&flags, key](const double& v) { flags[key] = v; }, help)
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  };
  auto add_shared_options = [&]() {
    cur->add_option("--config", config_path,
                    "JSON config file; flags given on the command line override its values")
        ->check(CLI::ExistingFile);
    opt_s("--model,--arch", "model",
          "architecture: gpt (causal LM, default), bert (masked LM, 15% masking) or llama "
          "(causal LM: RMSNorm, SwiGLU, no biases, untied head)");
    opt_s("--data", "data",
          "training data: 'kjv' (default, King James Bible from Debian's bible-kjv, bytes), "
          "'kjv-bpe8k' (the same as 8k BPE tokens, built by scripts/setup.sh), 'passkey' "
          "(synthetic long-range retrieval, the needle in the first half), 'passkey-anywhere' "
          "(the same, the needle at any depth), a token file (seqpar tokenize encode) or any "
          "text file (bytes)");
    cur->add_flag_function(
        "--pack-documents,!--no-pack-documents",
        [&flags](int64_t n) { flags["pack_documents"] = n > 0; },
        "keep attention and loss inside each document of a sample (token files only: their "
        "document table; bytes are refused): a token attends only to its own document, and a "
        "document's last token has no target (the next document's first token); default off");
    opt_s("--doc-positions", "doc_positions",
          "RoPE positions with --pack-documents: global (default, Megatron's: the position in "
          "the packed sequence) or reset (0 at each document start); needs --pack-documents");
    opt_i("--window", "window",
          "sliding-window attention over W keys: query i sees keys i-W < j <= i (bert: "
          "|i-j| < W, symmetric), within its document when packing; 0 = off (default)");
    opt_i("--seq-len,-L", "seq_len", "global sequence length L in tokens (bytes), default 256");
    opt_s("--max-memory", "max_memory",
          "per-rank limit for the whole process (arena peak, with the checkpoint's stream "
          "buffer, + runtime baseline + step reserve of 8 MiB + 1% of the arena), e.g. 8GiB; "
          "refused up front, before any allocation, when the plan exceeds it; default "
          "'available' (the memory the machine offers, smallest over ranks)");
    opt_i("--batch,-B", "batch", "sequences per data-parallel replica per step, default 8");
    opt_i("--steps", "steps", "optimizer steps, default 200");
    opt_i("--layers", "layers", "Transformer blocks, default 2");
    opt_i("--dim", "dim", "model width C, default 256");
    opt_i("--heads", "heads", "query heads H, default 4 (head dim d = C/H)");
    opt_i("--kv-heads", "kv_heads", "key/value heads Hkv (grouped-query attention), default = H");
    opt_i("--ffn", "ffn", "feed-forward width F, default 4·C (llama: 8·C/3 rounded up to 32)");
    cur->add_flag_function(
        "--tie-embeddings,!--untie-embeddings",
        [&flags](int64_t n) { flags["tie_embeddings"] = n > 0; },
        "the output head shares the input embedding (gpt/bert default); --untie-embeddings "
        "gives it its own matrix (llama default)");
    opt_f("--rope-theta", "rope_theta", "RoPE base θ, default 10000");
    opt_i("--vocab", "vocab",
          "vocabulary size V (default: 256 bytes, 257 for bert; a token file's vocabulary, +1 "
          "for bert)");
    opt_f("--norm-eps", "norm_eps", "RMSNorm epsilon (llama), default 1e-5");
    opt_f("--dropout", "dropout", "dropout on embeddings and residual branches, default 0");
    opt_f("--attn-dropout", "attn_dropout", "attention-probability dropout, default 0");
    opt_f("--lr", "lr", "peak learning rate, default 1e-3");
    opt_f("--min-lr", "min_lr", "final learning rate of the cosine schedule, default 1e-4");
    opt_i("--warmup", "warmup", "linear warm-up steps, default 20");
    opt_f("--weight-decay", "weight_decay",
          "AdamW decoupled weight decay on matrices, default 0.1");
    opt_f("--grad-clip", "grad_clip", "clip the global gradient norm to this (0 = off), default 1");
    opt_i("--seed", "seed",
          "seed of initialisation, data sampling, masking and dropout, default 1234");
    opt_s("--out", "out",
          "run directory: config.json, metrics.jsonl, checkpoints/ (default runs/default, or "
          "runs/default-2, -3, ... when that already holds checkpoints)");
    opt_i("--ckpt-every", "ckpt_every",
          "checkpoint every N steps (0 = only at the end), default 0");
    opt_i("--threads", "threads", "threads per rank (0 = cores / ranks), default 0");
    opt_i("--log-every", "log_every", "log a metrics line every N steps, default 1");
    opt_s("--progress", "progress",
          "auto (bar on a terminal, lines otherwise), bar, lines or none");
    opt_i("--sp", "sp", "sequence-parallel degree N (world = dp · tp · sp), default 1");
    opt_s("--sp-strategy", "sp_strategy",
          "attention strategy: local (1 rank), ring, allgather, ulysses, usp, mqsp, rsa, or "
          "materialized "
          "(sp 1: keeps every T×T score matrix, the Megatron paper's baseline); default local");
    opt_s("--layout", "layout",
          "token layout over the sp ranks: contiguous (default), zigzag (balances causal "
          "work) or striped (stripes of up to 64 tokens dealt round-robin: balances packed "
          "documents). Any L >= sp splits; shards differ by at most one token (a stripe)");
    opt_i("--tp", "tp",
          "Megatron tensor (+ sequence) parallel degree t (world = dp · tp · sp), default 1");
    cur->add_option_function<std::string>(
           "--tp-sp", [&flags](const std::string& v) { flags["tp_sp"] = v == "on"; },
           "Megatron sequence parallelism in the tp group: on (default: LayerNorm, dropout, "
           "residual on L/t tokens; all-gather + reduce-scatter) or off (all-reduce)")
        ->check(CLI::IsMember({"on", "off"}))
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    opt_i("--zero", "zero",
          "ZeRO sharding over the ranks holding the same parameters (dp x sp of a tp rank): 0 "
          "off (default), 1 AdamW moments, 2 + gradients (reduce-scattered per layer), 3 + "
          "parameters (all-gathered per layer before its forward and backward); checkpoints "
          "resume under any level");
    opt_s("--recompute", "recompute",
          "activation recomputation: none (default), selective (attention core) or full (each "
          "layer)");
    opt_s("--loss", "loss",
          "fused (default: hidden states to the loss in chunks of tokens and vocabulary, no "
          "logits buffer) or materialized (the (rows, V) logits and their gradient in full)");
    opt_i("--loss-chunk", "loss_chunk", "fused loss: tokens per chunk (0 = the kernel's default)");
    opt_s("--precision", "precision",
          "storage of the activations saved for backward: fp32 (default) or bf16 (half the "
          "activation memory; compute, statistics, weights and optimizer stay fp32; "
          "docs/precision.md)");
    opt_i("--mqsp-micro", "mqsp_micro", "MQSP micro-query chunks m (0 = sp), default 0");
    opt_i("--usp-ulysses", "usp_ulysses",
          "USP: Ulysses group size u with sp = u·r (0 = largest u dividing sp and Hkv), default 0");
    opt_s("--loss-on", "loss_on",
          "targets the loss counts: all (default) or answer (only a retrieval task's answer "
          "digits, e.g. --data passkey; the others get no loss)");
    opt_i("--eval-every", "eval_every",
          "every K steps and after the last, the loss on the held-out validation split "
          "(val_loss, val_ppl in metrics.jsonl); 0 = off (default)");
    opt_i("--eval-batches", "eval_batches",
          "global batches (batch · dp sequences each) per evaluation, default 8");
  };
  add_shared_options();
  cur = pl;
  add_shared_options();
  cur = ck;
  add_shared_options();
  // eval: the model, data and length come from the checkpoint; the mesh and batch may change.
  cur = ev;
  opt_i("--batch,-B", "batch", "sequences per data-parallel replica (default: the run's)");
  opt_i("--eval-batches", "eval_batches",
        "global batches (batch · dp sequences each), default: the run's (8 if it never "
        "evaluated)");
  opt_s("--loss-on", "loss_on", "all or answer (default: the run's)");
  opt_i("--sp", "sp", "sequence-parallel degree N (world = dp · tp · sp), default 1");
  opt_s("--sp-strategy", "sp_strategy", "attention strategy (as for train), default local");
  opt_s("--layout", "layout", "contiguous (default), zigzag or striped");
  opt_i("--tp", "tp", "Megatron tensor-parallel degree, default 1");
  ev->add_option_function<std::string>(
        "--tp-sp", [&flags](const std::string& v) { flags["tp_sp"] = v == "on"; },
        "Megatron sequence parallelism in the tp group: on (default) or off")
      ->check(CLI::IsMember({"on", "off"}))
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  opt_i("--mqsp-micro", "mqsp_micro", "MQSP micro-query chunks m (0 = sp)");
  opt_i("--usp-ulysses", "usp_ulysses", "USP Ulysses group size u (0 = automatic)");
  opt_i("--threads", "threads", "threads per rank (0 = cores / ranks), default: the run's");
  opt_s("--loss", "loss", "fused or materialized (default: the run's)");
  cur = tr;
  std::string budget_str = "1GiB";
  int64_t max_len = int64_t(1) << 26;
  pl->add_option("--budget", budget_str,
                 "bytes per rank, with an optional suffix: 512MiB, 1GiB, 2G")
      ->capture_default_str();
  pl->add_option("--max-len", max_len, "largest sequence length to consider")
      ->capture_default_str();
  opt_i("--stop-after", "stop_after",
        "checkpoint and stop after N steps, as a preempted job would (0 = off)");
  bool resume = false;
  tr->add_flag("--resume", resume,
               "continue from the newest complete checkpoint in <out>/checkpoints, if any; the "
               "data position, weights and optimizer continue, batch and mesh may change");
  std::vector<std::string> overrides;
  tr->add_option(
        "--override", overrides,
        "with --resume: accept a new value for this setting (repeatable): " + resume_keys_list())
      ->type_name("KEY");

  // ---- phase 1: this rank alone (no communication, whatever it finds) ----------------
  std::string command;  // the subcommand, "help", or "" after an error
  std::exception_ptr local_error;
  TrainConfig cfg;
  nlohmann::json agreed;                // what every rank must have alike
  std::vector<int64_t> needle_lengths;  // seqpar eval --task passkey
  std::vector<double> needle_depths;
  uint64_t budget = 0;
  try {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      if (e.get_exit_code() != 0)
        SP_FAIL_USAGE(e.what(), " (see seqpar ",
                      app.get_subcommands().empty()
                          ? std::string("--help")
                          : app.get_subcommands()[0]->get_name() + " --help",
                      ")");
      command = "help";
      if (rank == 0) app.exit(e);  // prints the help or the version
    }
    if (command.empty()) command = app.get_subcommands().at(0)->get_name();
    if (command == "tokenize" || command == "export" || command == "plot") {
      SP_CHECK_USAGE(size == 1, "seqpar ", command, " runs on one process, got ", size,
                     " ranks: run it without mpiexec");
    } else if (command == "generate") {
      agreed = generate_options();
    } else if (command == "eval") {
      // The run's settings from the checkpoint's manifest; the mesh flags over them. Every
      // rank reads the same files, so a missing checkpoint is refused on every rank.
      SP_CHECK_USAGE(ev_run.empty() != ev_ckpt.empty(),
                     "seqpar eval needs one of --run DIR or --checkpoint PATH",
                     ev_run.empty() ? "" : " (both were given)");
      ev_ckpt = ev_run.empty() ? find_checkpoint_dir(ev_ckpt) : find_run_checkpoint(ev_run);
      nlohmann::json merged = checkpoint_train_config(ev_ckpt);
      // The mesh is this launch's (1 rank unless given); threads stay the run's unless given
      // (their count changes fp32 sum orders: the same count reproduces the logged loss).
      for (const char* mesh_key :
           {"sp", "tp", "sp_strategy", "layout", "tp_sp", "mqsp_micro", "usp_ulysses"})
        merged.erase(mesh_key);
      merged.update(flags);
      cfg.merge_json(merged);
      cfg.validate();
      SP_CHECK_USAGE(
          !ev_task.empty() || (ev_lengths.empty() && ev_depths.empty() && ev_heatmap.empty()),
          "--lengths, --depths and --heatmap belong to the sweep: add --task passkey");
      if (ev_task.empty()) {
        cfg.validate_for_world(size);
      } else {
        SP_CHECK_USAGE(!ev_lengths.empty(), "--task passkey needs --lengths (e.g. 256,1024,4096)");
        needle_lengths = parse_needle_lengths(ev_lengths);
        needle_depths = parse_needle_depths(ev_depths.empty() ? "0,0.25,0.5,0.75,1" : ev_depths);
        check_needle_sweep(cfg, size, needle_lengths, ev_samples);
        // Refused before the sweep's work, not after it.
        SP_CHECK_USAGE(ev_heatmap.empty() || !find_on_path("gnuplot").empty(), "--heatmap ",
                       ev_heatmap,
                       ": gnuplot not found on PATH. Install Debian's "
                       "gnuplot-nox (apt-get install gnuplot-nox, or bash scripts/setup.sh), or "
                       "leave out --heatmap");
      }
      agreed = cfg.to_json();
      agreed.update({{"checkpoint", ev_ckpt},
                     {"output", ev_output},
                     {"task", ev_task},
                     {"lengths", needle_lengths},
                     {"depths", needle_depths},
                     {"samples", ev_samples},
                     {"heatmap", ev_heatmap}});
    } else if (command != "help") {
      // One merge of (file, then flags over it), so defaults that follow other keys
      // (ffn = 4·dim, kv_heads = heads, vocab by model) see both sources.
      nlohmann::json merged =
          config_path.empty() ? nlohmann::json::object() : load_config_file(config_path);
      SP_CHECK_USAGE(merged.is_object(), "config file '", config_path, "' must hold a JSON object");
      merged.update(flags);
      if (!overrides.empty()) merged["overrides"] = overrides;
      // Without an explicit --out, a fresh run never lands on an earlier run's checkpoints:
      // runs/default, then runs/default-2, -3, ... (every rank scans before anything is
      // written, so all pick the same name). --resume keeps runs/default.
      if (!merged.contains("out") && !resume) {
        std::string out = "runs/default";
        for (int k = 2; has_checkpoint(out + "/checkpoints"); ++k)
          out = "runs/default-" + std::to_string(k);
        merged["out"] = out;
      }
      cfg.merge_json(merged);
      fit_model_to_data(cfg.model, cfg.data, merged.contains("vocab"),
                        merged.contains("tokenizer_hash"));
      if (resume) cfg.resume = true;
      SP_CHECK_USAGE(cfg.overrides.empty() || cfg.resume, "--override only applies with --resume");
      cfg.validate();
      cfg.validate_for_world(size);
      if (command == "plan") budget = parse_bytes(budget_str, "budget");
      agreed = cfg.to_json();
      agreed.update({{"resume", cfg.resume},
                     {"overrides", cfg.overrides},
                     {"stop_after", cfg.stop_after},
                     {"max_memory", cfg.max_memory},
                     {"budget", budget},
                     {"max_len", max_len}});
    }
  } catch (...) {
    local_error = std::current_exception();
  }

  // ---- phase 2: one agreement that every rank reaches ---------------------------------
  try {
    Comm world = Comm::world();
    agree_or_throw(world, [&] {
      if (local_error) std::rethrow_exception(local_error);
    });
    try {
      world.check_same("the command line (subcommand and configuration)",
                       command + " " + agreed.dump());
    } catch (Error& e) {
      UsageError u(e.what());
      u.agreed = true;  // every rank saw the same values and throws alike
      throw u;
    }
    if (command == "help") return 0;
    if (command == "tokenize") return run_tokenize(rank, size);
    if (command == "generate") return run_generate(world);
    if (command == "plot") {
      for (const std::string& png : plot_run(plot_dir)) std::cout << png << "\n";
      std::cout << std::flush;
      return 0;
    }
    if (command == "eval" && !ev_task.empty()) {
      const nlohmann::json sweep =
          needle_sweep(cfg, world, ev_ckpt, needle_lengths, needle_depths, ev_samples);
      // Rank 0 writes; a failure (gnuplot missing, a bad path) reaches every rank.
      agree_or_throw(world, [&] {
        if (rank != 0) return;
        std::cout << needle_table_markdown(sweep) << std::flush;
        if (!ev_output.empty()) write_file_atomic(ev_output, sweep.dump(2) + "\n");
        if (!ev_heatmap.empty()) {
          plot_needle_heatmap(sweep, ev_heatmap);
          std::cout << "\nheatmap: " << ev_heatmap << std::endl;
        }
      });
      return 0;
    }
    if (command == "eval") {
      const nlohmann::json report = evaluate_checkpoint(cfg, world, ev_ckpt);
      agree_or_throw(world, [&] {
        if (rank != 0) return;
        std::cout << report.dump() << std::endl;
        if (!ev_output.empty()) write_file_atomic(ev_output, report.dump(2) + "\n");
      });
      return 0;
    }
    if (command == "export") {
      // A run directory stands for its checkpoints.
      std::string path = ex_ckpt;
      if (std::filesystem::is_directory(path + "/checkpoints")) path += "/checkpoints";
      std::cout << export_hf(path, ex_out, ex_tok) << std::endl;
      return 0;
    }

    // ---- phase 3: the subcommand -----------------------------------------------------
    // plan and check measure the runtime baseline of the process train would be: the same
    // threads, and the data source loaded (a text corpus is resident).
    std::unique_ptr<DataSource> src;
    if (command == "check" || command == "plan") {
      apply_threads(cfg, size);
      agree_or_throw(world, [&] { src = make_source(cfg.data, cfg.seed, cfg.seq_len); });
    }
    if (command == "check") {
      agree_or_throw(world, [&] {
        check_data_matches_model(*src, cfg.model.V, cfg.model.tokenizer_hash, "the model (--vocab)",
                                 cfg.model.kind);
        check_packing(*src, cfg.packing());
        check_loss_on(*src, cfg.loss_on);
      });
      // The whole process per rank against --max-memory (train/planner.hpp): printed either
      // way, then refused on every rank (exit 2) when it does not fit.
      const ProcessPlan pp = process_plan(cfg, world);
      if (rank == 0) {
        nlohmann::json j = {{"ok", pp.fits()},
                            {"config", cfg.to_json()},
                            {"peak_bytes", pp.arena.peak_total},
                            {"baseline_bytes", pp.baseline},
                            {"reserve_bytes", pp.reserve},
                            {"checkpoint_bytes", pp.checkpoint},
                            {"total_bytes", pp.total},
                            {"max_memory_bytes", pp.max_memory}};
        for (int c = 0; c < kMemCategories; ++c)
          j["peak_by_category"][mem_name(Mem(c))] = pp.arena.peak[c];
        std::cout << j.dump(2) << std::endl;
      }
      refuse_over_memory(pp, cfg);
      return 0;
    }
    if (command == "plan") {
      MemoryPlan p = longest_under_budget(cfg, world, budget, max_len);
      // The whole process at the planned L (arena, with the checkpoint's stream buffer, +
      // runtime baseline), and whether it fits --max-memory.
      TrainConfig at = cfg;
      if (p.L > 0) at.seq_len = p.L;
      const ProcessPlan pp = process_plan(at, world);
      if (rank == 0) {
        nlohmann::json j = {{"strategy", cfg.strategy},
                            {"sp", cfg.sp},
                            {"layout", layout_name(cfg.layout)},
                            {"budget_bytes", budget},
                            {"longest_seq_len", p.L},
                            {"baseline_bytes", pp.baseline},
                            {"reserve_bytes", pp.reserve},
                            {"checkpoint_bytes", pp.checkpoint},
                            {"total_bytes", p.L > 0 ? pp.total : 0},
                            {"max_memory_bytes", pp.max_memory},
                            {"fits_max_memory", p.L > 0 && pp.fits()},
                            {"peak_bytes", p.peak_total}};
        for (int c = 0; c < kMemCategories; ++c)
          j["peak_by_category"][mem_name(Mem(c))] = p.peak[c];
        std::cout << j.dump() << std::endl;
      }
      return 0;
    }
    install_stop_handlers();
    TrainResult r = train(cfg, world);
    if (r.setup_signal != 0) return 128 + r.setup_signal;  // the shell's convention
    if (rank == 0 && !r.nothing_to_do) {
      std::cout << (r.interrupted ? "stopped" : "done") << " after step " << r.last_step;
      if (r.last_step > r.start_step) std::cout << ", loss " << r.last_loss;
      std::cout << std::endl;
    }
  } catch (const std::exception& e) {
    return fail(e, rank, size);
  }
  return 0;
}
