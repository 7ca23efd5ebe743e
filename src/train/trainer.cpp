#include "train/trainer.hpp"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "core/check.hpp"
#include "core/threads.hpp"
#include "kernels/ops.hpp"
#include "model/model.hpp"
#include "parallel/layout.hpp"
#include "train/checkpoint.hpp"
#include "train/data.hpp"
#include "train/planner.hpp"
#include "train/progress.hpp"

namespace seqpar {

namespace {
volatile std::sig_atomic_t g_stop_signal = 0;
void on_stop_signal(int sig) { g_stop_signal = sig; }
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

void TrainConfig::validate() const {
  model.validate();
  SP_CHECK(seq_len >= 2, "seq_len must be >= 2, got ", seq_len);
  SP_CHECK(batch >= 1, "batch must be >= 1, got ", batch);
  SP_CHECK(steps >= 0, "steps must be >= 0, got ", steps);
  SP_CHECK(lr > 0 && std::isfinite(lr), "lr must be > 0, got ", lr);
  SP_CHECK(min_lr >= 0 && min_lr <= lr, "min_lr must be in [0, lr=", lr, "], got ", min_lr);
  SP_CHECK(warmup >= 0, "warmup must be >= 0, got ", warmup);
  SP_CHECK(weight_decay >= 0, "weight_decay must be >= 0, got ", weight_decay);
  SP_CHECK(beta1 >= 0 && beta1 < 1, "beta1 must be in [0, 1), got ", beta1);
  SP_CHECK(beta2 >= 0 && beta2 < 1, "beta2 must be in [0, 1), got ", beta2);
  SP_CHECK(eps > 0, "eps must be > 0, got ", eps);
  SP_CHECK(grad_clip >= 0, "grad_clip must be >= 0 (0 = off), got ", grad_clip);
  SP_CHECK(ckpt_every >= 0, "ckpt_every must be >= 0, got ", ckpt_every);
  SP_CHECK(log_every >= 1, "log_every must be >= 1, got ", log_every);
  SP_CHECK(stop_after >= 0, "stop_after must be >= 0, got ", stop_after);
  SP_CHECK(threads >= 0, "threads must be >= 0, got ", threads);
  SP_CHECK(sp >= 1, "sp must be >= 1, got ", sp);
  SP_CHECK(seq_len / sp <= (int64_t(1) << 30), "seq_len/sp = ", seq_len / sp,
           " tokens per rank is beyond what this engine indexes (2^30); use more ranks");
  SP_CHECK(tp >= 1, "tp must be >= 1, got ", tp);
  parse_recompute(recompute);
  SP_CHECK(mqsp_micro >= 0, "mqsp_micro must be >= 0 (0 = sp), got ", mqsp_micro);
  SP_CHECK(usp_ulysses >= 0, "usp_ulysses must be >= 0 (0 = automatic), got ", usp_ulysses);
  SP_CHECK(progress == "auto" || progress == "bar" || progress == "lines" || progress == "none",
           "progress must be auto, bar, lines or none, got '", progress, "'");
  SP_CHECK(!out.empty(), "out directory must not be empty");
  parse_layout(layout);
}

nlohmann::json TrainConfig::to_json() const {
  nlohmann::json j = model.to_json();
  j.update({{"seq_len", seq_len},
            {"batch", batch},
            {"steps", steps},
            {"lr", lr},
            {"min_lr", min_lr},
            {"warmup", warmup},
            {"weight_decay", weight_decay},
            {"beta1", beta1},
            {"beta2", beta2},
            {"eps", eps},
            {"grad_clip", grad_clip},
            {"seed", seed},
            {"data", data},
            {"out", out},
            {"ckpt_every", ckpt_every},
            {"threads", threads},
            {"log_every", log_every},
            {"progress", progress},
            {"sp_strategy", strategy},
            {"sp", sp},
            {"layout", layout},
            {"mqsp_micro", mqsp_micro},
            {"usp_ulysses", usp_ulysses},
            {"tp", tp},
            {"recompute", recompute},
            {"tp_sp", tp_sp}});
  return j;
}

void TrainConfig::merge_json(const nlohmann::json& j) {
  SP_CHECK(j.is_object(), "config must be a JSON object");
  static const char* known[] = {
      "model", "layers",     "dim",          "heads",      "kv_heads",   "ffn",
      "vocab", "dropout",    "attn_dropout", "rope_theta", "init_std",   "seq_len",
      "batch", "steps",      "lr",           "min_lr",     "warmup",     "weight_decay",
      "beta1", "beta2",      "eps",          "grad_clip",  "seed",       "data",
      "out",   "ckpt_every", "threads",      "log_every",  "progress",   "sp_strategy",
      "sp",    "layout",     "resume",       "stop_after", "mqsp_micro", "usp_ulysses",
      "tp",    "recompute",  "tp_sp"};
  for (auto& [k, v] : j.items()) {
    bool ok = false;
    for (const char* n : known) ok |= k == n;
    SP_CHECK(ok, "unknown config key '", k, "'");
  }
  nlohmann::json m = model.to_json();
  for (auto& [k, v] : j.items())
    if (m.contains(k)) m[k] = v;
  // Width-dependent defaults (ffn = 4·dim, kv_heads = heads) follow the new values unless set.
  if (!j.contains("ffn") && j.contains("dim")) m.erase("ffn");
  if (!j.contains("kv_heads") && j.contains("heads")) m.erase("kv_heads");
  if (!j.contains("vocab") && j.contains("model")) m.erase("vocab");
  try {
    model = ModelConfig::from_json(m);
    auto get = [&](const char* key, auto& field) { json_get(j, key, field); };
    get("seq_len", seq_len);
    get("batch", batch);
    get("steps", steps);
    get("lr", lr);
    get("min_lr", min_lr);
    get("warmup", warmup);
    get("weight_decay", weight_decay);
    get("beta1", beta1);
    get("beta2", beta2);
    get("eps", eps);
    get("grad_clip", grad_clip);
    get("seed", seed);
    get("data", data);
    get("out", out);
    get("ckpt_every", ckpt_every);
    get("threads", threads);
    get("log_every", log_every);
    get("progress", progress);
    get("sp_strategy", strategy);
    get("sp", sp);
    get("layout", layout);
    get("resume", resume);
    get("stop_after", stop_after);
    get("mqsp_micro", mqsp_micro);
    get("usp_ulysses", usp_ulysses);
    get("tp", tp);
    get("recompute", recompute);
    get("tp_sp", tp_sp);
  } catch (const nlohmann::json::exception& e) {
    SP_FAIL("config value of the wrong type: ", e.what());
  }
}

float lr_at(const TrainConfig& c, int64_t s) {
  if (s < c.warmup) return c.lr * float(s + 1) / float(c.warmup);
  const int64_t decay_steps = std::max<int64_t>(1, c.steps - c.warmup);
  const double progress = std::min(1.0, double(s - c.warmup) / double(decay_steps));
  return float(c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * progress)));
}

namespace {

// Full (unsharded) tensors of a parameter-shaped block: tensor-parallel shards are
// all-gathered over the tp group and placed by each rank's segments, so a checkpoint does
// not depend on the layout it was saved from. Collective over tp (when given).
std::vector<NamedTensor> gather_tensors(const ModelConfig& cfg, const std::vector<ParamSpec>& specs,
                                        const float* block, const std::string& prefix, Comm* tp) {
  const int t = tp ? tp->size() : 1;
  std::vector<std::vector<ParamSpec>> rank_specs;
  for (int r = 0; r < t; ++r) rank_specs.push_back(param_specs(cfg, t, r));
  std::vector<NamedTensor> out;
  out.reserve(specs.size());
  std::vector<float> all;
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    int64_t n = 1;
    for (int64_t x : s.global_shape) n *= x;
    NamedTensor nt{prefix + s.name, s.global_shape, std::vector<float>(n)};
    if (s.replicated || t == 1) {
      shard_to_global(s, block + s.offset, nt.data.data());
    } else {
      all.resize(size_t(s.numel) * t);
      tp->allgather(block + s.offset, all.data(), size_t(s.numel));
      for (int r = 0; r < t; ++r)
        shard_to_global(rank_specs[r][i], all.data() + size_t(s.numel) * r, nt.data.data());
    }
    out.push_back(std::move(nt));
  }
  return out;
}

void scatter_tensors(const std::vector<ParamSpec>& specs, float* block,
                     const std::vector<NamedTensor>& tensors, const std::string& prefix,
                     const std::string& file) {
  std::map<std::string, const NamedTensor*> by_name;
  for (const auto& t : tensors) by_name[t.name] = &t;
  for (const auto& s : specs) {
    auto it = by_name.find(prefix + s.name);
    SP_CHECK(it != by_name.end(), "checkpoint ", file, " has no tensor '", prefix + s.name, "'");
    SP_CHECK(it->second->shape == s.global_shape, "checkpoint tensor '", prefix + s.name,
             "' has a different shape than the model (", it->second->data.size(), " elements)");
    shard_from_global(s, it->second->data.data(), block + s.offset);
  }
}

std::string human_bytes(double b) {
  const char* u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int i = 0;
  while (b >= 1024 && i < 4) {
    b /= 1024;
    ++i;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %s", b, u[i]);
  return buf;
}

}  // namespace

TrainResult train(const TrainConfig& cfg, Comm& world) {
  cfg.validate();
  // Every rank must run the same configuration: refuse on every rank before any work.
  nlohmann::json shared_cfg = cfg.to_json();
  world.check_same("configuration", shared_cfg.dump());

  const int W = world.size(), sp = cfg.sp;
  const ShardLayout layout = parse_layout(cfg.layout);
  Mesh mesh = make_mesh(world, cfg);
  const int dp = mesh.dp, sp_rank = mesh.sp_rank, dp_rank = mesh.dp_rank, tp = mesh.tp;
  Comm* tp_comm = tp > 1 ? &mesh.tp_comm : nullptr;
  check_shardable(cfg.seq_len, sp, layout);
  const bool rank0 = world.rank() == 0;

  int threads = cfg.threads;
  if (threads == 0) {
    const int cores = std::max(1, omp_get_num_procs());
    threads = std::max(1, cores / W);
    if (const char* e = std::getenv("OMP_NUM_THREADS")) threads = std::max(1, std::atoi(e));
  }
  set_num_threads(threads);

  auto src = make_source(cfg.data, cfg.seed, cfg.seq_len);
  const std::vector<int64_t> pos = shard_positions(cfg.seq_len, sp, sp_rank, layout);
  const int B = cfg.batch, T = int(pos.size());

  Arena arena;
  TrainState state(cfg, arena, mesh.model_parallel(cfg), B, T);
  Model& model = state.model;
  Buffer &m = state.m, &v = state.v;
  const int64_t P = model.num_params(), P_repl = model.num_replicated();
  const int64_t R = model.rows(), rb = model.row_begin();
  const auto kv_ranges = model.kv_replica_ranges();

  const std::string ckpt_root = cfg.out + "/checkpoints";
  int64_t start = 0;
  std::error_code ec;
  // Nothing the user saved is overwritten: a run directory that already holds checkpoints
  // is only continued (--resume), never restarted over. Every rank sees the same files.
  SP_CHECK(cfg.resume || !has_checkpoint(ckpt_root), "output directory '", cfg.out,
           "' already holds checkpoints of an earlier run; pass --resume to continue it, or "
           "choose another --out");
  if (cfg.resume && has_checkpoint(ckpt_root)) {
    Checkpoint ck = load_checkpoint(ckpt_root);
    const nlohmann::json saved_model = ck.manifest.value("model", nlohmann::json::object());
    SP_CHECK(saved_model == cfg.model.to_json(), "checkpoint ", ck.dir,
             " was saved for a different model: ", saved_model.dump(), " vs current ",
             cfg.model.to_json().dump());
    scatter_tensors(model.specs(), model.params(), ck.weights, "", ck.dir + "/model.safetensors");
    scatter_tensors(model.specs(), m.data(), ck.optimizer, "m.", ck.dir + "/optimizer.safetensors");
    scatter_tensors(model.specs(), v.data(), ck.optimizer, "v.", ck.dir + "/optimizer.safetensors");
    start = ck.step;
    SP_CHECK(ck.state.value("seed", cfg.seed) == cfg.seed, "checkpoint ", ck.dir,
             " was trained with seed ", ck.state.value("seed", cfg.seed), ", this run uses ",
             cfg.seed, "; resume with the same --seed");
    if (rank0) std::cout << "resumed from " << ck.dir << " at step " << start << std::endl;
  } else {
    model.init_weights(cfg.seed);
  }

  std::ofstream metrics;
  {
    // Rank 0 writes the run directory; a failure there is reported on every rank (the
    // others would otherwise wait in the first collective).
    std::string msg;
    if (rank0) {
      try {
        std::filesystem::create_directories(cfg.out, ec);
        SP_CHECK(!ec, "cannot create output directory '", cfg.out, "': ", ec.message());
        write_file_atomic(cfg.out + "/config.json", shared_cfg.dump(2) + "\n");
        metrics.open(cfg.out + "/metrics.jsonl", start > 0 ? std::ios::app : std::ios::trunc);
        SP_CHECK(metrics.good(), "cannot write ", cfg.out, "/metrics.jsonl");
      } catch (const std::exception& e) {
        msg = e.what();
      }
    }
    if (!world.all_ok(msg.empty()))
      SP_FAIL("setting up the run directory failed on rank 0: ",
              rank0 ? msg : std::string("see rank 0's message"));
  }
  if (rank0) {
    std::cout << "seqpar train: " << W << " rank(s) = dp " << dp << " x sp " << sp << " ("
              << cfg.strategy << ", " << cfg.layout << "), " << threads << " thread(s)/rank\n"
              << "data: " << src->describe() << "\n"
              << "model: " << model_kind_name(cfg.model.kind) << ", " << P
              << " parameters on this rank (tp " << tp << ", recompute " << cfg.recompute << ")\n"
              << "arena after setup: " << human_bytes(double(arena.total_current())) << "\n"
              << "config: " << shared_cfg.dump() << std::endl;
  }

  auto save = [&](int64_t step) {
    // Full tensors are assembled by the tp group of world rank 0 (collective over that
    // group only; every other rank skips it), then world rank 0 writes them; a failure
    // there is reported on every rank. The host copies are transient and outside the
    // arena: 3× the unsharded model on those ranks while the checkpoint is written.
    std::vector<NamedTensor> weights, opt;
    if (mesh.dp_rank == 0 && mesh.sp_rank == 0) {
      weights = gather_tensors(cfg.model, model.specs(), model.params(), "", tp_comm);
      opt = gather_tensors(cfg.model, model.specs(), m.data(), "m.", tp_comm);
      auto vt = gather_tensors(cfg.model, model.specs(), v.data(), "v.", tp_comm);
      opt.insert(opt.end(), std::make_move_iterator(vt.begin()), std::make_move_iterator(vt.end()));
    }
    bool ok = true;
    std::string msg;
    if (rank0) {
      try {
        nlohmann::json state = {{"step", step},
                                {"seed", cfg.seed},
                                {"next_sample", uint64_t(step) * uint64_t(B) * uint64_t(dp)},
                                {"lr", lr_at(cfg, std::max<int64_t>(0, step - 1))}};
        nlohmann::json extra = {{"model", cfg.model.to_json()},
                                {"parallel",
                                 {{"dp", dp},
                                  {"sp", sp},
                                  {"tp", tp},
                                  {"sp_strategy", cfg.strategy},
                                  {"layout", cfg.layout}}},
                                {"train", shared_cfg}};
        std::string dir = save_checkpoint(ckpt_root, step, weights, opt, state, extra);
        std::cout << "saved checkpoint " << dir << std::endl;
      } catch (const std::exception& e) {
        ok = false;
        msg = e.what();
      }
    }
    if (!world.all_ok(ok))
      SP_FAIL("saving the checkpoint at step ", step,
              " failed on rank 0: ", rank0 ? msg : std::string("see rank 0's message"));
  };

  Progress progress(cfg.progress, rank0, cfg.steps);
  TrainResult result;
  result.last_step = start;
  const int64_t global_tokens_per_step = int64_t(B) * dp * cfg.seq_len;
  for (int64_t s = start; s < cfg.steps; ++s) {
    // A stop signal on any rank stops every rank after the same step.
    int64_t stop = g_stop_signal;
    world.allreduce_max(&stop, 1);
    if (stop || (cfg.stop_after > 0 && s == cfg.stop_after)) {
      progress.finish();
      if (rank0)
        std::cout << (stop ? "stop signal received" : "stop_after reached")
                  << ": checkpointing at step " << s << std::endl;
      save(s);
      result.interrupted = true;
      return result;
    }
    auto t0 = std::chrono::steady_clock::now();
    world.stats().reset();
    mesh.sp_comm.stats().reset();
    mesh.tp_comm.stats().reset();
    mesh.shard_comm.stats().reset();
    const float lr = lr_at(cfg, s);
    const uint64_t first = uint64_t(s) * B * dp + uint64_t(dp_rank) * B;
    Batch batch = make_batch(*src, cfg.model.kind, cfg.seed, first, B, cfg.seq_len, pos);
    StepContext ctx{cfg.seed, uint32_t(s), true};

    model.zero_grad();
    double local_loss = model.forward(batch, ctx);
    // Token-weighted loss over all ranks: Σ losses / Σ counted tokens.
    // This rank's rows: [rb, rb + R) of the flattened (B, T) shard (all of it when tp = 1).
    double sums[4] = {local_loss, 0.0, 0.0, 0.0};
    for (int64_t g = rb; g < rb + R; ++g) sums[1] += batch.targets[g] >= 0;
    // Without Megatron sequence parallelism every tp rank holds the same rows: count once.
    const bool count_rows = !model.rows_replicated_over_tp() || mesh.tp_rank == 0;
    // Retrieval accuracy on answer positions held by this rank.
    for (int i = 0; i < B; ++i)
      for (int64_t ap : src->answer_positions(first + i, cfg.seq_len))
        for (int t = 0; t < T; ++t) {
          const int64_t g = int64_t(i) * T + t;
          if (!count_rows || pos[t] != ap || g < rb || g >= rb + R) continue;
          const float* lg = model.logits() + (g - rb) * cfg.model.V;
          int best = int(std::max_element(lg, lg + cfg.model.V) - lg);
          sums[2] += best == batch.targets[g];
          sums[3] += 1;
        }
    if (!count_rows) sums[0] = sums[1] = 0.0;
    world.allreduce_sum(sums, 4);
    SP_CHECK(sums[1] > 0, "step ", s, " has no counted target tokens");
    model.backward(batch, ctx, float(1.0 / sums[1]));
    // Replicated parameters: every rank holds a partial gradient, sum over the world.
    // Tensor-parallel shards: sum over the ranks holding the same shard.
    // (Without Megatron sequence parallelism they are already identical across tp.)
    (model.rows_replicated_over_tp() ? mesh.shard_comm : world)
        .allreduce_sum(model.grads(), size_t(P_repl));
    if (P > P_repl) mesh.shard_comm.allreduce_sum(model.grads() + P_repl, size_t(P - P_repl));
    // Replicated kv heads (Hkv < tp): each replica holds its query heads' share.
    for (auto [off, n] : kv_ranges) mesh.kv_comm.allreduce_sum(model.grads() + off, size_t(n));
    // ‖g‖² = Σ replicated (same on every rank) + Σ over the tp group of each rank's shards,
    // a replicated kv head counted once (on the first rank of its group).
    double ss_shard = sum_squares(model.grads() + P_repl, P - P_repl);
    if (mesh.kv_comm.rank() != 0)
      for (auto [off, n] : kv_ranges) ss_shard -= sum_squares(model.grads() + off, n);
    if (tp_comm) tp_comm->allreduce_sum(&ss_shard, 1);
    const double gnorm = std::sqrt(sum_squares(model.grads(), P_repl) + ss_shard);
    SP_CHECK(std::isfinite(gnorm), "gradient norm is ", gnorm, " at step ", s, " (loss ",
             sums[0] / sums[1], "): training diverged; lower --lr");
    if (cfg.grad_clip > 0 && gnorm > cfg.grad_clip)
      scale_inplace(model.grads(), P, float(cfg.grad_clip / gnorm));
    for (const auto& spec : model.specs())
      adamw_update(model.params() + spec.offset, model.grads() + spec.offset,
                   m.data() + spec.offset, v.data() + spec.offset, spec.numel, lr, cfg.beta1,
                   cfg.beta2, cfg.eps, spec.decay ? cfg.weight_decay : 0.0f, s + 1);

    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double loss = sums[0] / sums[1];
    result.last_step = s + 1;
    result.last_loss = loss;
    result.losses.push_back(loss);
    if (rank0 && ((s + 1) % cfg.log_every == 0 || s + 1 == cfg.steps)) {
      nlohmann::json rec = {{"step", s + 1},
                            {"loss", loss},
                            {"grad_norm", gnorm},
                            {"lr", lr},
                            {"tokens_per_s", global_tokens_per_step / dt},
                            {"step_ms", dt * 1e3}};
      if (sums[3] > 0) rec["answer_acc"] = sums[2] / sums[3];
      nlohmann::json peak;
      for (int c = 0; c < kMemCategories; ++c) peak[mem_name(Mem(c))] = arena.peak(Mem(c));
      peak["total"] = arena.total_peak();
      rec["peak_bytes"] = peak;
      // Bytes this rank sent during the step: attention (sp group) and the rest (gradient
      // all-reduce and loss sums over the world), as comm/ counts them.
      rec["bytes_sent"] = {
          {"sp", mesh.sp_comm.stats().total_bytes_sent()},
          {"tp", mesh.tp_comm.stats().total_bytes_sent()},
          {"world", world.stats().total_bytes_sent() + mesh.shard_comm.stats().total_bytes_sent()}};
      metrics << rec.dump() << "\n";
      metrics.flush();
      if (!metrics.good())  // reported, not fatal: the run and its checkpoints go on
        std::cerr << "seqpar: warning: writing " << cfg.out << "/metrics.jsonl failed" << std::endl;
      progress.update(s + 1, loss, global_tokens_per_step / dt, rec);
    }
    if (cfg.ckpt_every > 0 && (s + 1) % cfg.ckpt_every == 0 && s + 1 < cfg.steps) save(s + 1);
  }
  progress.finish();
  result.arena_peak = arena.total_peak();
  if (cfg.save_final && cfg.steps > start) save(cfg.steps);
  return result;
}

}  // namespace seqpar
