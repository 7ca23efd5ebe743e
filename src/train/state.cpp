#include "train/state.hpp"

#include <cstring>

#include "core/check.hpp"
#include "train/checkpoint_stream.hpp"

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
      v(arena, Mem::optim, model.num_params(), "adamw v"),
      io(arena, Mem::ckpt, size_t(checkpoint_buffer_floats(cfg.model, par.tp.size())),
         "checkpoint stream") {}

float* TrainState::block(Which w, int64_t off, int64_t n) {
  const int64_t P = model.num_params();
  SP_CHECK(off >= 0 && n >= 0 && off + n <= P, "TrainState: floats [", off, ", ", off + n,
           ") outside the ", P, "-float block");
  return (w == Which::weights ? model.params() : w == Which::m ? m.data() : v.data()) + off;
}

void TrainState::read_local(Which w, int64_t off, int64_t n, float* out) {
  if (n > 0) std::memcpy(out, block(w, off, n), size_t(n) * sizeof(float));
}

void TrainState::write_local(Which w, int64_t off, int64_t n, const float* in) {
  if (n > 0) std::memcpy(block(w, off, n), in, size_t(n) * sizeof(float));
}

}  // namespace seqpar
