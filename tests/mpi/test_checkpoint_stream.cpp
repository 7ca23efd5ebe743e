// ranks: 1 2 4
// Streamed checkpoints (train/checkpoint_stream) against the whole-tensor path they replace,
// bit for bit, on every mesh the world size allows (tp1×sp K, tp2×sp K/2; a vocabulary not
// divisible by tp and kv heads replicated over tp included):
//  * save_state_checkpoint's files hold exactly the tensors read_safetensors returns for
//    full tensors assembled the old way (gather_param over tp of each rank's block);
//  * a checkpoint written the old way (save_checkpoint of whole tensors) loads with
//    load_state_checkpoint into exactly the blocks shard_from_global gives;
// each with the buffer the state allocates (one chunk per tensor at this size) and with the
// smallest buffer allowed (one row per holder: many chunks per tensor).
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "comm/comm.hpp"
#include "parallel/layout.hpp"
#include "test_models.hpp"
#include "train/checkpoint_stream.hpp"
#include "train/state.hpp"

using namespace seqpar;
using namespace seqpar::test;
namespace fs = std::filesystem;

namespace {

TrainConfig config(int tp, int sp) {
  TrainConfig c;
  c.model = small_model({.Hkv = 1});  // < tp = 2: the kv head is replicated over tp
  c.model.V = 259;                    // not divisible by tp: uneven vocabulary shards
  c.seq_len = 32;
  c.batch = 1;
  c.tp = tp;
  c.sp = sp;
  c.strategy = sp > 1 ? Strategy::ring : Strategy::local;
  c.data = "passkey";
  return c;
}

// Distinct, rank-independent values for every global element of block w (weights from the
// model's init; moments from a hash of the global index), placed by this rank's specs.
void fill(TrainState& st, const TrainConfig& cfg, uint32_t salt) {
  st.model.init_weights(cfg.seed);
  for (const ParamSpec& s : st.model.specs()) {
    std::vector<float> g(size_t(
        s.global_shape.size() == 1 ? s.global_shape[0] : s.global_shape[0] * s.global_shape[1]));
    for (size_t i = 0; i < g.size(); ++i) g[i] = float((i * 2654435761u + salt) % 1000003) * 1e-6f;
    shard_from_global(s, g.data(), st.m.data() + s.offset);
    for (float& x : g) x = -x * 3.0f;
    shard_from_global(s, g.data(), st.v.data() + s.offset);
  }
}

// Full tensors the old way: gather_param of each block over tp.
std::vector<NamedTensor> gathered(TrainState& st, const ModelConfig& cfg, Comm* tp,
                                  const float* block, const std::string& prefix) {
  std::vector<NamedTensor> out;
  for (size_t i = 0; i < st.model.specs().size(); ++i) {
    const ParamSpec& s = st.model.specs()[i];
    out.push_back({prefix + s.name, s.global_shape, gather_param(cfg, i, block + s.offset, tp)});
  }
  return out;
}

void round_trip(Comm& world, int tp, bool smallest_buffer) {
  const int sp = world.size() / tp;
  TrainConfig cfg = config(tp, sp);
  Mesh mesh = make_mesh(world, cfg);
  const auto pos = shard_positions(cfg.seq_len, mesh.sp, mesh.sp_rank, cfg.layout);
  Arena arena;
  TrainState st(cfg, arena, mesh, cfg.batch, int(pos.size()));
  EXPECT_EQ(arena.current(Mem::ckpt),
            size_t(checkpoint_buffer_floats(cfg.model, tp)) * sizeof(float));
  if (smallest_buffer)
    st.io = Buffer(arena, Mem::ckpt,
                   size_t((tp > 1 ? 2 : 1) * checkpoint_chunk_floats(cfg.model, tp, 1)), "small");
  fill(st, cfg, 7);
  Comm* tpc = tp > 1 ? &mesh.tp_comm : nullptr;

  std::string root = run_dir("ckstream_tp" + std::to_string(tp));
  if (world.rank() == 0) fs::remove_all(root);
  world.barrier();
  const nlohmann::json state = {{"step", 3}};
  const nlohmann::json extra = {{"model", cfg.model.to_json()}};
  save_state_checkpoint(st, mesh, world, cfg.model, root + "/new", 3, state, extra);

  // Streamed save == whole tensors assembled the old way.
  auto w = gathered(st, cfg.model, tpc, st.model.params(), "");
  auto o = gathered(st, cfg.model, tpc, st.m.data(), "m.");
  auto v = gathered(st, cfg.model, tpc, st.v.data(), "v.");
  o.insert(o.end(), v.begin(), v.end());
  world.barrier();
  const std::string d = root + "/new/step_00000003";
  expect_same_tensors(read_safetensors(d + "/model.safetensors"), w);
  expect_same_tensors(read_safetensors(d + "/optimizer.safetensors"), o);

  // A checkpoint written whole (save_checkpoint) loads by streaming into the same blocks.
  world.barrier();
  if (world.rank() == 0) save_checkpoint(root + "/old", 3, w, o, state, extra);
  world.barrier();
  Arena arena2;
  TrainState st2(cfg, arena2, mesh, cfg.batch, int(pos.size()));
  if (smallest_buffer) st2.io = Buffer(arena2, Mem::ckpt, st.io.size(), "small");
  load_state_checkpoint(st2, open_checkpoint(root + "/old"), cfg.model, tp, mesh.tp_rank);
  const size_t bytes = size_t(st.model.num_params()) * sizeof(float);
  EXPECT_EQ(0, std::memcmp(st2.model.params(), st.model.params(), bytes));
  EXPECT_EQ(0, std::memcmp(st2.m.data(), st.m.data(), bytes));
  EXPECT_EQ(0, std::memcmp(st2.v.data(), st.v.data(), bytes));
  world.barrier();
  if (world.rank() == 0) fs::remove_all(root);
}

}  // namespace

TEST(CheckpointStream, SaveAndLoadMatchTheWholeTensorPathTp1) {
  Comm world = Comm::world();
  round_trip(world, 1, false);
  round_trip(world, 1, true);
}

TEST(CheckpointStream, SaveAndLoadMatchTheWholeTensorPathTp2) {
  Comm world = Comm::world();
  if (world.size() % 2 != 0) GTEST_SKIP() << "tp 2 needs an even world";
  round_trip(world, 2, false);
  round_trip(world, 2, true);
}

// The buffer is one chunk (two at tp > 1) of min(cap, largest tensor) floats, at least one
// row per holder: small for a small model, capped for a large one.
TEST(CheckpointStream, BufferIsBounded) {
  TrainConfig cfg = config(1, 1);
  int64_t largest = 0;
  for (const ParamSpec& s : param_specs(cfg.model, 1, 0)) largest = std::max(largest, s.numel);
  EXPECT_EQ(checkpoint_buffer_floats(cfg.model, 1), largest);
  EXPECT_EQ(checkpoint_buffer_floats(cfg.model, 2), 2 * checkpoint_chunk_floats(cfg.model, 2));
  cfg.model.V = 50304;
  cfg.model.C = 1024;  // a 51.5M-float embedding: capped
  EXPECT_EQ(checkpoint_chunk_floats(cfg.model, 1), kCheckpointChunkCapFloats);
}
