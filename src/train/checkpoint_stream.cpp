// Streamed checkpoints of a training state: see checkpoint_stream.hpp.
#include "train/checkpoint_stream.hpp"

#include <algorithm>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>

#include "core/check.hpp"

namespace seqpar {
namespace {

namespace fs = std::filesystem;
using Which = TrainState::Which;
using Piece = std::pair<int64_t, int64_t>;  // (offset in the rank's tensor, floats)

const char* prefix_of(Which w) { return w == Which::weights ? "" : w == Which::m ? "m." : "v."; }

// A tensor as rows: global_shape[0] rows of inner = Π global_shape[1..] floats (a 1-d
// tensor: one float per row).
struct Rows {
  int64_t rows = 1, inner = 1;
};
Rows rows_of(const std::vector<int64_t>& g) {
  Rows r;
  if (g.empty()) return r;
  r.rows = g[0];
  for (size_t k = 1; k < g.size(); ++k) r.inner *= g[k];
  return r;
}

// The parts of global rows [r0, r0 + nr) a rank's shard holds, in the order of its block:
// split_dim < 0 (the whole tensor): one run; split_dim 0: the rows of each segment that
// fall in the chunk; split_dim 1: the rank's columns of every row of the chunk, one run.
std::vector<Piece> local_pieces(const ParamSpec& s, int64_t r0, int64_t nr, int64_t inner) {
  if (s.split_dim < 0) return {{r0 * inner, nr * inner}};
  if (s.split_dim == 1) return {{r0 * s.shape[1], nr * s.shape[1]}};
  std::vector<Piece> out;
  int64_t lr = 0;  // the segment's first row in the rank's block
  for (auto [start, len] : s.segments) {
    const int64_t a = std::max(start, r0), b = std::min(start + len, r0 + nr);
    if (a < b) out.push_back({(lr + a - start) * inner, (b - a) * inner});
    lr += len;
  }
  return out;
}

int64_t piece_floats(const std::vector<Piece>& p) {
  int64_t n = 0;
  for (const Piece& x : p) n += x.second;
  return n;
}

// Between the pieces of rows [r0, r0 + nr) of a rank (concatenated in local_pieces order)
// and those rows of the global tensor (nr·inner floats, row-major): to_global places the
// pieces, from_global cuts them out.
template <bool to_global>
void move_rows(const ParamSpec& s, int64_t r0, int64_t nr, int64_t inner, float* piece,
               float* rows) {
  auto copy = [](float* dst, const float* src, int64_t n) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
  };
  auto move = [&](float* p, float* g, int64_t n) { to_global ? copy(g, p, n) : copy(p, g, n); };
  if (s.split_dim < 0) {
    move(piece, rows, nr * inner);
  } else if (s.split_dim == 0) {
    int64_t used = 0;
    for (auto [start, len] : s.segments) {
      const int64_t a = std::max(start, r0), b = std::min(start + len, r0 + nr);
      if (a >= b) continue;
      move(piece + used, rows + (a - r0) * inner, (b - a) * inner);
      used += (b - a) * inner;
    }
  } else {
    const int64_t cols = s.shape[1], g1 = s.global_shape[1];
    for (int64_t row = 0; row < nr; ++row) {
      int64_t lc = 0;
      for (auto [start, len] : s.segments) {
        move(piece + row * cols + lc, rows + row * g1 + start, len);
        lc += len;
      }
    }
  }
}

// Every tp rank's specs (index i is the same tensor on every rank).
std::vector<std::vector<ParamSpec>> specs_by_rank(const ModelConfig& cfg, int tp) {
  std::vector<std::vector<ParamSpec>> out;
  for (int r = 0; r < tp; ++r) out.push_back(param_specs(cfg, tp, r));
  return out;
}

// A tensor that crosses the tp group: sharded, at tp > 1. Otherwise the rank's tensor is
// the global one, rows in order (checked at tp = 1 by checkpoint_chunk_floats).
bool crosses_tp(const ParamSpec& s, int tp) { return tp > 1 && !s.replicated; }

// The most tp ranks that hold one global row (split_dim 0) or column (split_dim 1) of
// tensor i: kv heads replicated over tp are held by t/Hkv ranks. A gathered chunk of nr
// rows holds at most nr·inner·this floats.
int64_t max_holders(const std::vector<std::vector<ParamSpec>>& by_rank, size_t i) {
  const ParamSpec& s0 = by_rank[0][i];
  if (!crosses_tp(s0, int(by_rank.size()))) return 1;
  std::vector<int> cover(size_t(s0.global_shape.at(size_t(s0.split_dim))), 0);
  for (const auto& specs : by_rank)
    for (auto [start, len] : specs[i].segments)
      for (int64_t k = start; k < start + len; ++k) ++cover[size_t(k)];
  return *std::max_element(cover.begin(), cover.end());
}

// Rows per chunk of tensor i, so that the gathered parts fit one chunk of `chunk` floats.
int64_t chunk_rows(const std::vector<std::vector<ParamSpec>>& by_rank, size_t i, int64_t chunk) {
  const Rows r = rows_of(by_rank[0][i].global_shape);
  return std::max<int64_t>(1, chunk / (r.inner * max_holders(by_rank, i)));
}

}  // namespace

int64_t checkpoint_chunk_floats(const ModelConfig& cfg, int tp, int64_t cap) {
  SP_CHECK(tp >= 1, "checkpoint_chunk_floats: tp ", tp, " < 1");
  const auto by_rank = specs_by_rank(cfg, tp);
  int64_t largest = 0, row_need = 0;
  for (size_t i = 0; i < by_rank[0].size(); ++i) {
    const ParamSpec& s = by_rank[0][i];
    const Rows r = rows_of(s.global_shape);
    largest = std::max(largest, r.rows * r.inner);
    row_need = std::max(row_need, r.inner * max_holders(by_rank, i));
    if (tp == 1 && s.split_dim >= 0) {  // streamed as the global tensor: must be in order
      int64_t next = 0;
      for (auto [start, len] : s.segments) {
        SP_CHECK(start == next, "parameter ", s.name, ": at tp = 1 its segments are not the ",
                 "global tensor in order (segment at ", start, ", expected ", next, ")");
        next += len;
      }
    }
  }
  return std::max(std::min(cap, largest), row_need);
}

int64_t checkpoint_buffer_floats(const ModelConfig& cfg, int tp) {
  return (tp > 1 ? 2 : 1) * checkpoint_chunk_floats(cfg, tp);
}

std::string save_state_checkpoint(TrainState& st, Mesh& mesh, Comm& world, const ModelConfig& cfg,
                                  const std::string& root, int64_t step,
                                  const nlohmann::json& state,
                                  const nlohmann::json& manifest_extra) {
  const int t = mesh.tp;
  const bool rank0 = world.rank() == 0;
  // World rank 0 writes; its tp group (same dp and sp rank) gathers the tp shards.
  const bool writer_group = mesh.dp_rank == 0 && mesh.sp_rank == 0;
  SP_CHECK(!rank0 || (writer_group && mesh.tp_rank == 0),
           "save_state_checkpoint: world rank 0 is not tp rank 0 of dp 0, sp 0");
  const std::vector<ParamSpec>& specs = st.model.specs();
  const auto by_rank = specs_by_rank(cfg, t);
  SP_CHECK(by_rank[size_t(mesh.tp_rank)].size() == specs.size(),
           "save_state_checkpoint: the model's specs differ from the configuration's");
  const int64_t H = int64_t(st.io.size()) / (t > 1 ? 2 : 1);  // one chunk
  SP_CHECK(H >= checkpoint_chunk_floats(cfg, t, 1), "save_state_checkpoint: a buffer of ",
           st.io.size(), " floats cannot hold a row of every tensor (",
           checkpoint_chunk_floats(cfg, t, 1), " floats per chunk)");
  float* A = st.io.data();
  float* B = t > 1 ? A + H : nullptr;

  // World rank 0's file operations: the first error is kept and ends the writing, while
  // the stream (and its collectives) goes on to the end on every rank.
  std::unique_ptr<CheckpointWriter> w;
  std::exception_ptr err;
  auto on_writer = [&](auto&& fn) {
    if (!rank0 || err) return;
    try {
      fn();
    } catch (...) {
      err = std::current_exception();
      w.reset();  // removes the temp directory
    }
  };
  on_writer([&] { w = std::make_unique<CheckpointWriter>(root, step); });

  auto stream_tensor = [&](Which which, size_t i) {
    const ParamSpec& s = specs[i];
    const Rows g = rows_of(s.global_shape);
    const bool gather = crosses_tp(s, t);
    const int64_t rows_per = chunk_rows(by_rank, i, H);
    for (int64_t r0 = 0; r0 < g.rows; r0 += rows_per) {
      const int64_t nr = std::min(rows_per, g.rows - r0), n = nr * g.inner;
      if (!gather) {
        // The rank's tensor is the global one: tp rank 0's shard group reads it.
        if (mesh.tp_rank != 0) continue;
        st.read_local(which, s.offset + r0 * g.inner, n, A);
        on_writer([&] { w->append(A, size_t(n)); });
        continue;
      }
      int64_t got = 0;
      for (auto [off, len] : local_pieces(s, r0, nr, g.inner)) {
        st.read_local(which, s.offset + off, len, B + got);
        got += len;
      }
      if (!writer_group) continue;
      std::vector<int64_t> counts(static_cast<size_t>(t));
      for (int r = 0; r < t; ++r)
        counts[size_t(r)] = piece_floats(local_pieces(by_rank[size_t(r)][i], r0, nr, g.inner));
      mesh.tp_comm.allgatherv(B, A, counts);
      if (!rank0) continue;
      int64_t at = 0;
      for (int r = 0; r < t; ++r) {
        move_rows<true>(by_rank[size_t(r)][i], r0, nr, g.inner, A + at, B);
        at += counts[size_t(r)];
      }
      on_writer([&] { w->append(B, size_t(n)); });
    }
  };
  auto stream_file = [&](const char* file, std::initializer_list<Which> blocks) {
    std::vector<TensorInfo> infos;
    for (Which b : blocks)
      for (const ParamSpec& s : specs) infos.push_back({prefix_of(b) + s.name, s.global_shape});
    on_writer([&] { w->open_file(file, infos); });
    for (Which b : blocks)
      for (size_t i = 0; i < specs.size(); ++i) stream_tensor(b, i);
    on_writer([&] { w->close_file(); });
  };
  stream_file("model.safetensors", {Which::weights});
  stream_file("optimizer.safetensors", {Which::m, Which::v});

  std::string dir;
  agree_or_throw(world, [&] {
    if (!rank0) return;
    if (err) std::rethrow_exception(err);
    dir = w->finish(state, manifest_extra);
  });
  return dir;
}

void load_state_checkpoint(TrainState& st, const Checkpoint& ck, const ModelConfig& cfg, int tp,
                           int tp_rank) {
  // Compared through ModelConfig so that checkpoints written before floats were shown as
  // written (0.0020000000949949026 for 2e-3) still match.
  // Model rows that are resume keys (the RoPE scaling) do not shape the weights: the resume
  // check compares them and lets --override change them (extending a model's context).
  const nlohmann::json saved =
      ModelConfig::from_json(ck.manifest.value("model", nlohmann::json::object())).weights_json();
  SP_CHECK_USAGE(saved == cfg.weights_json(), "checkpoint ", ck.dir,
                 " was saved for a different model: ", saved.dump(), " vs current ",
                 cfg.weights_json().dump());
  const std::vector<ParamSpec>& specs = st.model.specs();
  const auto by_rank = specs_by_rank(cfg, tp);
  SP_CHECK(tp_rank >= 0 && tp_rank < tp && by_rank[size_t(tp_rank)].size() == specs.size(),
           "load_state_checkpoint: the model's specs differ from the configuration's");
  const int64_t H = int64_t(st.io.size()) / (tp > 1 ? 2 : 1);  // one chunk
  SP_CHECK(H >= checkpoint_chunk_floats(cfg, tp, 1), "load_state_checkpoint: a buffer of ",
           st.io.size(), " floats cannot hold a row of every tensor (",
           checkpoint_chunk_floats(cfg, tp, 1), " floats per chunk)");
  float* A = st.io.data();
  float* B = tp > 1 ? A + H : nullptr;

  const SafetensorsReader model((fs::path(ck.dir) / "model.safetensors").string());
  const SafetensorsReader opt((fs::path(ck.dir) / "optimizer.safetensors").string());
  auto entry = [&](const SafetensorsReader& r, Which which, const ParamSpec& s) {
    const std::string name = prefix_of(which) + s.name;
    const SafetensorsReader::Entry* e = r.find(name);
    SP_CHECK_INPUT(e, "checkpoint ", r.path(), " has no tensor '", name, "'");
    SP_CHECK_INPUT(e->shape == s.global_shape, "checkpoint tensor '", name, "' in ", r.path(),
                   " has a different shape than the model (", e->numel(), " elements)");
    return e;
  };
  // Every tensor is checked before any is read: a mismatch leaves the state untouched.
  for (const ParamSpec& s : specs) {
    entry(model, Which::weights, s);
    entry(opt, Which::m, s);
    entry(opt, Which::v, s);
  }
  for (Which which : {Which::weights, Which::m, Which::v}) {
    const SafetensorsReader& r = which == Which::weights ? model : opt;
    for (const ParamSpec& s : specs) {
      const SafetensorsReader::Entry* e = entry(r, which, s);
      const Rows g = rows_of(s.global_shape);
      const int64_t rows_per = std::max<int64_t>(1, H / g.inner);
      for (int64_t r0 = 0; r0 < g.rows; r0 += rows_per) {
        const int64_t nr = std::min(rows_per, g.rows - r0), n = nr * g.inner;
        r.read(*e, r0 * g.inner, n, A);
        if (!crosses_tp(s, tp)) {
          st.write_local(which, s.offset + r0 * g.inner, n, A);
          continue;
        }
        move_rows<false>(s, r0, nr, g.inner, B, A);
        int64_t used = 0;
        for (auto [off, len] : local_pieces(s, r0, nr, g.inner)) {
          st.write_local(which, s.offset + off, len, B + used);
          used += len;
        }
      }
    }
  }
}

}  // namespace seqpar
