#include "train/config.hpp"

#include <algorithm>
#include <cmath>

#include "core/check.hpp"
#include "core/memory.hpp"
#include "parallel/attention.hpp"

namespace seqpar {

namespace {

using TC = TrainConfig;
#define SP_FIELD(f) \
  [](TC & c) -> auto& { return c.f; }

// The run's own rows, in the order --help lists them. Long because it is the table: one
// declaration per setting, nothing else.
OptionTable<TC> own_options() {
  OptionTable<TC> t;
  auto add = [&](Option<TC> o) -> Option<TC>& { return t.emplace_back(std::move(o)); };
  const unsigned all = kTrainLike, mesh = kTrainLike | kEval | kGenerate;
  add(option<TC>("data", SP_FIELD(data), "--data",
                 "training data: 'kjv' (King James Bible from Debian's bible-kjv, bytes), "
                 "'kjv-bpe8k' (the same as 8k BPE tokens, built by scripts/setup.sh), 'passkey' "
                 "(synthetic long-range retrieval, the needle in the first half), "
                 "'passkey-anywhere' (the same, the needle at any depth), a token file (seqpar "
                 "tokenize encode) or any text file (bytes)",
                 all))
      .resume();
  add(option<TC>("pack_documents", SP_FIELD(pack_documents),
                 "--pack-documents,!--no-pack-documents",
                 "keep attention and loss inside each document of a sample (token files only: "
                 "their document table; bytes are refused): a token attends only to its own "
                 "document, and a document's last token has no target (the next document's "
                 "first token)",
                 all))
      .resume();
  add(option<TC>("doc_positions", SP_FIELD(doc_positions), "--doc-positions",
                 "RoPE positions with --pack-documents: global (Megatron's: the position in the "
                 "packed sequence) or reset (0 at each document start); needs --pack-documents",
                 all))
      .resume();
  add(option<TC>("window", SP_FIELD(window), "--window",
                 "sliding-window attention over W keys: query i sees keys i-W < j <= i (bert: "
                 "|i-j| < W, symmetric), within its document when packing; 0 = off",
                 all))
      .resume()
      .at_least(0, " (0 = off)");
  add(option<TC>("seq_len", SP_FIELD(seq_len), "--seq-len,-L",
                 "global sequence length L in tokens (bytes); eval: the run's unless given "
                 "(a longer one measures a context extension, docs/extend.md)",
                 all | kEval))
      .resume()
      .within(2, double(int64_t(1) << 40));
  add(option<TC>("max_memory", SP_FIELD(max_memory), "--max-memory",
                 "per-rank limit for the whole process (arena peak, with the checkpoint's stream "
                 "buffer, + runtime baseline + step reserve of 8 MiB + 1% of the arena; for "
                 "generate: weights, prefill activations, KV cache, runtime), e.g. 8GiB; refused "
                 "up front, before any allocation, when the plan exceeds it; 'available' is the "
                 "memory the machine offers, smallest over ranks",
                 all | kGenerate))
      .not_identity()
      .check_with([](const TC& c) {
        if (c.max_memory != "available") parse_bytes(c.max_memory, "--max-memory");
      });
  add(option<TC>("batch", SP_FIELD(batch), "--batch,-B",
                 "sequences per data-parallel replica per step", all | kEval))
      .within(1, 1 << 20);
  add(option<TC>("steps", SP_FIELD(steps), "--steps", "optimizer steps", all)).resume().at_least(0);
  add(option<TC>("lr", SP_FIELD(lr), "--lr", "peak learning rate", all))
      .resume()
      .check([](const TC& c) { return c.lr > 0 && std::isfinite(c.lr); }, "must be > 0");
  add(option<TC>("min_lr", SP_FIELD(min_lr), "--min-lr",
                 "final learning rate of the cosine schedule (at most lr)", all))
      .resume()
      .at_least(0);
  add(option<TC>("warmup", SP_FIELD(warmup), "--warmup", "linear warm-up steps", all))
      .resume()
      .at_least(0);
  add(option<TC>("weight_decay", SP_FIELD(weight_decay), "--weight-decay",
                 "AdamW decoupled weight decay on matrices", all))
      .resume()
      .at_least(0);
  add(option<TC>("beta1", SP_FIELD(beta1), "--beta1", "AdamW β1", all)).resume().within(0, 1, true);
  add(option<TC>("beta2", SP_FIELD(beta2), "--beta2", "AdamW β2", all)).resume().within(0, 1, true);
  add(option<TC>("eps", SP_FIELD(eps), "--adam-eps", "AdamW ε", all)).resume().above(0);
  add(option<TC>("grad_clip", SP_FIELD(grad_clip), "--grad-clip",
                 "clip the global gradient norm to this (0 = off)", all))
      .resume()
      .at_least(0, " (0 = off)");
  add(option<TC>("seed", SP_FIELD(seed), "--seed",
                 "seed of initialisation, data sampling, masking and dropout", all))
      .resume();
  add(option<TC>("out", SP_FIELD(out), "--out",
                 "run directory: config.json, metrics.jsonl, checkpoints/", all))
      .shows_default("runs/default, or runs/default-2, -3, ... when that already holds checkpoints")
      .check([](const TC& c) { return !c.out.empty(); }, "directory must not be empty");
  add(option<TC>("ckpt_every", SP_FIELD(ckpt_every), "--ckpt-every",
                 "checkpoint every N steps (0 = only at the end and on SIGTERM)", all))
      .at_least(0);
  add(option<TC>("threads", SP_FIELD(threads), "--threads",
                 "threads per rank (0 = OMP_NUM_THREADS, else the node's cores / ranks), at most "
                 "1024",
                 mesh))
      .within(0, kMaxThreads);
  add(option<TC>("log_every", SP_FIELD(log_every), "--log-every",
                 "log a metrics line every N steps", all))
      .at_least(1);
  add(option<TC>("progress", SP_FIELD(progress), "--progress",
                 "auto (bar on a terminal, lines otherwise), bar, lines or none", all));
  add(option<TC>("profile", SP_FIELD(profile), "--profile,!--no-profile",
                 "per-phase times (data, attention_fwd/bwd, linear, norm_act, loss, comm, "
                 "optimizer, other; rank 0's): train writes each step's to metrics.jsonl "
                 "(\"profile_ms\") and prints a one-line breakdown at the end (seqpar plot draws "
                 "profile.png); eval and generate add \"profile_ms\" to their report (generate: "
                 "prefill and decode). Off by default; changes no result",
                 kTrain | kEval | kGenerate))
      .not_identity();
  add(option<TC>("sp", SP_FIELD(sp), "--sp", "sequence-parallel degree N (world = dp · tp · sp)",
                 mesh))
      .launch()
      .at_least(1);
  add(option<TC>("sp_strategy", SP_FIELD(strategy), "--sp-strategy",
                 "attention strategy: local (1 rank), ring, allgather, ulysses, usp, mqsp, rsa, "
                 "or materialized (sp 1: keeps every T×T score matrix, the Megatron paper's "
                 "baseline); generate's default is ring when --sp > 1",
                 mesh))
      .launch();
  add(option<TC>("layout", SP_FIELD(layout), "--layout",
                 "token layout over the sp ranks: contiguous, zigzag (balances causal work) or "
                 "striped (stripes of up to 64 tokens dealt round-robin: balances packed "
                 "documents). Any L >= sp splits; shards differ by at most one token (a stripe)",
                 mesh))
      .launch();
  add(option<TC>("mqsp_micro", SP_FIELD(mqsp_micro), "--mqsp-micro",
                 "MQSP micro-query chunks m (0 = sp)", all | kEval))
      .launch()
      .at_least(0, " (0 = sp)");
  add(option<TC>("usp_ulysses", SP_FIELD(usp_ulysses), "--usp-ulysses",
                 "USP: Ulysses group size u with sp = u·r (0 = largest u dividing sp and Hkv)",
                 all | kEval))
      .launch()
      .at_least(0, " (0 = automatic)");
  add(option<TC>("tp", SP_FIELD(tp), "--tp",
                 "Megatron tensor (+ sequence) parallel degree t (world = dp · tp · sp)", mesh))
      .launch()
      .at_least(1);
  {
    Option<TC>& o = add(option<TC>(
        "tp_sp", SP_FIELD(tp_sp), "--tp-sp",
        "Megatron sequence parallelism in the tp group: on (LayerNorm, dropout, residual on "
        "L/t tokens; all-gather + reduce-scatter) or off (all-reduce)",
        all | kEval));
    o.launch();
    o.kind = OptionKind::on_off;
    o.choices = {"on", "off"};
  }
  add(option<TC>("zero", SP_FIELD(zero), "--zero",
                 "ZeRO sharding over the ranks holding the same parameters (dp x sp of a tp "
                 "rank): 0 off, 1 AdamW moments, 2 + gradients (reduce-scattered per layer), 3 + "
                 "parameters (all-gathered per layer before its forward and backward); "
                 "checkpoints resume under any level",
                 all))
      .check([](const TC& c) { return c.zero >= 0 && c.zero <= 3; }, "must be 0, 1, 2 or 3");
  add(option<TC>("recompute", SP_FIELD(recompute), "--recompute",
                 "activation recomputation: none, selective (attention core) or full (each "
                 "layer)",
                 all));
  add(option<TC>("loss", SP_FIELD(loss), "--loss",
                 "fused (hidden states to the loss in chunks of tokens and vocabulary, no "
                 "logits buffer) or materialized (the (rows, V) logits and their gradient in "
                 "full)",
                 all | kEval));
  add(option<TC>("loss_chunk", SP_FIELD(loss_chunk), "--loss-chunk",
                 "fused loss: tokens per chunk (0 = the kernel's default)", all))
      .at_least(0, " (0 = default)");
  add(option<TC>("precision", SP_FIELD(precision), "--precision",
                 "storage of the activations saved for backward: fp32 or bf16 (half the "
                 "activation memory; compute, statistics, weights and optimizer stay fp32; "
                 "docs/precision.md)",
                 all));
  add(option<TC>("loss_on", SP_FIELD(loss_on), "--loss-on",
                 "targets the loss counts: all or answer (only a retrieval task's answer "
                 "digits, e.g. --data passkey; the others get no loss)",
                 all | kEval))
      .resume();
  add(option<TC>("eval_every", SP_FIELD(eval_every), "--eval-every",
                 "every K steps and after the last, the loss on the held-out validation split "
                 "(val_loss, val_ppl in metrics.jsonl); 0 = off",
                 all))
      .at_least(0, " (0 = off)");
  add(option<TC>("eval_batches", SP_FIELD(eval_batches), "--eval-batches",
                 "global batches (batch · dp sequences each) per evaluation", all | kEval))
      .within(1, 1 << 24);
  // What this launch does with the run, not what the run is.
  add(option<TC>("resume", SP_FIELD(resume), "--resume",
                 "continue from the newest complete checkpoint in <out>/checkpoints, if any; the "
                 "data position, weights and optimizer continue, batch and mesh may change",
                 kTrain))
      .not_identity();
  add(option<TC>("init_from", SP_FIELD(init_from), "--init-from",
                 "start a fresh run from the weights of a Hugging Face model directory "
                 "(LlamaForCausalLM or MistralForCausalLM: config.json, model.safetensors or its "
                 "shards, tokenizer.model; see seqpar import); the model's settings come from "
                 "its config.json",
                 kTrain))
      .not_identity();
  add(option<TC>("stop_after", SP_FIELD(stop_after), "--stop-after",
                 "checkpoint and stop after N steps, as a preempted job would (0 = off)", kTrain))
      .not_identity()
      .at_least(0);
  add(option<TC>("overrides", SP_FIELD(overrides), "--override",
                 "with --resume: accept a new value for this setting (repeatable)", kTrain))
      .not_identity();
  return t;
}
#undef SP_FIELD

const OptionTable<TC>& own_table() {
  static const OptionTable<TC> t = own_options();
  return t;
}

}  // namespace

const OptionTable<TrainConfig>& train_options() {
  static const OptionTable<TC> rows = [] {
    OptionTable<TC> t = project_options<TC, ModelConfig>(
        model_options(), [](TC & c) -> auto& { return c.model; });
    for (const auto& o : own_table()) t.push_back(o);
    return t;
  }();
  return rows;
}

void TrainConfig::validate() const {
  model.validate();
  check_options(own_table(), *this);
  SP_CHECK_USAGE(min_lr <= lr, "min_lr must be in [0, lr=", lr, "], got ", min_lr);
  // Sizes that scale with user numbers, bounded before anything is planned or allocated
  // (long double: no overflow): one layer's activations of the whole batch on one rank
  // (a rank holds at least L/sp tokens, sp <= L), and eval's per-sample records.
  const long double rows = (long double)batch * (long double)seq_len;
  const long double widest = std::max({4.0L * model.C, 2.0L * model.F, (long double)model.V});
  SP_CHECK_USAGE(rows * widest * (model.n_layer + 1) <= 0x1p56L,
                 "batch·seq_len·width·layers = ", batch, "·", seq_len, "·", double(widest), "·",
                 model.n_layer + 1, " = ", double(rows * widest * (model.n_layer + 1)),
                 " activation floats is beyond what one process can hold (2^56); lower --batch "
                 "or --seq-len");
  SP_CHECK_USAGE((long double)eval_batches * batch <= 0x1p26L,
                 "eval_batches·batch = ", eval_batches, "·", batch,
                 " sequences per evaluation is beyond 2^26; lower "
                 "--eval-batches");
  SP_CHECK_USAGE(seq_len / sp <= (int64_t(1) << 30), "seq_len/sp = ", seq_len / sp,
                 " tokens per rank is beyond what this engine indexes (2^30); use more ranks");
  SP_CHECK_USAGE(doc_positions == DocPositions::global || pack_documents, "doc_positions ",
                 enum_name(doc_positions),
                 " needs --pack-documents: without documents every row is one document that "
                 "starts at position 0, so its positions are the global ones");
  SP_CHECK_USAGE(!(pack_documents || window > 0) || applies_masks(strategy), "attention strategy '",
                 enum_name(strategy), "' does not support ",
                 pack_documents ? "document masks (--pack-documents)" : "",
                 pack_documents && window > 0 ? " or " : "",
                 window > 0 ? "a sliding window (--window " + std::to_string(window) + ")" : "",
                 " yet; strategies that do: ", join_choices(mask_strategies(), ", "));
  for (const std::string& k : overrides)
    SP_CHECK_USAGE(std::find(resume_keys().begin(), resume_keys().end(), k) != resume_keys().end(),
                   "--override ", k,
                   ": not a setting resume checks (those are: ", resume_keys_list(), ")");
}

namespace {

// Every strategy but the one-rank ones (local, materialized).
std::vector<std::string> sequence_parallel_strategies() {
  std::vector<std::string> names;
  for (const std::string& n : attention_strategies())
    if (n != enum_name(Strategy::local) && n != enum_name(Strategy::materialized))
      names.push_back(n);
  return names;
}

}  // namespace

void TrainConfig::validate_for_world(int world) const {
  SP_CHECK_USAGE(world % (sp * tp) == 0, "world size ", world, " is not divisible by tp·sp = ", tp,
                 "·", sp, " (world = dp · tp · sp)");
  check_shardable(seq_len, sp, layout);
  // Megatron sequence parallelism gives each tp rank at least one of the B·T rows of the
  // shortest shard.
  const int64_t rows = int64_t(batch) * (seq_len / sp);
  SP_CHECK_USAGE(!tp_sp || tp == 1 || rows >= tp, "batch·⌊seq_len/sp⌋ = ", batch, "·", seq_len / sp,
                 " = ", rows, " rows per sequence shard are fewer than tp=", tp,
                 ": raise --batch or --seq-len");
  SP_CHECK_USAGE(strategy != Strategy::mqsp || mqsp_micro <= seq_len,
                 "mqsp: micro-query count m=", mqsp_micro, " must be at most L=", seq_len);
  // The strategies' own factories assert these too; here they are the user's settings.
  SP_CHECK_USAGE(
      sp == 1 || (strategy != Strategy::local && strategy != Strategy::materialized),
      "--sp-strategy ", enum_name(strategy), " runs with --sp 1 only, got --sp ", sp,
      "; pick a sequence-parallel strategy: ", join_choices(sequence_parallel_strategies(), ", "));
  SP_CHECK_USAGE(strategy != Strategy::usp || usp_ulysses == 0 || sp % usp_ulysses == 0,
                 "--usp-ulysses ", usp_ulysses, " does not divide --sp ", sp,
                 " (usp needs sp = u·r: valid u are the divisors of ", sp, ")");
  param_specs(model, tp, 0);  // heads, kv heads and ffn width divide over tp
}

nlohmann::json TrainConfig::to_json() const { return options_to_json(train_options(), *this); }

nlohmann::json TrainConfig::all_to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& o : train_options()) j[o.key] = o.get(*this);
  return j;
}

void TrainConfig::merge_json(const nlohmann::json& j) {
  merge_options(train_options(), *this, j);
  // --override seq-len names the key seq_len.
  for (std::string& k : overrides) std::replace(k.begin(), k.end(), '-', '_');
}

const std::vector<std::string>& resume_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k;
    for (const auto& o : train_options())
      if (o.resume_key) k.push_back(o.key);
    return k;
  }();
  return keys;
}

std::string resume_keys_list() { return join_choices(resume_keys(), ", "); }

float lr_at(const TrainConfig& c, int64_t s) {
  if (s < c.warmup) return c.lr * float(s + 1) / float(c.warmup);
  const int64_t decay_steps = std::max<int64_t>(1, c.steps - c.warmup);
  const double progress = std::min(1.0, double(s - c.warmup) / double(decay_steps));
  return float(c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace seqpar
