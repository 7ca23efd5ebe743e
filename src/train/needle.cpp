#include "train/needle.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>

#include "core/arena.hpp"
#include "core/check.hpp"
#include "parallel/layout.hpp"
#include "train/checkpoint.hpp"
#include "train/data.hpp"
#include "train/eval.hpp"
#include "train/setup.hpp"
#include "train/state.hpp"
#include "train/trainer.hpp"

namespace seqpar {

namespace {

constexpr int64_t kShortestPasskey = 128;  // PasskeySource refuses shorter sequences

std::vector<std::string> split_list(const std::string& s, const char* flag) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    SP_CHECK_USAGE(!item.empty(), flag, " '", s, "': an empty entry (write numbers separated by ",
                   "single commas)");
    out.push_back(item);
  }
  SP_CHECK_USAGE(!out.empty(), flag, " is empty: give at least one value");
  return out;
}

}  // namespace

std::vector<int64_t> parse_needle_lengths(const std::string& s) {
  std::vector<int64_t> out;
  for (const std::string& item : split_list(s, "--lengths")) {
    size_t used = 0;
    int64_t L = 0;
    try {
      L = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SP_CHECK_USAGE(used == item.size() && used > 0, "--lengths: '", item,
                   "' is not an integer sequence length");
    SP_CHECK_USAGE(L >= kShortestPasskey, "--lengths: ", L,
                   " is shorter than the passkey task's shortest sequence, ", kShortestPasskey);
    SP_CHECK_USAGE(std::find(out.begin(), out.end(), L) == out.end(), "--lengths: ", L,
                   " is given twice");
    out.push_back(L);
  }
  return out;
}

std::vector<double> parse_needle_depths(const std::string& s) {
  std::vector<double> out;
  for (const std::string& item : split_list(s, "--depths")) {
    size_t used = 0;
    double d = 0.0;
    try {
      d = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    SP_CHECK_USAGE(used == item.size() && used > 0, "--depths: '", item, "' is not a number");
    // !(d >= 0 && d <= 1) also refuses NaN.
    SP_CHECK_USAGE(d >= 0.0 && d <= 1.0, "--depths: ", item,
                   " is outside [0, 1] (0 = the needle at the start, 1 = just before the "
                   "question)");
    SP_CHECK_USAGE(std::find(out.begin(), out.end(), d) == out.end(), "--depths: ", item,
                   " is given twice");
    out.push_back(d);
  }
  return out;
}

void check_needle_sweep(const TrainConfig& cfg, int world_size, const std::vector<int64_t>& lengths,
                        int64_t samples) {
  SP_CHECK_USAGE(samples >= 1, "--samples must be at least 1, got ", samples);
  SP_CHECK_USAGE(cfg.model.kind != ModelKind::bert,
                 "the passkey sweep scores a causal model's next-token argmax; the checkpoint "
                 "holds a bert model");
  const auto pk = make_passkey_source(cfg.seed, kShortestPasskey, Split::validation, 0.0);
  check_data_matches_model(*pk, cfg.model.V, cfg.model.tokenizer_hash,
                           "the model of the checkpoint", cfg.model.kind);
  for (int64_t L : lengths) {
    TrainConfig at = cfg;
    at.seq_len = L;
    try {
      at.validate_for_world(world_size);
    } catch (const Error& e) {
      SP_FAIL_USAGE("--lengths: ", L, " cannot run on this mesh: ", e.what());
    }
  }
}

nlohmann::json needle_sweep(const TrainConfig& cfg, Comm& world, const std::string& step_dir,
                            const std::vector<int64_t>& lengths, const std::vector<double>& depths,
                            int64_t samples) {
  agree_or_throw(world, [&] {
    cfg.validate();
    check_needle_sweep(cfg, world.size(), lengths, samples);
  });
  Mesh mesh = make_mesh(world, cfg);
  apply_threads(cfg, world.size());
  Checkpoint ck;
  agree_or_throw(world, [&] { ck = load_checkpoint(step_dir); });  // sizes and hashes checked

  const int64_t per_batch = int64_t(cfg.batch) * mesh.dp;
  const int64_t batches = (samples + per_batch - 1) / per_batch;
  nlohmann::json digit = nlohmann::json::array(), key = nlohmann::json::array(),
                 loss = nlohmann::json::array(), secs = nlohmann::json::array();
  for (int64_t L : lengths) {
    TrainConfig at = cfg;
    at.seq_len = L;
    at.eval_batches = batches;
    at.loss_on = LossOn::answer;  // val_loss = the answer digits' cross-entropy
    const std::vector<int64_t> pos = shard_positions(L, cfg.sp, mesh.sp_rank, cfg.layout);
    // A model per length: its activations are sized by the shard (B × |pos| rows).
    Arena arena;
    Model model(cfg.model, cfg.batch, int(pos.size()), arena, model_parallel(mesh, at));
    agree_or_throw(world, [&] { load_weights(model, ck, cfg.model); });
    nlohmann::json drow = nlohmann::json::array(), krow = nlohmann::json::array(),
                   lrow = nlohmann::json::array(), srow = nlohmann::json::array();
    for (double d : depths) {
      std::unique_ptr<DataSource> src;
      agree_or_throw(world, [&] { src = make_passkey_source(cfg.seed, L, Split::validation, d); });
      const auto t0 = std::chrono::steady_clock::now();
      const EvalResult r = evaluate(model, mesh, world, at, *src, pos);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      SP_CHECK(r.answers > 0 && r.keys == r.samples, "the passkey sweep at L=", L, ", depth ", d,
               " scored ", r.answers, " digits of ", r.keys, " keys for ", r.samples,
               " samples: every sample must have its 5 answer digits");
      drow.push_back(r.answers_correct / r.answers);
      krow.push_back(double(r.keys_correct) / double(r.keys));
      lrow.push_back(r.loss);
      srow.push_back(s);
    }
    digit.push_back(drow);
    key.push_back(krow);
    loss.push_back(lrow);
    secs.push_back(srow);
  }
  return {{"task", "passkey"},   {"checkpoint", step_dir},
          {"step", ck.step},     {"lengths", lengths},
          {"depths", depths},    {"samples", batches * per_batch},
          {"batch", cfg.batch},  {"mesh", mesh_json(mesh, cfg)},
          {"digit_acc", digit},  {"key_acc", key},
          {"answer_loss", loss}, {"seconds", secs}};
}

std::string needle_table_markdown(const nlohmann::json& sweep) {
  std::ostringstream o;
  const auto& depths = sweep.at("depths");
  const auto& lengths = sweep.at("lengths");
  auto table = [&](const char* what, const char* key) {
    o << "\n"
      << what << " (" << sweep.at("samples").get<int64_t>() << " validation keys per cell, step "
      << sweep.at("step").get<int64_t>() << ")\n\n| L \\ depth |";
    for (const auto& d : depths) o << ' ' << d.get<double>() << " |";
    o << "\n|---:|";
    for (size_t j = 0; j < depths.size(); ++j) o << "---:|";
    o << '\n';
    for (size_t i = 0; i < lengths.size(); ++i) {
      o << "| " << lengths[i].get<int64_t>() << " |";
      for (size_t j = 0; j < depths.size(); ++j) {
        char b[32];
        std::snprintf(b, sizeof(b), " %.3f |", sweep.at(key)[i][j].get<double>());
        o << b;
      }
      o << '\n';
    }
  };
  table("digit accuracy", "digit_acc");
  table("whole-key accuracy (all 5 digits right)", "key_acc");
  return o.str();
}

}  // namespace seqpar
