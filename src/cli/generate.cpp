#include "cli/generate.hpp"

#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/hash.hpp"
#include "core/memory.hpp"
#include "core/threads.hpp"
#include "data/tokenizer.hpp"
#include "infer/generate.hpp"
#include "parallel/attention.hpp"
#include "train/checkpoint.hpp"
#include "train/data.hpp"

namespace seqpar {

namespace {

struct Args {
  std::string checkpoint, prompt, prompt_file, tokenizer, strategy, layout = "contiguous";
  std::string max_memory = "available";
  int64_t max_new = 128;
  double temperature = 1.0, top_p = 1.0;
  int top_k = 0, sp = 1, tp = 1, threads = 0;
  int64_t seed = 1234;
  bool prompt_given = false, prompt_file_given = false;
} g_args;

// The step directory `path` stands for: a step directory (it has manifest.json), a
// checkpoints/ root or a run directory (their newest complete step).
std::string resolve_step_dir(const std::string& path) {
  namespace fs = std::filesystem;
  SP_CHECK_USAGE(fs::exists(path), "checkpoint '", path, "' does not exist");
  if (fs::exists(path + "/manifest.json")) return path;
  std::string root = fs::is_directory(path + "/checkpoints") ? path + "/checkpoints" : path;
  const auto all = list_checkpoints(root);
  for (auto it = all.rbegin(); it != all.rend(); ++it)
    if (it->complete) return it->dir;
  SP_FAIL_USAGE("'", path,
                "' holds no complete checkpoint (a step directory with a "
                "manifest.json)");
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  SP_CHECK_USAGE(f.good(), "prompt file '", path, "' cannot be opened");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::string hex64(uint64_t h) {
  char b[19];
  std::snprintf(b, sizeof b, "0x%016llx", static_cast<unsigned long long>(h));
  return b;
}

void write_out(const std::string& s) { std::cout << s << std::flush; }

}  // namespace

CLI::App* add_generate_command(CLI::App& app) {
  CLI::App* g = app.add_subcommand(
      "generate",
      "Generate text from a checkpoint (gpt or llama) with a KV cache. Under mpiexec -n N "
      "with --sp N the prompt's prefill is sequence-parallel (each rank holds its shard of "
      "the KV cache; every decode step merges the ranks' partial attention by log-sum-exp), "
      "so prompts longer than one rank's memory can be used. The text streams to stdout; "
      "figures (prefill tokens/s, decode ms/token) go to stderr as one JSON line.");
  Args& a = g_args;
  g->add_option("--checkpoint,--run", a.checkpoint,
                "a step directory, a checkpoints/ root or a run directory (its newest complete "
                "checkpoint)")
      ->required();
  g->add_option("--prompt", a.prompt, "the prompt text");
  g->add_option("--prompt-file", a.prompt_file, "read the prompt from this file");
  g->add_option("--max-new-tokens", a.max_new, "tokens to generate, default 128")
      ->capture_default_str();
  g->add_option(
       "--temperature", a.temperature,
       "sampling temperature; 0 = greedy (argmax: the same tokens for any mesh), default 1")
      ->capture_default_str();
  g->add_option("--top-k", a.top_k, "sample among the k most likely tokens (0 = all), default 0");
  g->add_option("--top-p", a.top_p,
                "nucleus sampling: the smallest set of tokens whose probability reaches p, "
                "default 1 (all)");
  g->add_option("--seed", a.seed, "sampling seed, default 1234");
  g->add_option("--tokenizer", a.tokenizer,
                "SentencePiece .model of a subword model (checked against the model's tokenizer "
                "hash); default: data/kjv-bpe8k.model for models trained on kjv-bpe8k. Byte "
                "models need none");
  g->add_option("--sp", a.sp, "sequence-parallel degree N for the prefill (world = tp · sp)");
  g->add_option("--tp", a.tp, "Megatron tensor-parallel degree (world = tp · sp)");
  g->add_option("--sp-strategy", a.strategy,
                "the prefill's attention strategy: ring (default for sp > 1), allgather, "
                "ulysses, usp, mqsp, rsa; local for sp 1");
  g->add_option("--layout", a.layout,
                "token layout of the prefill: contiguous (default), zigzag "
                "or striped");
  g->add_option("--max-memory", a.max_memory,
                "per-rank limit for the whole process (weights, prefill activations, KV cache, "
                "runtime); refused up front when the prompt needs more; default 'available'");
  g->add_option("--threads", a.threads, "threads per rank (0 = cores / ranks), default 0");
  g->callback([g] {
    g_args.prompt_given = g->count("--prompt") > 0;
    g_args.prompt_file_given = g->count("--prompt-file") > 0;
  });
  return g;
}

nlohmann::json generate_options() {
  const Args& a = g_args;
  SP_CHECK_USAGE(a.prompt_given != a.prompt_file_given,
                 "give the prompt with exactly one of --prompt and --prompt-file");
  SP_CHECK_USAGE(a.max_new >= 0, "--max-new-tokens must be >= 0, got ", a.max_new);
  SP_CHECK_USAGE(a.temperature >= 0, "--temperature must be >= 0, got ", a.temperature);
  SP_CHECK_USAGE(a.top_k >= 0, "--top-k must be >= 0, got ", a.top_k);
  SP_CHECK_USAGE(a.top_p > 0 && a.top_p <= 1, "--top-p must be in (0, 1], got ", a.top_p);
  SP_CHECK_USAGE(a.sp >= 1 && a.tp >= 1, "--sp and --tp must be >= 1, got ", a.sp, " and ", a.tp);
  const std::string strategy = a.strategy.empty() ? (a.sp > 1 ? "ring" : "local") : a.strategy;
  const auto names = attention_strategies();
  SP_CHECK_USAGE(std::find(names.begin(), names.end(), strategy) != names.end(),
                 "unknown --sp-strategy '", strategy, "'");
  SP_CHECK_USAGE(a.sp > 1 || strategy == "local" || strategy == "materialized", "--sp-strategy ",
                 strategy, " needs --sp > 1");
  (void)parse_layout(a.layout);
  if (a.max_memory != "available") (void)parse_bytes(a.max_memory, "max_memory");
  // The prompt itself is compared by its hash: every rank must read the same text.
  const std::string text = a.prompt_file_given ? read_text(a.prompt_file) : a.prompt;
  return {{"checkpoint", a.checkpoint},
          {"prompt_hash", fnv1a64(text.data(), text.size())},
          {"max_new_tokens", a.max_new},
          {"temperature", a.temperature},
          {"top_k", a.top_k},
          {"top_p", a.top_p},
          {"seed", a.seed},
          {"tokenizer", a.tokenizer},
          {"sp", a.sp},
          {"tp", a.tp},
          {"strategy", strategy},
          {"layout", a.layout},
          {"max_memory", a.max_memory},
          {"threads", a.threads}};
}

int run_generate(Comm& world) {
  const Args& a = g_args;
  const nlohmann::json opt = generate_options();
  const bool rank0 = world.rank() == 0;
  SP_CHECK_USAGE(world.size() == a.sp * a.tp, "generate runs on tp·sp ranks: ", world.size(),
                 " ranks, --tp ", a.tp, " × --sp ", a.sp, " = ", a.sp * a.tp);
  int threads = a.threads;
  if (threads == 0) {
    threads = std::max(1, omp_get_num_procs() / world.size());
    if (const char* e = std::getenv("OMP_NUM_THREADS")) threads = std::max(1, std::atoi(e));
  }
  set_num_threads(threads);

  // The checkpoint's model, and the tokenizer that goes with it (every rank, agreed).
  std::string dir;
  ModelConfig cfg;
  nlohmann::json manifest;
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> prompt;
  agree_or_throw(world, [&] {
    dir = resolve_step_dir(a.checkpoint);
    std::ifstream f(dir + "/manifest.json");
    SP_CHECK(f.good(), "checkpoint ", dir, " has no readable manifest.json");
    manifest = nlohmann::json::parse(f, nullptr, false);
    SP_CHECK(manifest.is_object() && manifest.contains("model"), "checkpoint ", dir,
             ": manifest.json is not a seqpar manifest");
    cfg = ModelConfig::from_json(manifest["model"]);
    std::string tpath = a.tokenizer;
    if (cfg.tokenizer_hash != 0 && tpath.empty()) {
      const std::string data = manifest.value("train", nlohmann::json::object()).value("data", "");
      SP_CHECK_USAGE(data == "kjv-bpe8k", "checkpoint ", dir, " is a subword model (tokenizer ",
                     "hash ", hex64(cfg.tokenizer_hash),
                     "): give its SentencePiece model with "
                     "--tokenizer");
      tpath = token_file_path(data);
      tpath = tpath.substr(0, tpath.size() - 4) + ".model";
    }
    if (cfg.tokenizer_hash == 0) {
      SP_CHECK_USAGE(a.tokenizer.empty(), "checkpoint ", dir, " is a byte-level model (V = ", cfg.V,
                     "); --tokenizer ", a.tokenizer, " does not apply to it");
    } else {
      tok = std::make_unique<Tokenizer>(tpath);
      SP_CHECK_USAGE(tok->hash() == cfg.tokenizer_hash, "tokenizer ", tpath, " (hash ",
                     hex64(tok->hash()), ") is not the one the model of ", dir,
                     " was trained with (hash ", hex64(cfg.tokenizer_hash), ")");
    }
    const std::string text = a.prompt_file_given ? read_text(a.prompt_file) : a.prompt;
    if (tok)
      prompt = tok->encode(text);
    else
      for (unsigned char c : text) prompt.push_back(int32_t(c));
    SP_CHECK_USAGE(!prompt.empty(), "the prompt is empty: generation needs at least one token");
  });
  GenerateMesh gm;
  gm.sp = a.sp;
  gm.tp = a.tp;
  gm.strategy = opt["strategy"];
  gm.layout = parse_layout(a.layout);

  // The whole process against --max-memory before anything is allocated: the dry-run
  // peak (weights, prefill shard, decode, KV cache), the runtime baseline, and the one
  // global tensor the load holds at a time (the largest).
  const int64_t n = int64_t(prompt.size());
  const uint64_t peak = generation_peak_bytes(cfg, gm, world, n, a.max_new);
  warm_up_runtimes();
  warm_up_transport(world);
  int64_t largest = 0;
  for (const ParamSpec& s : param_specs(cfg, 1, 0)) largest = std::max(largest, s.numel);
  int64_t v[2] = {int64_t(process_rss_bytes()), -int64_t(available_memory_bytes())};
  world.allreduce_max(v, 2);
  const uint64_t ckpt = uint64_t(4 * largest);
  const uint64_t total = peak + uint64_t(v[0]) + ckpt;
  const uint64_t limit =
      a.max_memory != "available" ? parse_bytes(a.max_memory, "max_memory") : uint64_t(-v[1]);
  if (limit > 0 && total > limit) {
    UsageError e("a prompt of " + std::to_string(n) + " tokens with --max-new-tokens " +
                 std::to_string(a.max_new) + " needs " + format_bytes(total) +
                 " per rank under --sp " + std::to_string(a.sp) + " --tp " + std::to_string(a.tp) +
                 " (weights, prefill and KV " + "cache " + format_bytes(peak) + ", runtime " +
                 format_bytes(uint64_t(v[0])) + ", checkpoint read " + format_bytes(ckpt) +
                 "), more than " +
                 (a.max_memory != "available" ? "--max-memory " + a.max_memory
                                              : std::string("the machine offers")) +
                 " (" + format_bytes(limit) + "); shorten the prompt or raise --sp");
    e.agreed = true;  // every rank computed the same reduced figures
    throw e;
  }

  Arena arena;
  Generator gen(cfg, gm, world, arena, n, a.max_new);
  // The weights, one global tensor at a time (the manifest's sizes and hashes verified
  // first); the optimizer file is not read.
  agree_or_throw(world, [&] {
    const Checkpoint ck = open_checkpoint(dir);
    const SafetensorsReader reader(ck.dir + "/model.safetensors");
    std::vector<float> buf;
    gen.load_weights([&](const std::string& name,
                         const std::vector<int64_t>& shape) -> const std::vector<float>* {
      const SafetensorsReader::Entry* e = reader.find(name);
      SP_CHECK(e, "checkpoint ", ck.dir, " has no tensor '", name, "'");
      SP_CHECK(e->shape == shape, "checkpoint tensor '", name,
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
  std::vector<float> logits = gen.prefill(prompt);
  const auto t0 = std::chrono::steady_clock::now();
  int64_t decoded = 0;
  for (int64_t k = 0; k < a.max_new; ++k) {
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
    if (k + 1 < a.max_new) {
      logits = gen.step(next);
      ++decoded;
    }
  }
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
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
                        {"sp", a.sp},
                        {"tp", a.tp},
                        {"strategy", gm.strategy},
                        {"tokens", out}};
    std::cerr << "seqpar generate: " << j.dump() << std::endl;
  }
  return 0;
}

}  // namespace seqpar
