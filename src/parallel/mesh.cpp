#include "parallel/mesh.hpp"

#include "core/check.hpp"

namespace seqpar {

Mesh make_mesh(Comm& world, int tp, int sp, int kv_replicas) {
  Mesh m;
  m.sp = sp;
  m.tp = tp;
  SP_CHECK_USAGE(world.size() % (m.sp * m.tp) == 0, "world size ", world.size(),
                 " is not divisible by tp·sp = ", m.tp, "·", m.sp, " (world = dp · tp · sp)");
  m.dp = world.size() / (m.sp * m.tp);
  m.sp_rank = world.rank() % m.sp;
  m.tp_rank = world.rank() / m.sp % m.tp;
  m.dp_rank = world.rank() / (m.sp * m.tp);
  m.sp_comm = world.split(m.dp_rank * m.tp + m.tp_rank, m.sp_rank, "sp");
  m.tp_comm = world.split(m.dp_rank * m.sp + m.sp_rank, m.tp_rank, "tp");
  m.shard_comm = world.split(m.tp_rank, world.rank(), "shard");
  m.kv_comm = m.tp_comm.split(m.tp_rank / kv_replicas, m.tp_rank, "kv");
  return m;
}

void Mesh::reset_stats() {
  sp_comm.stats().reset();
  tp_comm.stats().reset();
  shard_comm.stats().reset();
  kv_comm.stats().reset();
}

}  // namespace seqpar
