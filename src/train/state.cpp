#include "train/state.hpp"

#include <algorithm>
#include <cstring>

#include "core/check.hpp"
#include "train/checkpoint_stream.hpp"

namespace seqpar {

Mesh make_mesh(Comm& world, const TrainConfig& cfg) {
  return make_mesh(world, cfg.tp, cfg.sp, kv_replicas(cfg.model, cfg.tp));
}

nlohmann::json mesh_json(const Mesh& mesh, const TrainConfig& cfg) {
  return {{"dp", mesh.dp},
          {"tp", mesh.tp},
          {"sp", mesh.sp},
          {"sp_strategy", cfg.strategy},
          {"layout", cfg.layout}};
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
      v(arena, Mem::optim, zero ? zero->shard_size() : model.num_params(), "adamw v"),
      io(arena, Mem::ckpt, size_t(checkpoint_buffer_floats(cfg.model, mesh_.tp)),
         "checkpoint stream") {
  // MPI's temporaries for a step's gradient all-reduces without ZeRO (train/step.cpp; ZeRO
  // declares its own): the replicated range over the world (over the shard group when the
  // rows are replicated over tp), the tp shards over the shard group, each replicated kv
  // head over its kv group, one after the other (comm.hpp: Comm::scratch_bytes).
  if (!zero) {
    const uint64_t P = uint64_t(model.num_params()), R = uint64_t(model.num_replicated());
    const int world = mesh.dp * mesh.tp * mesh.sp;
    const int repl_ranks = model.rows_replicated_over_tp() ? mesh.shard_comm.size() : world;
    uint64_t s = std::max(collective_scratch_bytes(Coll::allreduce, repl_ranks, R * sizeof(float)),
                          mesh.shard_comm.scratch_bytes(Coll::allreduce, (P - R) * sizeof(float)));
    for (auto [off, n] : model.kv_replica_ranges())
      s = std::max(s, mesh.kv_comm.scratch_bytes(Coll::allreduce, uint64_t(n) * sizeof(float)));
    arena.note_outside(s, "gradient all-reduce");
  }
}

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

}  // namespace seqpar
