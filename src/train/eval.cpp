#include "train/eval.hpp"

#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "core/arena.hpp"
#include "core/check.hpp"
#include "core/memory.hpp"
#include "core/profile.hpp"
#include "core/threads.hpp"
#include "model/param_specs.hpp"
#include "parallel/layout.hpp"
#include "train/checkpoint.hpp"
#include "train/planner.hpp"
#include "train/setup.hpp"
#include "train/state.hpp"

namespace seqpar {

namespace fs = std::filesystem;

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j = {{"val_loss", loss},
                      {"val_ppl", ppl},
                      {"val_tokens", int64_t(tokens)},
                      {"val_samples", samples}};
  if (answers > 0) j["val_answer_acc"] = answers_correct / answers;
  if (keys > 0) j["val_key_acc"] = double(keys_correct) / double(keys);
  if (!by_position.empty()) {
    nlohmann::json rows = nlohmann::json::array();
    for (const PositionBucket& b : by_position) {
      const double loss = b.tokens > 0 ? b.loss_sum / b.tokens : std::nan("");
      rows.push_back({{"begin", b.begin},
                      {"end", b.end},
                      {"tokens", int64_t(b.tokens)},
                      {"loss", b.tokens > 0 ? nlohmann::json(loss) : nlohmann::json()},
                      {"ppl", b.tokens > 0 ? nlohmann::json(std::exp(loss)) : nlohmann::json()}});
    }
    j["by_position"] = rows;
  }
  return j;
}

std::vector<PositionBucket> position_buckets(int64_t L, int B) {
  SP_CHECK(L >= 1 && B >= 1, "position_buckets(L=", L, ", B=", B, ")");
  std::vector<PositionBucket> out;
  int64_t begin = 0;
  for (int k = 1; k <= B && begin < L; ++k) {
    // Edge k: ⌊L^(k/B)⌋ (the last is L), at least begin + 1.
    int64_t end = k == B ? L : int64_t(std::floor(std::pow(double(L), double(k) / B)));
    end = std::min(L, std::max(end, begin + 1));
    out.push_back({begin, end, 0.0, 0.0});
    begin = end;
  }
  if (begin < L) out.back().end = L;
  return out;
}

EvalResult evaluate(Model& model, Mesh& mesh, Comm& world, const TrainConfig& cfg,
                    const DataSource& val, const std::vector<int64_t>& pos, int by_position) {
  const int B = cfg.batch, T = int(pos.size());
  const int64_t R = model.rows(), rb = model.row_begin();
  // Without Megatron sequence parallelism every tp rank holds the same rows: count once.
  const bool count_rows = !model.rows_replicated_over_tp() || mesh.tp_rank == 0;
  // Dropout off; the context's step keys nothing else.
  const StepContext ctx{kValidationSeed, 0, false};
  double sums[4] = {0.0, 0.0, 0.0, 0.0};  // Σ loss, Σ counted targets, Σ correct, Σ answers
  // Per validation sample (global index k·B·dp + dp_rank·B + i): answers scored and answers
  // wrong, summed over the ranks that own its rows; a key is right when none is wrong.
  const size_t n_samples = size_t(cfg.eval_batches) * B * mesh.dp;
  // With --by-position: Σ loss and Σ counted targets per bucket, and each shard position's
  // bucket.
  std::vector<PositionBucket> buckets;
  std::vector<int> bucket_of(size_t(T), 0);
  if (by_position > 0) {
    buckets = position_buckets(cfg.seq_len, by_position);
    for (int t = 0; t < T; ++t)
      while (pos[t] >= buckets[size_t(bucket_of[t])].end) ++bucket_of[t];
  }
  std::vector<int64_t> per_sample(2 * n_samples, 0);
  for (int64_t k = 0; k < cfg.eval_batches; ++k) {
    const uint64_t first = uint64_t(k) * B * mesh.dp + uint64_t(mesh.dp_rank) * B;
    Batch batch =
        make_batch(val, cfg.model.kind, kValidationSeed, first, B, cfg.seq_len, pos, cfg.packing());
    apply_loss_on(batch, val, first, cfg.loss_on);
    const double local = model.forward(batch, ctx);
    // Retrieval answers of the shard, scored on the rank that owns each row (argmax is
    // collective over tp: every tp rank asks for the same rows).
    std::vector<int64_t> rows;
    std::vector<int32_t> want;
    std::vector<int> row_sample;  // i of each row
    for (int i = 0; i < B; ++i)
      for (int64_t ap : val.answer_positions(first + i, cfg.seq_len))
        for (int t = 0; t < T; ++t)
          if (pos[t] == ap) {
            rows.push_back(int64_t(i) * T + t);
            want.push_back(batch.targets[size_t(i) * T + t]);
            row_sample.push_back(i);
          }
    const std::vector<int32_t> got = model.argmax(rows);
    if (!count_rows) continue;
    sums[0] += local;
    for (int64_t g = rb; g < rb + R; ++g) sums[1] += batch.targets[g] >= 0;
    if (by_position > 0)
      for (int64_t g = rb; g < rb + R; ++g) {
        if (batch.targets[g] < 0) continue;
        PositionBucket& b = buckets[size_t(bucket_of[size_t(g % T)])];
        b.loss_sum += model.losses()[g - rb];
        b.tokens += 1;
      }
    for (size_t q = 0; q < rows.size(); ++q) {
      if (rows[q] < rb || rows[q] >= rb + R) continue;
      sums[2] += got[q] == want[q];
      sums[3] += 1;
      const size_t g = size_t(first) + size_t(row_sample[q]);
      per_sample[2 * g] += 1;
      per_sample[2 * g + 1] += got[q] != want[q];
    }
  }
  world.allreduce_sum(sums, 4);
  std::vector<double> per_bucket;
  for (const PositionBucket& b : buckets)
    per_bucket.insert(per_bucket.end(), {b.loss_sum, b.tokens});
  if (!per_bucket.empty()) world.allreduce_sum(per_bucket.data(), per_bucket.size());
  for (size_t k = 0; k < buckets.size(); ++k)
    buckets[k].loss_sum = per_bucket[2 * k], buckets[k].tokens = per_bucket[2 * k + 1];
  world.allreduce_sum(per_sample.data(), per_sample.size());
  SP_CHECK(sums[1] > 0, "the validation batches of ", val.describe(), " have no counted targets");
  EvalResult r;
  r.loss = sums[0] / sums[1];
  r.ppl = std::exp(r.loss);
  r.tokens = sums[1];
  r.answers_correct = sums[2];
  r.answers = sums[3];
  r.samples = cfg.eval_batches * B * mesh.dp;
  r.by_position = std::move(buckets);
  for (size_t g = 0; g < n_samples; ++g) {
    r.keys += per_sample[2 * g] > 0;
    r.keys_correct += per_sample[2 * g] > 0 && per_sample[2 * g + 1] == 0;
  }
  return r;
}

void load_weights(Model& model, const Checkpoint& ck, const ModelConfig& mc) {
  // The RoPE scaling is not a weight: --rope-* may evaluate a model with another one.
  const nlohmann::json saved =
      ModelConfig::from_json(ck.manifest.value("model", nlohmann::json::object())).weights_json();
  SP_CHECK_USAGE(saved == mc.weights_json(), "checkpoint ", ck.dir,
                 " holds a different model than the configuration to evaluate: ", saved.dump(),
                 " vs ", mc.weights_json().dump());
  std::map<std::string, const NamedTensor*> by_name;
  for (const auto& t : ck.weights) by_name[t.name] = &t;
  for (const ParamSpec& s : model.specs()) {
    auto it = by_name.find(s.name);
    SP_CHECK_INPUT(it != by_name.end(), "checkpoint ", ck.dir, " has no tensor '", s.name, "'");
    SP_CHECK_INPUT(it->second->shape == s.global_shape, "checkpoint ", ck.dir, ": tensor '", s.name,
                   "' has another shape than the model's");
    shard_from_global(s, it->second->data.data(), model.params() + s.offset);
  }
}

namespace {

// The whole process against the memory the machine offers (smallest over ranks), before
// anything is allocated, as train's plan does (an oversized --batch is a usage error, exit
// 2, in both): the model's weights and forward activations (a dry run of the same
// constructor), the global tensors the checkpoint load holds, eval's per-sample records
// (two int64 each), the runtime measured now, and train's step reserve.
void refuse_eval_over_memory(const TrainConfig& cfg, Comm& world, Mesh& mesh, int T) {
  Arena dry(/*dry_run=*/true);
  { Model m(cfg.model, cfg.batch, T, dry, model_parallel(mesh, cfg)); }
  uint64_t load = 0;
  for (const ParamSpec& s : param_specs(cfg.model, 1, 0)) load += 4 * uint64_t(s.numel);
  const uint64_t records = 16 * uint64_t(cfg.eval_batches) * uint64_t(cfg.batch) * mesh.dp;
  int64_t v[2] = {int64_t(process_rss_bytes()), -int64_t(available_memory_bytes())};
  world.allreduce_max(v, 2);
  const uint64_t peak = dry.total_peak();
  const uint64_t total = peak + load + records + uint64_t(v[0]) + step_reserve_bytes(peak);
  const uint64_t limit = uint64_t(-v[1]);
  if (limit == 0 || total <= limit) return;
  UsageError e("eval at --batch " + std::to_string(cfg.batch) +
               " and L = " + std::to_string(cfg.seq_len) + " needs " + format_bytes(total) +
               " per rank (model and activations " + format_bytes(peak) + ", checkpoint load " +
               format_bytes(load) + ", per-sample records " + format_bytes(records) + ", runtime " +
               format_bytes(uint64_t(v[0])) + ", reserve " +
               format_bytes(step_reserve_bytes(peak)) + ") but the machine offers " +
               format_bytes(limit) + "; lower --batch or --eval-batches, or raise --sp or --tp");
  e.agreed = true;  // every rank computed the same reduced figures
  throw e;
}

}  // namespace

nlohmann::json evaluate_checkpoint(const TrainConfig& cfg, Comm& world, const std::string& step_dir,
                                   int by_position) {
  agree_or_throw(world, [&] {
    cfg.validate();
    cfg.validate_for_world(world.size());
  });
  Mesh mesh = make_mesh(world, cfg);
  apply_threads(cfg, world.size());  // as in training: the cores shared by the ranks
  std::unique_ptr<DataSource> val;
  agree_or_throw(world, [&] {
    // The data the run was trained on, by content: not whatever file its name finds from
    // this directory.
    check_same_data(read_manifest(step_dir), step_dir, data_identity(cfg.data));
    val = open_data(cfg, Split::validation, "the model of checkpoint " + step_dir);
  });
  const std::vector<int64_t> pos = shard_positions(cfg.seq_len, cfg.sp, mesh.sp_rank, cfg.layout);
  refuse_eval_over_memory(cfg, world, mesh, int(pos.size()));
  Arena arena;
  Model model(cfg.model, cfg.batch, int(pos.size()), arena, model_parallel(mesh, cfg));
  int64_t step = -1;
  agree_or_throw(world, [&] {
    Checkpoint ck = load_checkpoint(step_dir);  // verifies sizes and hashes
    step = ck.step;
    load_weights(model, ck, cfg.model);
  });
  if (cfg.profile) profile_enable(true);
  profile_begin_step();
  const EvalResult r = evaluate(model, mesh, world, cfg, *val, pos, by_position);
  const PhaseSeconds phases = profile_end_step();
  nlohmann::json j = r.to_json();
  if (cfg.profile) {  // rank 0's phases of the whole evaluation (core/profile.hpp)
    nlohmann::json prof;
    for (int p = 0; p < kPhases; ++p) prof[phase_name(Phase(p))] = phases[size_t(p)] * 1e3;
    j["profile_ms"] = prof;
  }
  j.update({{"checkpoint", step_dir},
            {"step", step},
            {"data", val->describe()},
            {"seq_len", cfg.seq_len},
            {"loss_on", loss_on_name(cfg.loss_on)},
            {"batches", cfg.eval_batches},
            {"batch", cfg.batch},
            {"mesh", mesh_json(mesh, cfg)}});
  return j;
}

}  // namespace seqpar
