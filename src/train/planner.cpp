#include "train/planner.hpp"

#include <algorithm>

#include "core/check.hpp"
#include "core/memory.hpp"
#include "core/threads.hpp"
#include "parallel/layout.hpp"

namespace seqpar {

MemoryPlan dry_run_peak(const TrainConfig& cfg, Comm& world) {
  Mesh mesh = make_mesh(world, cfg);
  const auto pos = shard_positions(cfg.seq_len, mesh.sp, mesh.sp_rank, cfg.layout);
  Arena arena(/*dry_run=*/true);
  { TrainState state(cfg, arena, mesh, cfg.batch, int(pos.size())); }
  MemoryPlan p;
  p.L = cfg.seq_len;
  std::array<int64_t, kMemCategories + 2> v{};
  for (int c = 0; c < kMemCategories; ++c) v[c] = int64_t(arena.peak(Mem(c)));
  v[kMemCategories] = int64_t(arena.total_peak());
  v[kMemCategories + 1] = int64_t(arena.outside_peak());
  world.allreduce_max(v.data(), v.size());
  for (int c = 0; c < kMemCategories; ++c) p.peak[c] = uint64_t(v[c]);
  p.peak_total = uint64_t(v[kMemCategories]);
  p.mpi_scratch = uint64_t(v[kMemCategories + 1]);
  return p;
}

MemoryPlan longest_under_budget(TrainConfig cfg, Comm& world, uint64_t budget, int64_t max_len) {
  auto peak_at = [&](int64_t L) {
    cfg.seq_len = L;
    return dry_run_peak(cfg, world);
  };
  // The shortest L the configuration accepts: any L >= sp splits (shards differ by one unit
  // of the layout), Megatron sequence parallelism needs one of the B·T rows per tp rank, and
  // MQSP needs at least m rows for its m micro-query chunks.
  const int64_t rows_min = cfg.tp_sp ? (cfg.tp + cfg.batch - 1) / cfg.batch : 1;  // B·T >= tp
  const int64_t min_len =
      std::max<int64_t>({cfg.strategy == Strategy::mqsp ? std::max(1, cfg.mqsp_micro) : 1, cfg.sp,
                         cfg.sp * rows_min});
  MemoryPlan best;
  // Peak grows with L: double until it does not fit, then bisect.
  int64_t lo = min_len - 1, hi = 0;
  for (int64_t L = min_len;; L *= 2) {
    if (L > max_len) {
      hi = max_len + 1;
      break;
    }
    MemoryPlan p = peak_at(L);
    if (p.peak_total > budget) {
      hi = L;
      break;
    }
    lo = L;
    best = p;
  }
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    MemoryPlan p = peak_at(mid);
    if (p.peak_total <= budget) {
      lo = mid;
      best = p;
    } else {
      hi = mid;
    }
  }
  return best;
}

std::string ProcessPlan::describe() const {
  std::string s = format_bytes(total) + " per rank (arena peak " + format_bytes(arena.peak_total) +
                  ", of which checkpoint buffer " + format_bytes(checkpoint) +
                  ", + runtime baseline " + format_bytes(baseline) + " with " +
                  std::to_string(baseline_threads) + " thread(s)";
  if (extra_threads > 0)
    s += ", + " + std::to_string(extra_threads) + " more thread(s) " + format_bytes(threads);
  if (mpi > 0) s += ", + MPI scratch " + format_bytes(mpi);
  s += ", + step reserve " + format_bytes(reserve) + "; set-up peak " + format_bytes(setup) +
       (setup > steady() ? ", the larger)" : ")");
  return s;
}

nlohmann::json ProcessPlan::terms() const {
  return {{"peak_bytes", arena.peak_total}, {"checkpoint_bytes", checkpoint},
          {"baseline_bytes", baseline},     {"baseline_threads", baseline_threads},
          {"threads_bytes", threads},       {"mpi_scratch_bytes", mpi},
          {"reserve_bytes", reserve},       {"setup_peak_bytes", setup},
          {"total_bytes", total},           {"max_memory_bytes", max_memory}};
}

uint64_t step_reserve_bytes(uint64_t arena_peak) { return (uint64_t(8) << 20) + arena_peak / 100; }

ProcessPlan process_plan(const TrainConfig& cfg, Comm& world) {
  ProcessPlan p;
  p.arena = dry_run_peak(cfg, world);
  const int team = warm_up_runtimes();
  warm_up_transport(world);
  // Max over ranks of the baseline, the set-up's peak and the warm-up's team; min over
  // ranks of the available memory (as −min).
  int64_t v[4] = {int64_t(process_rss_bytes()), int64_t(process_peak_rss_bytes()), int64_t(team),
                  -int64_t(available_memory_bytes())};
  world.allreduce_max(v, 4);
  p.baseline = uint64_t(v[0]);
  p.setup = uint64_t(v[1]);
  p.baseline_threads = int(v[2]);
  p.extra_threads = std::max(0, num_threads() - p.baseline_threads);
  p.threads = uint64_t(p.extra_threads) * thread_bytes();
  p.mpi = p.arena.mpi_scratch;
  p.checkpoint = p.arena.peak[int(Mem::ckpt)];  // part of the arena peak, not added again
  p.reserve = step_reserve_bytes(p.arena.peak_total);
  p.total = std::max(p.setup, p.steady());
  p.max_memory_given = cfg.max_memory != "available";
  p.max_memory = p.max_memory_given ? parse_bytes(cfg.max_memory, "max_memory") : uint64_t(-v[3]);
  if (p.max_memory == 0) p.max_memory = UINT64_MAX;  // nothing readable: no limit known
  return p;
}

void refuse_over_memory(const ProcessPlan& p, const TrainConfig& cfg) {
  SP_CHECK_USAGE(p.fits(), "this configuration needs ", p.describe(), " but ",
                 p.max_memory_given
                     ? "--max-memory is " + cfg.max_memory + " (" + format_bytes(p.max_memory) + ")"
                     : "the machine offers " + format_bytes(p.max_memory) +
                           " (the smallest available memory over ranks)",
                 "; lower --seq-len or --batch, raise --sp or --tp, or see `seqpar plan` for the "
                 "longest L that fits");
}

}  // namespace seqpar
