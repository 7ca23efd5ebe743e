#include "train/state.hpp"

#include <map>

#include "core/check.hpp"

namespace seqpar {

Mesh make_mesh(Comm& world, const TrainConfig& cfg) {
  return make_mesh(world, cfg.tp, cfg.sp, kv_replicas(cfg.model, cfg.tp));
}

ModelParallel model_parallel(Mesh& mesh, const TrainConfig& cfg) {
  ModelParallel p;
  p.strategy = cfg.strategy;
  p.sp = SpSetup{mesh.sp > 1 ? &mesh.sp_comm : nullptr, cfg.layout, cfg.seq_len, cfg.mqsp_micro,
                 cfg.usp_ulysses};
  p.tp = TpSetup{mesh.tp > 1 ? &mesh.tp_comm : nullptr};
  p.recompute = cfg.recompute;
  p.loss = cfg.loss;
  p.loss_chunks.tokens = cfg.loss_chunk;
  p.precision = cfg.precision;
  p.tp_sequence_parallel = cfg.tp_sp;
  return p;
}

TrainState::TrainState(const TrainConfig& cfg, Arena& arena, const ModelParallel& par, int B, int T)
    : model(cfg.model, B, T, arena, par),
      m(arena, Mem::optim, model.num_params(), "adamw m"),
      v(arena, Mem::optim, model.num_params(), "adamw v") {}

namespace {

// Full (unsharded) tensors of a parameter-shaped block: tensor-parallel shards are
// all-gathered over the tp group and placed by each rank's segments, so a checkpoint does
// not depend on the layout it was saved from. Collective over tp (when given).
std::vector<NamedTensor> gather_tensors(const ModelConfig& cfg, const std::vector<ParamSpec>& specs,
                                        const float* block, const std::string& prefix, Comm* tp) {
  std::vector<NamedTensor> out;
  out.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i)
    out.push_back({prefix + specs[i].name, specs[i].global_shape,
                   gather_param(cfg, i, block + specs[i].offset, tp)});
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

}  // namespace

std::vector<NamedTensor> TrainState::gather_weights(const ModelConfig& cfg, Comm* tp) {
  return gather_tensors(cfg, model.specs(), model.params(), "", tp);
}

std::vector<NamedTensor> TrainState::gather_optimizer(const ModelConfig& cfg, Comm* tp) {
  auto opt = gather_tensors(cfg, model.specs(), m.data(), "m.", tp);
  auto vt = gather_tensors(cfg, model.specs(), v.data(), "v.", tp);
  opt.insert(opt.end(), std::make_move_iterator(vt.begin()), std::make_move_iterator(vt.end()));
  return opt;
}

void TrainState::load(const Checkpoint& ck, const ModelConfig& cfg) {
  // Compared through ModelConfig so that checkpoints written before floats were shown as
  // written (0.0020000000949949026 for 2e-3) still match.
  const nlohmann::json saved =
      ModelConfig::from_json(ck.manifest.value("model", nlohmann::json::object())).to_json();
  SP_CHECK_USAGE(saved == cfg.to_json(), "checkpoint ", ck.dir,
                 " was saved for a different model: ", saved.dump(), " vs current ",
                 cfg.to_json().dump());
  scatter_tensors(model.specs(), model.params(), ck.weights, "", ck.dir + "/model.safetensors");
  scatter_tensors(model.specs(), m.data(), ck.optimizer, "m.", ck.dir + "/optimizer.safetensors");
  scatter_tensors(model.specs(), v.data(), ck.optimizer, "v.", ck.dir + "/optimizer.safetensors");
}

}  // namespace seqpar
