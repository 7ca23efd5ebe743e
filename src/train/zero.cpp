#include "train/zero.hpp"

#include <algorithm>
#include <cstring>

#include "core/check.hpp"

namespace seqpar {

Zero::Zero(int level, const ModelConfig& cfg, const std::vector<ParamSpec>& specs, int tp,
           Comm& group, Comm* repl, Comm* kv, Arena& arena)
    : level_(level),
      n_(group.size()),
      rank_(group.rank()),
      group_(group),
      repl_(repl),
      kv_(kv),
      specs_(specs) {
  SP_CHECK_USAGE(level >= 1 && level <= 3, "zero level must be 0, 1, 2 or 3, got ", level);
  const int n_units = cfg.n_layer + 1;
  units_.resize(n_units);
  std::vector<int> spec_unit(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    Unit& u = units_.at(param_unit(s));
    spec_unit[i] = param_unit(s);
    if (s.replicated) {
      SP_CHECK(u.repl == u.size, "replicated parameter ", s.name,
               " follows a sharded one in its unit: the layout puts replicated ones first");
      u.repl += s.numel;
    }
    u.ranges.push_back({s.offset, s.numel});
    u.size += s.numel;
  }
  std::vector<int64_t> base(n_, 0);  // running shard offset per rank
  for (int ui = 0; ui < n_units; ++ui) {
    Unit& u = units_[ui];
    u.counts.resize(n_);
    u.starts.resize(n_);
    u.base = base;
    int64_t at = 0;
    for (int k = 0; k < n_; ++k) {
      u.counts[k] = u.size / n_ + (k < u.size % n_ ? 1 : 0);
      u.starts[k] = at;
      at += u.counts[k];
      base[k] += u.counts[k];
    }
    if (ui > 0) max_layer_ = std::max(max_layer_, u.size);
  }
  S_ = base[rank_];
  // Pieces: every unit's ranges cut at the owners' boundaries.
  for (size_t i = 0; i < specs.size(); ++i) {
    const ParamSpec& s = specs[i];
    const int ui = spec_unit[i];
    Unit& u = units_[ui];
    int64_t packed = 0;  // the spec's packed offset in its unit
    for (size_t j = 0; j < i; ++j)
      if (spec_unit[j] == ui) packed += specs[j].numel;
    for (int k = 0; k < n_; ++k) {
      const int64_t a = std::max(packed, u.starts[k]);
      const int64_t b = std::min(packed + s.numel, u.starts[k] + u.counts[k]);
      if (a >= b) continue;
      pieces_.push_back({s.offset + (a - packed), b - a, k, u.base[k] + (a - u.starts[k]), a, ui});
    }
  }
  std::sort(pieces_.begin(), pieces_.end(),
            [](const Piece& x, const Piece& y) { return x.flat < y.flat; });
  // This rank's segments: its pieces, cut again at the kv heads' boundaries.
  std::vector<std::pair<int64_t, int64_t>> kv_ranges;
  if (kv) kv_ranges = kv_replica_ranges(cfg, specs, tp);
  auto spec_at = [&](int64_t flat) -> const ParamSpec& {
    for (const ParamSpec& s : specs)
      if (flat >= s.offset && flat < s.offset + s.numel) return s;
    SP_FAIL("no parameter at offset ", flat);
  };
  for (const Piece& p : pieces_) {
    if (p.owner != rank_) continue;
    std::vector<int64_t> cuts = {p.flat, p.flat + p.n};
    for (auto [o, m] : kv_ranges)
      for (int64_t c : {o, o + m})
        if (c > p.flat && c < p.flat + p.n) cuts.push_back(c);
    std::sort(cuts.begin(), cuts.end());
    const ParamSpec& s = spec_at(p.flat);
    for (size_t c = 0; c + 1 < cuts.size(); ++c) {
      const int64_t f = cuts[c];
      bool in_kv = false;
      for (auto [o, m] : kv_ranges) in_kv |= f >= o && f < o + m;
      segs_.push_back({f, p.shard + (f - p.flat), cuts[c + 1] - f, s.decay, s.replicated, in_kv});
    }
  }
  // Packed kv ranges per unit (their gradients are summed over the kv group first).
  for (auto [o, m] : kv_ranges) {
    const ParamSpec& s = spec_at(o);
    const int ui = param_unit(s);
    int64_t packed = 0;
    for (const ParamSpec& t : specs)
      if (param_unit(t) == ui && t.offset < s.offset) packed += t.numel;
    units_[ui].kv.push_back({packed + (o - s.offset), m});
  }

  // Storage. Every level: (m, v) are the caller's (TrainState), S floats each.
  const int64_t U0 = units_[0].size;
  if (level_ == 1)
    unit_buf_ = Buffer(arena, Mem::comm, std::max(U0, max_layer_), "zero unit buffer");
  if (level_ >= 2) {
    g_shard_ = Buffer(arena, Mem::grads, S_, "zero gradient shard");
    g_outer_ = Buffer(arena, Mem::grads, U0, "zero unit-0 gradient");
    g_slots_ = Buffer(arena, Mem::grads, 2 * max_layer_, "zero layer gradient buffers");
    gs_[0].buf = g_slots_.data();
    gs_[1].buf = g_slots_.data() ? g_slots_.data() + max_layer_ : nullptr;
  }
  if (level_ >= 3) {
    p_shard_ = Buffer(arena, Mem::params, S_, "zero parameter shard");
    p_outer_ = Buffer(arena, Mem::params, U0, "zero unit-0 parameters");
    p_slots_ = Buffer(arena, Mem::params, 2 * max_layer_, "zero layer parameter buffers");
    ps_[0].buf = p_slots_.data();
    ps_[1].buf = p_slots_.data() ? p_slots_.data() + max_layer_ : nullptr;
  }

  // MPI's temporaries for the gradients' collectives (comm.hpp: Comm::scratch_bytes). Per
  // unit, one after the other: the replicated prefix and each kv head all-reduced, then the
  // unit reduce-scattered over the group. Levels 2, 3 leave the layer units' reduce-scatters
  // in flight, one per gradient slot: while unit u's collectives run, the other slot's may
  // be pending, and the blocking reduce-scatter of unit 0 (last) runs with both; level 3's
  // prefetching all-gathers (one per parameter slot) copy nothing but take κ each.
  auto unit_scratch = [&](const Unit& u) {
    uint64_t b = group_.scratch_bytes(Coll::reduce_scatter, uint64_t(u.size) * sizeof(float));
    if (repl_)
      b = std::max(b, repl_->scratch_bytes(Coll::allreduce, uint64_t(u.repl) * sizeof(float)));
    if (kv_)
      for (auto [o, m] : u.kv)
        b = std::max(b, kv_->scratch_bytes(Coll::allreduce, uint64_t(m) * sizeof(float)));
    return b;
  };
  uint64_t most = 0;
  for (const Unit& u : units_) most = std::max(most, unit_scratch(u));
  uint64_t in_flight = 0;
  if (level_ >= 2)
    in_flight +=
        2 * group_.scratch_bytes(Coll::reduce_scatter, uint64_t(max_layer_) * sizeof(float));
  if (level_ >= 3) in_flight += 2 * group_.scratch_bytes(Coll::allgatherv, 0);
  arena.note_outside(most + in_flight, "zero gradient reduce-scatters");
}

Zero::~Zero() = default;

void Zero::settle(Slot& s) {
  if (s.pending) group_.wait(s.req);
  s.pending = false;
}

// ---- level 3: parameters, unit by unit --------------------------------------------------

Zero::Slot* Zero::param_slot(int u) {
  for (Slot& s : ps_)
    if (s.unit == u) return &s;
  return nullptr;
}

void Zero::prefetch(int u) {
  if (u < 1 || param_slot(u)) return;  // none, or gathered (or gathering) already
  for (Slot& s : ps_) {
    if (s.held) continue;
    settle(s);
    const Unit& un = units_[u];
    s.unit = u;
    s.req = group_.iallgatherv(p_shard_.data() + un.base[rank_], s.buf, un.counts);
    s.pending = true;
    return;
  }
}

float* Zero::fetch(int u, int next) {
  SP_CHECK(level_ >= 3, "zero level ", level_, " keeps the full parameters: nothing to fetch");
  const Unit& un = units_.at(u);
  if (u == 0) {
    group_.allgatherv(p_shard_.data() + un.base[rank_], p_outer_.data(), un.counts);
    prefetch(next);
    return p_outer_.data();
  }
  Slot* s = param_slot(u);
  if (!s) {  // not prefetched: gather it now into a free buffer
    for (Slot& f : ps_)
      if (!f.held) {
        s = &f;
        break;
      }
    SP_CHECK(s, "zero: unit ", u, " fetched while both parameter buffers are in use");
    settle(*s);
    group_.allgatherv(p_shard_.data() + un.base[rank_], s->buf, un.counts);
    s->unit = u;
  }
  settle(*s);
  s->held = true;
  prefetch(next);
  return s->buf;
}

void Zero::drop(int u) {
  if (Slot* s = param_slot(u)) s->held = false;  // the data stays: a later fetch may reuse it
}

void Zero::invalidate() {
  for (Slot& s : ps_) {
    settle(s);
    s.unit = -1;
    s.held = false;
  }
}

void Zero::init_weights(const ModelConfig& cfg, uint64_t seed) {
  SP_CHECK(level_ >= 3, "Zero::init_weights: level ", level_, " keeps the full parameters");
  invalidate();
  // Each unit's values in a working buffer (the same init_params the model uses, keyed by
  // name and global index), this rank's part kept.
  for (size_t ui = 0; ui < units_.size(); ++ui) {
    const Unit& u = units_[ui];
    float* buf = ui == 0 ? p_outer_.data() : ps_[0].buf;
    init_params(cfg, unit_specs(specs_, int(ui)), buf, seed);
    std::memcpy(p_shard_.data() + u.base[rank_], buf + u.starts[rank_],
                sizeof(float) * u.counts[rank_]);
  }
}

// ---- levels 2, 3: gradients, unit by unit ------------------------------------------------

float* Zero::grad(int u) {
  SP_CHECK(level_ >= 2, "zero level ", level_, " keeps the full gradients");
  if (u == 0) {
    std::memset(g_outer_.data(), 0, sizeof(float) * units_[0].size);
    return g_outer_.data();
  }
  for (Slot& s : gs_) {
    if (s.held) continue;
    settle(s);  // its reduce-scatter has read the buffer
    s.unit = u;
    s.held = true;
    std::memset(s.buf, 0, sizeof(float) * units_.at(u).size);
    return s.buf;
  }
  SP_FAIL("zero: unit ", u, " asked for a gradient buffer while both are in use");
}

void Zero::grad_done(int u) {
  const Unit& un = units_.at(u);
  Slot* s = nullptr;
  float* buf = g_outer_.data();
  if (u > 0) {
    for (Slot& f : gs_)
      if (f.held && f.unit == u) s = &f;
    SP_CHECK(s, "zero: gradient of unit ", u, " handed over without grad()");
    buf = s->buf;
  }
  // Whole gradients first where the layout splits them (see the header), then the sum over
  // the group lands on each owner: Σ_group g, rank k keeping [start_k, start_k + c_k).
  if (repl_ && un.repl > 0) repl_->allreduce_sum(buf, size_t(un.repl));
  if (kv_)
    for (auto [o, m] : un.kv) kv_->allreduce_sum(buf + o, size_t(m));
  float* dst = g_shard_.data() + un.base[rank_];
  if (u > 0) {
    s->req = group_.ireduce_scatterv_sum(buf, dst, un.counts);
    s->pending = true;
    s->held = false;
    return;
  }
  group_.reduce_scatterv_sum(buf, dst, un.counts);
  for (Slot& f : gs_) settle(f);  // unit 0 comes last: every gradient has landed
}

// ---- level 1: reduce-scatter the full gradient block ---------------------------------------

void Zero::reduce_scatter_grads(float* grads) {
  SP_CHECK(level_ == 1, "zero level ", level_, " reduce-scatters gradients in the backward");
  float* buf = unit_buf_.data();
  for (size_t ui = 0; ui < units_.size(); ++ui) {
    const Unit& u = units_[ui];
    int64_t packed = 0;
    for (auto [f, m] : u.ranges) {
      std::memcpy(buf + packed, grads + f, sizeof(float) * m);
      packed += m;
    }
    // As grad_done: whole gradients first, then this rank's part of Σ_group at buf[0, c_k).
    if (repl_ && u.repl > 0) repl_->allreduce_sum(buf, size_t(u.repl));
    if (kv_)
      for (auto [o, m] : u.kv) kv_->allreduce_sum(buf + o, size_t(m));
    group_.reduce_scatterv_sum_inplace(buf, u.counts);
    for (const Piece& p : pieces_)
      if (p.unit == int(ui) && p.owner == rank_)
        std::memcpy(grads + p.flat, buf + (p.packed - u.starts[rank_]), sizeof(float) * p.n);
  }
}

// ---- levels 1, 2: all-gather the updated parameters --------------------------------------

void Zero::allgather_params(float* params) {
  SP_CHECK(level_ <= 2, "zero level 3 gathers parameters unit by unit (fetch)");
  for (Slot& s : gs_) settle(s);
  for (size_t ui = 0; ui < units_.size(); ++ui) {
    const Unit& u = units_[ui];
    float* buf = level_ == 1 ? unit_buf_.data() : ui == 0 ? g_outer_.data() : gs_[0].buf;
    // This rank's part into its place in the packed unit, gather the others' in place,
    // then back to the block.
    for (const Piece& p : pieces_)
      if (p.unit == int(ui) && p.owner == rank_)
        std::memcpy(buf + p.packed, params + p.flat, sizeof(float) * p.n);
    group_.allgatherv_inplace(buf, u.counts);
    int64_t packed = 0;
    for (auto [f, m] : u.ranges) {
      std::memcpy(params + f, buf + packed, sizeof(float) * m);
      packed += m;
    }
  }
  for (Slot& s : gs_) s.unit = -1;
}

// ---- checkpoints: the full block from the shards, and back -------------------------------

void Zero::read(const float* shard, int64_t off, int64_t n, float* out) {
  // The pieces meeting [off, off + n): each owner sends its parts in block order, every
  // rank places them.
  auto first = std::upper_bound(pieces_.begin(), pieces_.end(), off,
                                [](int64_t o, const Piece& p) { return o < p.flat + p.n; });
  std::vector<int64_t> counts(n_, 0);
  std::vector<float> mine;
  for (auto it = first; it != pieces_.end() && it->flat < off + n; ++it) {
    const int64_t a = std::max(off, it->flat), b = std::min(off + n, it->flat + it->n);
    counts[it->owner] += b - a;
    if (it->owner == rank_)
      mine.insert(mine.end(), shard + it->shard + (a - it->flat),
                  shard + it->shard + (b - it->flat));
  }
  std::vector<float> all(size_t(std::max<int64_t>(n, 1)));
  group_.allgatherv(mine.data(), all.data(), counts);
  std::vector<int64_t> cursor(n_, 0);
  for (int k = 1; k < n_; ++k) cursor[k] = cursor[k - 1] + counts[k - 1];
  for (auto it = first; it != pieces_.end() && it->flat < off + n; ++it) {
    const int64_t a = std::max(off, it->flat), b = std::min(off + n, it->flat + it->n);
    std::memcpy(out + (a - off), all.data() + cursor[it->owner], sizeof(float) * (b - a));
    cursor[it->owner] += b - a;
  }
}

void Zero::write(float* shard, int64_t off, int64_t n, const float* in) const {
  auto first = std::upper_bound(pieces_.begin(), pieces_.end(), off,
                                [](int64_t o, const Piece& p) { return o < p.flat + p.n; });
  for (auto it = first; it != pieces_.end() && it->flat < off + n; ++it) {
    if (it->owner != rank_) continue;
    const int64_t a = std::max(off, it->flat), b = std::min(off + n, it->flat + it->n);
    std::memcpy(shard + it->shard + (a - it->flat), in + (a - off), sizeof(float) * (b - a));
  }
}

}  // namespace seqpar
