#include "train/state.hpp"

#include <cstring>
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
  p.tp_sequence_parallel = cfg.tp_sp;
  return p;
}

namespace {

ModelParallel with_source(ModelParallel p, Zero* z) {
  if (z && (z->holds_params() || z->holds_grads())) p.sharded = z;
  return p;
}

std::unique_ptr<Zero> make_zero(const TrainConfig& cfg, Arena& arena, Mesh& mesh) {
  if (cfg.zero == 0) return nullptr;
  // Replicated parameters hold partial gradients on each tp rank under Megatron sequence
  // parallelism (summed over tp first); replicated kv heads on each rank of their kv group.
  Comm* repl = mesh.tp > 1 && cfg.tp_sp ? &mesh.tp_comm : nullptr;
  Comm* kv = kv_replicas(cfg.model, mesh.tp) > 1 ? &mesh.kv_comm : nullptr;
  return std::make_unique<Zero>(cfg.zero, cfg.model, param_specs(cfg.model, mesh.tp, mesh.tp_rank),
                                mesh.tp, mesh.shard_comm, repl, kv, arena);
}

}  // namespace

TrainState::TrainState(const TrainConfig& cfg, Arena& arena, Mesh& mesh_, int B, int T)
    : mesh(mesh_),
      zero(make_zero(cfg, arena, mesh_)),
      model(cfg.model, B, T, arena, with_source(model_parallel(mesh_, cfg), zero.get())),
      m(arena, Mem::optim, zero ? zero->shard_size() : model.num_params(), "adamw m"),
      v(arena, Mem::optim, zero ? zero->shard_size() : model.num_params(), "adamw v") {}

void TrainState::init_weights(uint64_t seed) {
  if (zero && zero->level() >= 3)
    zero->init_weights(model.config(), seed);
  else
    model.init_weights(seed);
}

void TrainState::read_local(Which w, int64_t off, int64_t n, float* out) {
  SP_CHECK(off >= 0 && n >= 0 && off + n <= model.num_params(), "read_local [", off, ", ", off + n,
           ") is outside the block of ", model.num_params(), " floats");
  const bool sharded = zero && (w != Which::weights || zero->level() >= 3);
  const float* src = w == Which::weights ? (sharded ? zero->param_shard() : model.params())
                     : w == Which::m     ? m.data()
                                         : v.data();
  if (sharded)
    zero->read(src, off, n, out);
  else
    std::memcpy(out, src + off, sizeof(float) * n);
}

void TrainState::write_local(Which w, int64_t off, int64_t n, const float* in) {
  SP_CHECK(off >= 0 && n >= 0 && off + n <= model.num_params(), "write_local [", off, ", ", off + n,
           ") is outside the block of ", model.num_params(), " floats");
  const bool sharded = zero && (w != Which::weights || zero->level() >= 3);
  float* dst = w == Which::weights ? (sharded ? zero->param_shard() : model.params())
               : w == Which::m     ? m.data()
                                   : v.data();
  if (sharded)
    zero->write(dst, off, n, in);
  else
    std::memcpy(dst + off, in, sizeof(float) * n);
  if (w == Which::weights && zero && zero->level() >= 3) zero->invalidate();
}

namespace {

// Full (unsharded) tensors of a parameter-shaped block: this tp rank's part through
// read_local, tensor-parallel shards all-gathered over the tp group and placed by each
// rank's segments, so a checkpoint does not depend on the layout it was saved from.
// Collective over tp (when given) and over the ZeRO group.
std::vector<NamedTensor> gather_tensors(TrainState& st, const ModelConfig& cfg, Which w,
                                        const std::string& prefix, Comm* tp) {
  const auto& specs = st.model.specs();
  std::vector<NamedTensor> out;
  out.reserve(specs.size());
  std::vector<float> local;
  for (size_t i = 0; i < specs.size(); ++i) {
    local.resize(size_t(specs[i].numel));
    st.read_local(w, specs[i].offset, specs[i].numel, local.data());
    out.push_back(
        {prefix + specs[i].name, specs[i].global_shape, gather_param(cfg, i, local.data(), tp)});
  }
  return out;
}

void scatter_tensors(TrainState& st, Which w, const std::vector<NamedTensor>& tensors,
                     const std::string& prefix, const std::string& file) {
  std::map<std::string, const NamedTensor*> by_name;
  for (const auto& t : tensors) by_name[t.name] = &t;
  std::vector<float> local;
  for (const auto& s : st.model.specs()) {
    auto it = by_name.find(prefix + s.name);
    SP_CHECK(it != by_name.end(), "checkpoint ", file, " has no tensor '", prefix + s.name, "'");
    SP_CHECK(it->second->shape == s.global_shape, "checkpoint tensor '", prefix + s.name,
             "' has a different shape than the model (", it->second->data.size(), " elements)");
    local.resize(size_t(s.numel));
    shard_from_global(s, it->second->data.data(), local.data());
    st.write_local(w, s.offset, s.numel, local.data());
  }
}

}  // namespace

std::vector<NamedTensor> TrainState::gather_weights(const ModelConfig& cfg, Comm* tp) {
  return gather_tensors(*this, cfg, Which::weights, "", tp);
}

std::vector<NamedTensor> TrainState::gather_optimizer(const ModelConfig& cfg, Comm* tp) {
  auto opt = gather_tensors(*this, cfg, Which::m, "m.", tp);
  auto vt = gather_tensors(*this, cfg, Which::v, "v.", tp);
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
  scatter_tensors(*this, Which::weights, ck.weights, "", ck.dir + "/model.safetensors");
  scatter_tensors(*this, Which::m, ck.optimizer, "m.", ck.dir + "/optimizer.safetensors");
  scatter_tensors(*this, Which::v, ck.optimizer, "v.", ck.dir + "/optimizer.safetensors");
}

}  // namespace seqpar
