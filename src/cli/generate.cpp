// seqpar generate: text from a checkpoint with a KV cache (infer/generate.hpp), the
// prompt's prefill sequence-parallel under mpiexec.

#include "infer/generate.hpp"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>

#include "cli/command.hpp"
#include "cli/options.hpp"
#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/file.hpp"
#include "core/hash.hpp"
#include "core/memory.hpp"
#include "core/profile.hpp"
#include "core/threads.hpp"
#include "data/tokenizer.hpp"
#include "parallel/attention.hpp"
#include "train/checkpoint.hpp"
#include "train/data.hpp"
#include "train/setup.hpp"

namespace seqpar {

namespace {

namespace fs = std::filesystem;

// Prompts are read whole, so their size is bounded before the read: 64 MiB of text is
// ~16M tokens, far past any model's context.
constexpr uint64_t kMaxPromptBytes = uint64_t(64) << 20;

// generate's own settings (the mesh, threads and --max-memory are training's rows).
struct GenerateArgs {
  std::string prompt, prompt_file, tokenizer;
  int64_t max_new_tokens = 128;
  double temperature = 1.0, top_p = 1.0;
  int top_k = 0;
  int64_t seed = 1234;
};

const OptionTable<GenerateArgs>& generate_options() {
  using G = GenerateArgs;
  static const OptionTable<G> rows = [] {
    OptionTable<G> t;
    auto add = [&](Option<G> o) -> Option<G>& { return t.emplace_back(std::move(o)); };
    add(option<G>(
        "prompt", [](G & g) -> auto& { return g.prompt; }, "--prompt", "the prompt text",
        kGenerate));
    add(option<G>(
        "prompt_file", [](G & g) -> auto& { return g.prompt_file; }, "--prompt-file",
        "read the prompt from this file", kGenerate));
    add(option<G>(
            "max_new_tokens", [](G & g) -> auto& { return g.max_new_tokens; }, "--max-new-tokens",
            "tokens to generate (at most 2^30)", kGenerate))
        .within(0, double(1 << 30));
    add(option<G>(
            "temperature", [](G & g) -> auto& { return g.temperature; }, "--temperature",
            "sampling temperature; 0 = greedy (argmax: the same tokens for any mesh)", kGenerate))
        .at_least(0);
    add(option<G>(
            "top_k", [](G & g) -> auto& { return g.top_k; }, "--top-k",
            "sample among the k most likely tokens (0 = all)", kGenerate))
        .at_least(0);
    add(option<G>(
            "top_p", [](G & g) -> auto& { return g.top_p; }, "--top-p",
            "nucleus sampling: the smallest set of tokens whose probability reaches p "
            "(1 = all)",
            kGenerate))
        .check([](const G& g) { return g.top_p > 0 && g.top_p <= 1; }, "must be in (0, 1]");
    add(option<G>(
        "seed", [](G & g) -> auto& { return g.seed; }, "--seed", "sampling seed", kGenerate));
    add(option<G>(
        "tokenizer", [](G & g) -> auto& { return g.tokenizer; }, "--tokenizer",
        "SentencePiece .model of a subword model (checked against the model's "
        "tokenizer hash); default: data/kjv-bpe8k.model for models trained on "
        "kjv-bpe8k. Byte models need none",
        kGenerate));
    return t;
  }();
  return rows;
}

std::string hash_hex0x(uint64_t h) { return "0x" + hash_hex(h); }

void write_out(const std::string& s) { std::cout << s << std::flush; }

// The checkpoint's model, the tokenizer that goes with it, and the prompt's tokens.
struct Loaded {
  ModelConfig model;
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> prompt;
};

// `given`: the command line's train rows; its RoPE scaling rows replace the checkpoint's
// (they are not weights: a model trained without scaling can run with one).
Loaded load_model_and_prompt(const std::string& dir, const GenerateArgs& a, const std::string& text,
                             const nlohmann::json& given) {
  Loaded l;
  const nlohmann::json manifest = read_manifest(dir);
  SP_CHECK_INPUT(manifest.contains("model"), "checkpoint ", dir,
                 ": manifest.json is not a seqpar manifest");
  nlohmann::json model = manifest["model"];
  for (const auto& o : model_options())
    if (o.resume_key && given.contains(o.key)) model[o.key] = given[o.key];
  l.model = ModelConfig::from_json(model);
  // The same checks as the command line's (a manifest's "heads": 0 would divide by zero).
  l.model.validate();
  const ModelConfig& cfg = l.model;
  std::string tpath = a.tokenizer;
  if (cfg.tokenizer_hash != 0 && tpath.empty()) {
    // The run's own copy (import writes it beside checkpoints/), then the bundled KJV
    // model for a run trained on kjv-bpe8k: the first whose hash is the model's.
    const fs::path run_dir = fs::path(dir).parent_path().parent_path();
    std::vector<std::string> candidates = {(run_dir / "tokenizer.model").string(),
                                           (run_dir / "tokenizer.json").string()};
    const std::string data = manifest.value("train", nlohmann::json::object()).value("data", "");
    if (data == "kjv-bpe8k") {
      const std::string t = token_file_path(data);
      candidates.push_back(t.substr(0, t.size() - 4) + ".model");
    }
    for (const std::string& c : candidates)
      if (tpath.empty() && path_exists(c, "tokenizer") && fnv1a64_file(c) == cfg.tokenizer_hash)
        tpath = c;
    SP_CHECK_USAGE(!tpath.empty(), "checkpoint ", dir, " is a subword model (tokenizer hash ",
                   hash_hex0x(cfg.tokenizer_hash), ") and its run directory ", run_dir.string(),
                   " holds no tokenizer of that hash: give its tokenizer (.model or "
                   "tokenizer.json) with --tokenizer");
  }
  if (cfg.tokenizer_hash == 0) {
    SP_CHECK_USAGE(a.tokenizer.empty(), "checkpoint ", dir, " is a byte-level model (V = ", cfg.V,
                   "); --tokenizer ", a.tokenizer, " does not apply to it");
  } else {
    l.tok = std::make_unique<Tokenizer>(tpath);
    SP_CHECK_USAGE(l.tok->hash() == cfg.tokenizer_hash, "tokenizer ", tpath, " (hash ",
                   hash_hex0x(l.tok->hash()), ") is not the one the model of ", dir,
                   " was trained with (hash ", hash_hex0x(cfg.tokenizer_hash), ")");
  }
  if (l.tok)
    l.prompt = l.tok->encode(text);
  else
    for (unsigned char c : text) l.prompt.push_back(int32_t(c));
  SP_CHECK_USAGE(!l.prompt.empty(), "the prompt is empty: generation needs at least one token");
  return l;
}

class GenerateCommand : public Command {
 public:
  explicit GenerateCommand(CLI::App& parent) {
    app = parent.add_subcommand(
        "generate",
        "Generate text from a checkpoint (gpt or llama) with a KV cache. Under mpiexec -n N "
        "with --sp N the prompt's prefill is sequence-parallel (each rank holds its shard of "
        "the KV cache; every decode step merges the ranks' partial attention by log-sum-exp), "
        "so prompts longer than one rank's memory can be used. The text streams to stdout; "
        "figures (prefill tokens/s, decode ms/token) go to stderr as one JSON line. The model's "
        "RoPE scaling is the checkpoint's; the --rope-* flags replace it (the defaults below "
        "are the flags', not the checkpoint's).");
    add_checkpoint_option(*app, checkpoint);
    add_option_rows(*app, kGenerate, generate_options(), given_args);
    add_option_rows(*app, kGenerate, train_options(), given_mesh);
  }

  nlohmann::json prepare(int world_size) override {
    step_dir = resolve_checkpoint(checkpoint);  // first, as eval and export do
    merge_options(generate_options(), args, given_args);
    check_options(generate_options(), args);
    SP_CHECK_USAGE(given_args.contains("prompt") != given_args.contains("prompt_file"),
                   "give the prompt with exactly one of --prompt and --prompt-file");
    // The mesh rows as training reads them; the prefill's strategy is ring at sp > 1
    // unless given.
    mesh.merge_json(given_mesh);
    if (!given_mesh.contains("sp_strategy") && mesh.sp > 1) mesh.strategy = Strategy::ring;
    for (const auto& o : train_options())
      if (o.takes(kGenerate))
        for (const auto& chk : o.checks) chk(mesh);
    SP_CHECK_USAGE(
        mesh.sp > 1 || mesh.strategy == Strategy::local || mesh.strategy == Strategy::materialized,
        "--sp-strategy ", mesh.strategy, " needs --sp > 1");
    SP_CHECK_USAGE(world_size == mesh.sp * mesh.tp, "generate runs on tp·sp ranks: ", world_size,
                   " ranks, --tp ", mesh.tp, " × --sp ", mesh.sp, " = ", mesh.sp * mesh.tp);
    // The prompt itself is compared by its hash: every rank must read the same text.
    text = given_args.contains("prompt_file")
               ? read_regular_file(args.prompt_file, "prompt file", kMaxPromptBytes)
               : args.prompt;
    nlohmann::json j = options_to_json(generate_options(), args);
    j["mesh"] = mesh.all_to_json();
    j.erase("prompt");
    j.update({{"checkpoint", step_dir}, {"prompt_hash", fnv1a64(text.data(), text.size())}});
    return j;
  }

  int run(Comm& world) override;

 private:
  uint64_t plan_memory(Comm& world, const ModelConfig& cfg, const GenerateMesh& gm, int64_t n,
                       uint64_t* peak_out);

  GenerateArgs args;
  TrainConfig mesh;  // sp, tp, sp_strategy, layout, threads, max_memory
  nlohmann::json given_args = nlohmann::json::object(), given_mesh = nlohmann::json::object();
  std::string checkpoint, step_dir, text;
};

// The whole process against --max-memory before anything is allocated: the dry-run peak
// (weights, prefill shard, decode, KV cache), the runtime baseline, and the one global
// tensor the load holds at a time (the largest). Returns the planned total.
uint64_t GenerateCommand::plan_memory(Comm& world, const ModelConfig& cfg, const GenerateMesh& gm,
                                      int64_t n, uint64_t* peak_out) {
  const uint64_t peak = generation_peak_bytes(cfg, gm, world, n, args.max_new_tokens);
  warm_up_runtimes();
  warm_up_transport(world);
  int64_t largest = 0;
  for (const ParamSpec& s : param_specs(cfg, 1, 0)) largest = std::max(largest, s.numel);
  int64_t v[2] = {int64_t(process_rss_bytes()), -int64_t(available_memory_bytes())};
  world.allreduce_max(v, 2);
  const uint64_t ckpt = uint64_t(4 * largest);
  const uint64_t total = peak + uint64_t(v[0]) + ckpt;
  const std::string& mm = mesh.max_memory;
  const uint64_t limit = mm != "available" ? parse_bytes(mm, "max_memory") : uint64_t(-v[1]);
  if (limit > 0 && total > limit) {
    UsageError e("a prompt of " + std::to_string(n) + " tokens with --max-new-tokens " +
                 std::to_string(args.max_new_tokens) + " needs " + format_bytes(total) +
                 " per rank under --sp " + std::to_string(mesh.sp) + " --tp " +
                 std::to_string(mesh.tp) + " (weights, prefill and KV cache " + format_bytes(peak) +
                 ", runtime " + format_bytes(uint64_t(v[0])) + ", checkpoint read " +
                 format_bytes(ckpt) + "), more than " +
                 (mm != "available" ? "--max-memory " + mm : std::string("the machine offers")) +
                 " (" + format_bytes(limit) + "); shorten the prompt or raise --sp");
    e.agreed = true;  // every rank computed the same reduced figures
    throw e;
  }
  *peak_out = peak;
  return total;
}

int GenerateCommand::run(Comm& world) {
  const GenerateArgs& a = args;
  const bool rank0 = world.rank() == 0;
  apply_threads(mesh, world.size());
  Loaded l;
  agree_or_throw(world, [&] { l = load_model_and_prompt(step_dir, a, text, given_mesh); });
  const ModelConfig& cfg = l.model;
  const std::vector<int32_t>& prompt = l.prompt;
  const std::unique_ptr<Tokenizer>& tok = l.tok;
  const std::string& dir = step_dir;
  GenerateMesh gm;
  gm.sp = mesh.sp;
  gm.tp = mesh.tp;
  gm.strategy = mesh.strategy;
  gm.layout = mesh.layout;
  const int64_t n = int64_t(prompt.size());
  uint64_t peak = 0;
  const uint64_t total = plan_memory(world, cfg, gm, n, &peak);
  const int64_t max_new = a.max_new_tokens;

  Arena arena;
  Generator gen(cfg, gm, world, arena, n, max_new);
  // The weights, one global tensor at a time (the manifest's sizes and hashes verified
  // first); the optimizer file is not read.
  agree_or_throw(world, [&] {
    const Checkpoint ck = open_checkpoint(dir);
    const SafetensorsReader reader(ck.dir + "/model.safetensors");
    std::vector<float> buf;
    gen.load_weights([&](const std::string& name,
                         const std::vector<int64_t>& shape) -> const std::vector<float>* {
      const SafetensorsReader::Entry* e = reader.find(name);
      SP_CHECK_INPUT(e, "checkpoint ", ck.dir, " has no tensor '", name, "'");
      SP_CHECK_INPUT(e->shape == shape, "checkpoint tensor '", name,
                     "' has another shape than the model");
      buf.resize(size_t(e->numel()));
      reader.read(*e, 0, e->numel(), buf.data());
      return &buf;
    });
  });

  SamplingOptions so;
  so.temperature = a.temperature;
  so.top_k = a.top_k;
  so.top_p = a.top_p;
  so.seed = uint64_t(a.seed);
  std::mt19937_64 rng(so.seed);
  std::vector<int32_t> out;
  std::string printed;
  const int32_t eos = tok ? tok->eos_id() : -1;
  if (mesh.profile) profile_enable(true);
  profile_begin_step();
  std::vector<float> logits = gen.prefill(prompt);
  const PhaseSeconds prefill_phases = profile_end_step();
  profile_begin_step();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t decoded = 0;
  for (int64_t k = 0; k < max_new; ++k) {
    int32_t next = rank0 ? sample_token(logits, so, rng) : 0;
    world.bcast(&next, sizeof(next), 0);  // every rank feeds the token rank 0 drew
    if (next == eos) break;
    out.push_back(next);
    if (rank0) {
      if (tok) {
        const std::string text = tok->decode(out);
        if (text.size() > printed.size() && text.compare(0, printed.size(), printed) == 0) {
          write_out(text.substr(printed.size()));
          printed = text;
        }
      } else {
        write_out(std::string(1, char(next)));
      }
    }
    if (k + 1 < max_new) {
      logits = gen.step(next);
      ++decoded;
    }
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const PhaseSeconds decode_phases = profile_end_step();
  if (rank0) {
    write_out("\n");
    nlohmann::json j = {{"prompt_tokens", n},
                        {"prefill_tokens", gen.prefilled_tokens()},
                        {"prefill_s", gen.prefill_seconds()},
                        {"prefill_tokens_per_s",
                         gen.prefill_seconds() > 0 ? double(n) / gen.prefill_seconds() : 0.0},
                        {"new_tokens", int64_t(out.size())},
                        {"decode_ms_per_token", decoded > 0 ? 1e3 * dt / double(decoded) : 0.0},
                        {"planned_bytes", total},
                        {"arena_peak_bytes", arena.total_peak()},
                        {"sp", mesh.sp},
                        {"tp", mesh.tp},
                        {"strategy", gm.strategy},
                        {"tokens", out}};
    if (mesh.profile) {  // rank 0's phases of the prefill and of the whole decode
      auto ms = [](const PhaseSeconds& ph) {
        nlohmann::json p;
        for (int i = 0; i < kPhases; ++i) p[phase_name(Phase(i))] = ph[size_t(i)] * 1e3;
        return p;
      };
      j["profile_ms"] = {{"prefill", ms(prefill_phases)}, {"decode", ms(decode_phases)}};
    }
    std::cerr << "seqpar generate: " << j.dump() << std::endl;
  }
  return 0;
}

}  // namespace

std::unique_ptr<Command> make_generate_command(CLI::App& app) {
  return std::make_unique<GenerateCommand>(app);
}

}  // namespace seqpar
