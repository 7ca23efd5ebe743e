// MPI communicator: RAII, checked calls, algorithmic byte counters (formulas in comm.hpp
// and docs/comm.md).
#include "comm/comm.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <sstream>
#include <utility>

#include "core/check.hpp"
#include "core/profile.hpp"

namespace seqpar {

namespace {

// MPI counts and displacements are int. Collectives whose per-call counts can be split
// into independent pieces (all-reduce, reduce, broadcast) are chunked; the others refuse
// a count above INT_MAX with an error instead of letting it wrap.
constexpr size_t kMaxChunk = static_cast<size_t>(INT_MAX);

bool mpi_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS)
    return "MPI error code " + std::to_string(rc);
  return std::string(text, static_cast<size_t>(len));
}

// ⌊num·S/den⌋ without overflow for any S that fits in memory.
uint64_t scaled(uint64_t bytes, uint64_t num, uint64_t den) {
  return static_cast<uint64_t>(static_cast<unsigned __int128>(bytes) * num / den);
}

// Values shown in a check_same message. A long string (a config dump, a file) is shown
// as a 64-character window around `at`, the first byte where it differs from the value
// it is compared with, so the message shows what actually differs.
std::string show(const std::string& v, size_t at) {
  constexpr size_t kShown = 64, kBefore = 24;
  if (v.size() <= kShown) return "'" + v + "'";
  const size_t start = std::min(at > kBefore ? at - kBefore : 0, v.size() - kShown);
  std::ostringstream os;
  os << '\'' << (start > 0 ? "..." : "") << v.substr(start, kShown)
     << (start + kShown < v.size() ? "..." : "") << "' (" << v.size() << " bytes)";
  return os.str();
}
std::string show(int64_t v, size_t) { return std::to_string(v); }

size_t first_difference(const std::string& a, const std::string& b) {
  return static_cast<size_t>(
      std::mismatch(a.begin(), a.begin() + std::min(a.size(), b.size()), b.begin()).first -
      a.begin());
}
size_t first_difference(int64_t, int64_t) { return 0; }

// Builds "<what> disagrees across ranks: rank 0 has A, rank 2 has B" from every rank's
// value; returns "" when all agree. Every rank holds the same vector, so every rank
// reaches the same verdict and throws (or not) together.
template <class T>
std::string disagreement(const std::string& what, const std::vector<T>& values) {
  constexpr int kListed = 8;
  std::ostringstream os;
  int differing = 0;
  for (size_t r = 1; r < values.size(); ++r) {
    if (values[r] == values[0]) continue;
    const size_t at = first_difference(values[0], values[r]);
    if (differing == 0) {
      os << what << " disagrees across ranks: rank 0 has " << show(values[0], at);
    }
    if (differing < kListed) os << ", rank " << r << " has " << show(values[r], at);
    ++differing;
  }
  if (differing > kListed) os << " (and " << differing - kListed << " more ranks differ)";
  return os.str();
}

}  // namespace

// Checked MPI call: on failure throws seqpar::Error naming rank, communicator, operation
// and MPI's error string, with the file:line of the call.
#define SP_MPI(op, call) check_mpi((call), op, __FILE__, __LINE__)

// ---------------------------------------------------------------------------------------
// MpiSession

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) SP_FAIL("MPI_Init_thread failed: ", mpi_error_text(rc));
    owns_ = true;
    if (provided < MPI_THREAD_FUNNELED) {
      MPI_Finalize();
      owns_ = false;
      SP_FAIL("MPI provides thread level ", provided, ", seqpar needs MPI_THREAD_FUNNELED (",
              MPI_THREAD_FUNNELED, ")");
    }
  }
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  error_rank() = rank;
}

MpiSession::~MpiSession() {
  if (owns_ && !mpi_finalized()) MPI_Finalize();
}

// ---------------------------------------------------------------------------------------
// CommStats

uint64_t CommStats::total_bytes_sent() const {
  uint64_t total = 0;
  for (const auto& [op, bytes] : bytes_sent) total += bytes;
  return total;
}

void CommStats::reset() {
  bytes_sent.clear();
  calls.clear();
}

// ---------------------------------------------------------------------------------------
// Comm: lifetime

Comm Comm::world() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  SP_CHECK(initialized && !mpi_finalized(),
           "Comm::world() needs MPI to be initialised (create an MpiSession first)");
  MPI_Comm dup = MPI_COMM_NULL;
  int rc = MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  if (rc != MPI_SUCCESS) SP_FAIL("MPI_Comm_dup(MPI_COMM_WORLD) failed: ", mpi_error_text(rc));
  Comm c(dup, "world");
  if (error_rank() < 0) error_rank() = c.rank();
  return c;
}

// Takes ownership of `c` (MPI_COMM_NULL gives an invalid Comm, as split() with
// MPI_UNDEFINED does).
Comm::Comm(MPI_Comm c, const std::string& name) : comm_(c), name_(name) {
  if (comm_ == MPI_COMM_NULL) return;
  try {
    int rc = MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    if (rc != MPI_SUCCESS)
      SP_FAIL("comm '", name_, "': MPI_Comm_set_errhandler failed: ", mpi_error_text(rc));
    SP_MPI("MPI_Comm_rank", MPI_Comm_rank(comm_, &rank_));
    SP_MPI("MPI_Comm_size", MPI_Comm_size(comm_, &size_));
    SP_MPI("MPI_Comm_set_name", MPI_Comm_set_name(comm_, name_.c_str()));
  } catch (...) {
    MPI_Comm_free(&comm_);
    throw;
  }
}

Comm::~Comm() {
  if (comm_ != MPI_COMM_NULL && !mpi_finalized()) MPI_Comm_free(&comm_);
}

Comm::Comm(Comm&& o) noexcept
    : comm_(std::exchange(o.comm_, MPI_COMM_NULL)),
      rank_(std::exchange(o.rank_, 0)),
      size_(std::exchange(o.size_, 1)),
      name_(std::move(o.name_)),
      stats_(std::move(o.stats_)) {
  o.name_.clear();
  o.stats_.reset();
}

Comm& Comm::operator=(Comm&& o) noexcept {
  if (this == &o) return *this;
  if (comm_ != MPI_COMM_NULL && !mpi_finalized()) MPI_Comm_free(&comm_);
  comm_ = std::exchange(o.comm_, MPI_COMM_NULL);
  rank_ = std::exchange(o.rank_, 0);
  size_ = std::exchange(o.size_, 1);
  name_ = std::move(o.name_);
  stats_ = std::move(o.stats_);
  o.name_.clear();
  o.stats_.reset();
  return *this;
}

Comm Comm::split(int color, int key, const std::string& name) const {
  require_valid("split");
  MPI_Comm out = MPI_COMM_NULL;
  SP_MPI("MPI_Comm_split", MPI_Comm_split(comm_, color, key, &out));
  return Comm(out, name);
}

// ---------------------------------------------------------------------------------------
// Comm: checks and counters

void Comm::check_mpi(int rc, const char* op, const char* file, int line) const {
  if (rc == MPI_SUCCESS) return;
  detail::fail(file, line, "", "comm '", name_, "' rank ", rank_, " of ", size_, ": ", op,
               " failed: ", mpi_error_text(rc));
}

void Comm::require_valid(const char* op) const {
  SP_CHECK(comm_ != MPI_COMM_NULL, op, " on an invalid (null or moved-from) communicator '", name_,
           "'");
}

int Comm::to_count(size_t n, const char* op) const {
  SP_CHECK(n <= kMaxChunk, "comm '", name_, "' rank ", rank_, ": ", op, " count ", n,
           " exceeds MPI's int limit ", INT_MAX, "; split the transfer");
  return static_cast<int>(n);
}

int Comm::to_count(int64_t n, const char* op) const {
  SP_CHECK(n >= 0, "comm '", name_, "' rank ", rank_, ": ", op, " count/displacement ", n,
           " is negative");
  return to_count(static_cast<size_t>(n), op);
}

void Comm::count(const char* op, uint64_t bytes) {
  stats_.bytes_sent[op] += bytes;
  stats_.calls[op] += 1;
}

// ---------------------------------------------------------------------------------------
// Collectives

namespace {
template <class T>
MPI_Datatype mpi_type();
template <>
MPI_Datatype mpi_type<float>() {
  return MPI_FLOAT;
}
template <>
MPI_Datatype mpi_type<double>() {
  return MPI_DOUBLE;
}
template <>
MPI_Datatype mpi_type<int64_t>() {
  return MPI_INT64_T;
}
}  // namespace

template <class T>
void Comm::allreduce_impl(T* buf, size_t n, MPI_Op op) {
  const PhaseScope phase(Phase::comm);
  require_valid("allreduce");
  // At least one call even for n = 0, so argument errors surface on every path.
  size_t off = 0;
  do {
    size_t chunk = std::min(n - off, kMaxChunk);
    SP_MPI("MPI_Allreduce", MPI_Allreduce(MPI_IN_PLACE, buf + off, static_cast<int>(chunk),
                                          mpi_type<T>(), op, comm_));
    off += chunk;
  } while (off < n);
  // Ring reduce-scatter + all-gather: each rank sends 2·(n−1)/n·S.
  count("allreduce", scaled(n * sizeof(T), 2 * static_cast<uint64_t>(size_ - 1), size_));
}

void Comm::allreduce_sum(float* buf, size_t n) { allreduce_impl(buf, n, MPI_SUM); }
void Comm::allreduce_sum(double* buf, size_t n) { allreduce_impl(buf, n, MPI_SUM); }
void Comm::allreduce_sum(int64_t* buf, size_t n) { allreduce_impl(buf, n, MPI_SUM); }
void Comm::allreduce_max(float* buf, size_t n) { allreduce_impl(buf, n, MPI_MAX); }
void Comm::allreduce_max(double* buf, size_t n) { allreduce_impl(buf, n, MPI_MAX); }
void Comm::allreduce_max(int64_t* buf, size_t n) { allreduce_impl(buf, n, MPI_MAX); }
void Comm::allreduce_min(int64_t* buf, size_t n) { allreduce_impl(buf, n, MPI_MIN); }

void Comm::allgather(const float* send, float* recv, size_t n) {
  const PhaseScope phase(Phase::comm);
  require_valid("allgather");
  int cnt = to_count(n, "allgather");
  SP_MPI("MPI_Allgather", MPI_Allgather(send, cnt, MPI_FLOAT, recv, cnt, MPI_FLOAT, comm_));
  // Each rank's S = n floats reach the n−1 others: (n−1)·S.
  count("allgather", static_cast<uint64_t>(size_ - 1) * n * sizeof(float));
}

void Comm::allgatherv(const float* send, float* recv, const std::vector<int64_t>& counts) {
  allgatherv_impl(send, recv, counts);
}

void Comm::allgatherv_inplace(float* buf, const std::vector<int64_t>& counts) {
  allgatherv_impl(nullptr, buf, counts);
}

// send = null: in place, this rank's block already at its displacement in recv.
void Comm::allgatherv_impl(const float* send, float* recv, const std::vector<int64_t>& counts) {
  const PhaseScope phase(Phase::comm);
  require_valid("allgatherv");
  SP_CHECK(counts.size() == static_cast<size_t>(size_), "comm '", name_, "' rank ", rank_,
           ": allgatherv got ", counts.size(), " counts, expected one per rank (", size_, ")");
  std::vector<int> cnts(size_), displs(size_);
  int64_t off = 0;
  for (int r = 0; r < size_; ++r) {
    cnts[r] = to_count(counts[r], "allgatherv");
    displs[r] = to_count(off, "allgatherv displacement");
    off += counts[r];
  }
  to_count(off, "allgatherv total");
  SP_MPI("MPI_Allgatherv", send ? MPI_Allgatherv(send, cnts[rank_], MPI_FLOAT, recv, cnts.data(),
                                                 displs.data(), MPI_FLOAT, comm_)
                                : MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, recv, cnts.data(),
                                                 displs.data(), MPI_FLOAT, comm_));
  // This rank's counts[rank] floats reach the n−1 others.
  count("allgatherv", static_cast<uint64_t>(size_ - 1) * cnts[rank_] * sizeof(float));
}

Comm::Request Comm::iallgatherv(const float* send, float* recv,
                                const std::vector<int64_t>& counts) {
  require_valid("iallgatherv");
  SP_CHECK(counts.size() == static_cast<size_t>(size_), "comm '", name_, "' rank ", rank_,
           ": iallgatherv got ", counts.size(), " counts, expected one per rank (", size_, ")");
  auto cd = std::make_shared<std::vector<int>>(2 * size_);  // counts, then displacements
  int64_t off = 0;
  for (int r = 0; r < size_; ++r) {
    (*cd)[r] = to_count(counts[r], "iallgatherv");
    (*cd)[size_ + r] = to_count(off, "iallgatherv displacement");
    off += counts[r];
  }
  to_count(off, "iallgatherv total");
  Request q;
  SP_MPI("MPI_Iallgatherv", MPI_Iallgatherv(send, (*cd)[rank_], MPI_FLOAT, recv, cd->data(),
                                            cd->data() + size_, MPI_FLOAT, comm_, &q.req));
  q.keep = cd;
  count("allgatherv", static_cast<uint64_t>(size_ - 1) * (*cd)[rank_] * sizeof(float));
  return q;
}

Comm::Request Comm::ireduce_scatterv_sum(const float* send, float* recv,
                                         const std::vector<int64_t>& counts) {
  require_valid("ireduce_scatterv");
  SP_CHECK(counts.size() == static_cast<size_t>(size_), "comm '", name_, "' rank ", rank_,
           ": ireduce_scatterv got ", counts.size(), " counts, expected one per rank (", size_,
           ")");
  auto cnts = std::make_shared<std::vector<int>>(size_);
  int64_t total = 0, others = 0;
  for (int r = 0; r < size_; ++r) {
    (*cnts)[r] = to_count(counts[r], "ireduce_scatterv");
    total += counts[r];
    if (r != rank_) others += counts[r];
  }
  to_count(total, "ireduce_scatterv total");
  Request q;
  SP_MPI("MPI_Ireduce_scatter",
         MPI_Ireduce_scatter(send, recv, cnts->data(), MPI_FLOAT, MPI_SUM, comm_, &q.req));
  q.keep = cnts;
  count("reduce_scatterv", static_cast<uint64_t>(others) * sizeof(float));
  return q;
}

void Comm::reduce_scatter_sum(const float* send, float* recv, size_t n) {
  const PhaseScope phase(Phase::comm);
  require_valid("reduce_scatter");
  int cnt = to_count(n, "reduce_scatter");
  SP_MPI("MPI_Reduce_scatter_block",
         MPI_Reduce_scatter_block(send, recv, cnt, MPI_FLOAT, MPI_SUM, comm_));
  // Ring reduce-scatter with S = n floats out per rank: n−1 steps of S each.
  count("reduce_scatter", static_cast<uint64_t>(size_ - 1) * n * sizeof(float));
}

void Comm::reduce_scatterv_sum(const float* send, float* recv, const std::vector<int64_t>& counts) {
  reduce_scatterv_impl(send, recv, counts);
}

void Comm::reduce_scatterv_sum_inplace(float* buf, const std::vector<int64_t>& counts) {
  reduce_scatterv_impl(MPI_IN_PLACE, buf, counts);
}

// send = MPI_IN_PLACE: recv holds every block on entry and this rank's on return.
void Comm::reduce_scatterv_impl(const void* send, float* recv, const std::vector<int64_t>& counts) {
  const PhaseScope phase(Phase::comm);
  require_valid("reduce_scatterv");
  SP_CHECK(counts.size() == static_cast<size_t>(size_), "comm '", name_, "' rank ", rank_,
           ": reduce_scatterv got ", counts.size(), " counts, expected one per rank (", size_, ")");
  std::vector<int> cnts(size_);
  int64_t total = 0, others = 0;
  for (int r = 0; r < size_; ++r) {
    cnts[r] = to_count(counts[r], "reduce_scatterv");
    total += counts[r];
    if (r != rank_) others += counts[r];
  }
  to_count(total, "reduce_scatterv total");
  SP_MPI("MPI_Reduce_scatter",
         MPI_Reduce_scatter(send, recv, cnts.data(), MPI_FLOAT, MPI_SUM, comm_));
  // Ring reduce-scatter: the partial sum of every block but this rank's own leaves once.
  count("reduce_scatterv", static_cast<uint64_t>(others) * sizeof(float));
}

void Comm::alltoall(const float* send, float* recv, size_t n) {
  const PhaseScope phase(Phase::comm);
  require_valid("alltoall");
  int cnt = to_count(n, "alltoall");
  SP_MPI("MPI_Alltoall", MPI_Alltoall(send, cnt, MPI_FLOAT, recv, cnt, MPI_FLOAT, comm_));
  // S = size·n floats in the send buffer; all but this rank's own block leave:
  // (n−1)/n·S = (size−1)·n floats, exact.
  count("alltoall", static_cast<uint64_t>(size_ - 1) * n * sizeof(float));
}

void Comm::alltoallv(const float* send, const std::vector<int64_t>& send_counts,
                     const std::vector<int64_t>& send_displs, float* recv,
                     const std::vector<int64_t>& recv_counts,
                     const std::vector<int64_t>& recv_displs) {
  const PhaseScope phase(Phase::comm);
  require_valid("alltoallv");
  const size_t p = static_cast<size_t>(size_);
  SP_CHECK(send_counts.size() == p && send_displs.size() == p && recv_counts.size() == p &&
               recv_displs.size() == p,
           "comm '", name_, "' rank ", rank_, ": alltoallv needs one count and displacement per ",
           "rank (", size_, "), got send ", send_counts.size(), "/", send_displs.size(), ", recv ",
           recv_counts.size(), "/", recv_displs.size());
  std::vector<int> sc(p), sd(p), rc(p), rd(p);
  uint64_t off_rank = 0;
  for (size_t j = 0; j < p; ++j) {
    sc[j] = to_count(send_counts[j], "alltoallv send count");
    sd[j] = to_count(send_displs[j], "alltoallv send displacement");
    rc[j] = to_count(recv_counts[j], "alltoallv recv count");
    rd[j] = to_count(recv_displs[j], "alltoallv recv displacement");
    if (j != static_cast<size_t>(rank_)) off_rank += static_cast<uint64_t>(sc[j]);
  }
  SP_MPI("MPI_Alltoallv", MPI_Alltoallv(send, sc.data(), sd.data(), MPI_FLOAT, recv, rc.data(),
                                        rd.data(), MPI_FLOAT, comm_));
  // Exact: the floats this rank addresses to other ranks.
  count("alltoallv", off_rank * sizeof(float));
}

void Comm::reduce_sum(const float* send, float* recv, size_t n, int root) {
  const PhaseScope phase(Phase::comm);
  require_valid("reduce");
  const bool in_place = rank_ == root && send == recv;
  size_t off = 0;
  do {
    size_t chunk = std::min(n - off, kMaxChunk);
    const void* s = in_place ? MPI_IN_PLACE : static_cast<const void*>(send + off);
    float* r = recv ? recv + off : nullptr;
    SP_MPI("MPI_Reduce",
           MPI_Reduce(s, r, static_cast<int>(chunk), MPI_FLOAT, MPI_SUM, root, comm_));
    off += chunk;
  } while (off < n);
  // (n−1)/n·S on every rank: n such reduces with rotating roots move exactly what one
  // reduce-scatter of n·S does, which is how the strategies use them (docs/comm.md).
  count("reduce", scaled(n * sizeof(float), static_cast<uint64_t>(size_ - 1), size_));
}

void Comm::bcast(void* buf, size_t bytes, int root) {
  const PhaseScope phase(Phase::comm);
  require_valid("bcast");
  char* p = static_cast<char*>(buf);
  size_t off = 0;
  do {
    size_t chunk = std::min(bytes - off, kMaxChunk);
    SP_MPI("MPI_Bcast", MPI_Bcast(p + off, static_cast<int>(chunk), MPI_BYTE, root, comm_));
    off += chunk;
  } while (off < bytes);
  // S leaves the root (once, as in a pipelined chain); nothing moves when n = 1.
  count("bcast", rank_ == root && size_ > 1 ? bytes : 0);
}

void Comm::barrier() {
  const PhaseScope phase(Phase::comm);
  require_valid("barrier");
  SP_MPI("MPI_Barrier", MPI_Barrier(comm_));
}

// ---------------------------------------------------------------------------------------
// Point-to-point

namespace {
// p2p counts exact bytes that leave this rank: nothing for a send to self or to
// MPI_PROC_NULL.
uint64_t p2p_bytes(size_t n, int dst, int self) {
  return dst == self || dst == MPI_PROC_NULL ? 0 : n * sizeof(float);
}
}  // namespace

Comm::Request Comm::isend(const float* buf, size_t n, int dst, int tag) {
  require_valid("isend");
  Request r;
  SP_MPI("MPI_Isend", MPI_Isend(buf, to_count(n, "isend"), MPI_FLOAT, dst, tag, comm_, &r.req));
  count("p2p", p2p_bytes(n, dst, rank_));
  return r;
}

Comm::Request Comm::irecv(float* buf, size_t n, int src, int tag) {
  require_valid("irecv");
  Request r;
  SP_MPI("MPI_Irecv", MPI_Irecv(buf, to_count(n, "irecv"), MPI_FLOAT, src, tag, comm_, &r.req));
  return r;
}

void Comm::wait(Request& r) {
  const PhaseScope phase(Phase::comm);
  SP_MPI("MPI_Wait", MPI_Wait(&r.req, MPI_STATUS_IGNORE));
}

// MPI_ERR_IN_STATUS hides the failing request's own code in its status; report that.
void Comm::check_multi(int rc, const char* op, const std::vector<MPI_Status>& st, const char* file,
                       int line) const {
  if (rc == MPI_ERR_IN_STATUS) {
    for (size_t i = 0; i < st.size(); ++i) {
      int e = st[i].MPI_ERROR;
      if (e != MPI_SUCCESS && e != MPI_ERR_PENDING)
        detail::fail(file, line, "", "comm '", name_, "' rank ", rank_, " of ", size_, ": ", op,
                     " failed on request ", i, ": ", mpi_error_text(e));
    }
  }
  check_mpi(rc, op, file, line);
}

void Comm::wait_all(std::vector<Request>& rs) {
  const PhaseScope phase(Phase::comm);
  if (rs.empty()) return;
  std::vector<MPI_Request> reqs(rs.size());
  for (size_t i = 0; i < rs.size(); ++i) reqs[i] = rs[i].req;
  std::vector<MPI_Status> st(rs.size());
  int rc = MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), st.data());
  for (size_t i = 0; i < rs.size(); ++i) rs[i].req = reqs[i];
  check_multi(rc, "MPI_Waitall", st, __FILE__, __LINE__);
}

void Comm::cancel_all(std::vector<Request>& rs) noexcept {
  int finalized = 0;
  MPI_Finalized(&finalized);
  for (Request& r : rs) {
    if (r.req == MPI_REQUEST_NULL || finalized) continue;
    MPI_Cancel(&r.req);
    MPI_Request_free(&r.req);
    r.req = MPI_REQUEST_NULL;
  }
}

bool Comm::test_all(std::vector<Request>& rs) {
  if (rs.empty()) return true;
  std::vector<MPI_Request> reqs(rs.size());
  for (size_t i = 0; i < rs.size(); ++i) reqs[i] = rs[i].req;
  std::vector<MPI_Status> st(rs.size());
  int done = 0;
  int rc = MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &done, st.data());
  for (size_t i = 0; i < rs.size(); ++i) rs[i].req = reqs[i];
  check_multi(rc, "MPI_Testall", st, __FILE__, __LINE__);
  return done != 0;
}

void Comm::sendrecv(const float* send, size_t n_send, int dst, float* recv, size_t n_recv, int src,
                    int tag) {
  const PhaseScope phase(Phase::comm);
  require_valid("sendrecv");
  SP_MPI("MPI_Sendrecv", MPI_Sendrecv(send, to_count(n_send, "sendrecv send"), MPI_FLOAT, dst, tag,
                                      recv, to_count(n_recv, "sendrecv recv"), MPI_FLOAT, src, tag,
                                      comm_, MPI_STATUS_IGNORE));
  count("p2p", p2p_bytes(n_send, dst, rank_));
}

// ---------------------------------------------------------------------------------------
// Consistency checks (control traffic: not counted in stats)

void Comm::check_same(const std::string& what, int64_t value) {
  require_valid("check_same");
  std::vector<int64_t> all(size_);
  SP_MPI("MPI_Allgather", MPI_Allgather(&value, 1, MPI_INT64_T, all.data(), 1, MPI_INT64_T, comm_));
  std::string msg = disagreement(what, all);
  if (!msg.empty()) SP_FAIL_USAGE(msg);  // ranks given different settings
}

std::vector<std::string> Comm::allgather_strings(const std::string& value) {
  require_valid("allgather_strings");
  // Lengths first, then the bytes. Every rank sees the same lengths, so a refusal for
  // size is taken on every rank alike and nothing is left waiting.
  int64_t len = static_cast<int64_t>(value.size());
  std::vector<int64_t> lens(size_);
  SP_MPI("MPI_Allgather", MPI_Allgather(&len, 1, MPI_INT64_T, lens.data(), 1, MPI_INT64_T, comm_));
  std::vector<int> cnts(size_), displs(size_);
  int64_t off = 0;
  for (int r = 0; r < size_; ++r) {
    SP_CHECK(lens[r] <= INT_MAX && off <= INT_MAX - lens[r], "allgather_strings of more than ",
             INT_MAX, " bytes across ranks is refused (rank ", r, " has ", lens[r], " bytes)");
    cnts[r] = static_cast<int>(lens[r]);
    displs[r] = static_cast<int>(off);
    off += lens[r];
  }
  std::string bytes(static_cast<size_t>(off), '\0');
  SP_MPI("MPI_Allgatherv", MPI_Allgatherv(value.data(), cnts[rank_], MPI_CHAR, bytes.data(),
                                          cnts.data(), displs.data(), MPI_CHAR, comm_));
  std::vector<std::string> all(size_);
  for (int r = 0; r < size_; ++r) all[r] = bytes.substr(displs[r], cnts[r]);
  return all;
}

void Comm::check_same(const std::string& what, const std::string& value) {
  std::string msg = disagreement(what, allgather_strings(value));
  if (!msg.empty()) SP_FAIL_USAGE(msg);  // ranks given different settings
}

bool Comm::all_ok(bool ok) {
  require_valid("all_ok");
  int mine = ok ? 1 : 0, all = 0;
  SP_MPI("MPI_Allreduce", MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, comm_));
  return all != 0;
}

#undef SP_MPI

void agree_or_throw(Comm& c, const std::function<void()>& fn) {
  // Status word: "" ok, "U<message>" usage error, "E<message>" any other error.
  std::string mine;
  try {
    fn();
  } catch (const UsageError& e) {
    mine = std::string("U") + e.what();
  } catch (const std::exception& e) {
    mine = std::string("E") + e.what();
  }
  const std::vector<std::string> all = c.allgather_strings(mine);
  int first_bad = -1;
  bool usage = false;
  for (int r = 0; r < int(all.size()); ++r) {
    if (all[r].empty()) continue;
    if (first_bad < 0) first_bad = r;
    usage |= all[r][0] == 'U';
  }
  if (first_bad < 0) return;
  std::string msg;
  if (!mine.empty()) {
    msg = mine.substr(1);
  } else {
    std::string theirs = all[first_bad].substr(1);
    const std::string tag = "[rank " + std::to_string(first_bad) + "] ";
    if (theirs.rfind(tag, 0) == 0) theirs = theirs.substr(tag.size());
    msg = "rank " + std::to_string(c.rank()) + " refused: rank " + std::to_string(first_bad) +
          ": " + theirs;
  }
  if (usage) {
    UsageError e(msg);
    e.agreed = true;
    throw e;
  }
  Error e(msg);
  e.agreed = true;
  throw e;
}

uint64_t collective_scratch_bytes(Coll op, int ranks, uint64_t operand_bytes) {
  if (ranks <= 1) return 0;
  uint64_t c = 0;  // full copies of the operand (comm.hpp)
  switch (op) {
    case Coll::allreduce:
    case Coll::allgather:
      c = 1;
      break;
    case Coll::reduce:
      c = 3;
      break;
    case Coll::reduce_scatter:
      c = 2;
      break;
    case Coll::allgatherv:
    case Coll::alltoallv:
    case Coll::bcast:
      c = 0;
      break;
  }
  const uint64_t kappa = (uint64_t(128) << 10) + (uint64_t(64) << 10) * uint64_t(ranks);
  return c * operand_bytes + kappa;
}

void warm_up_transport(Comm& c) {
  const int n = c.size(), r = c.rank();
  if (n == 1) return;
  // 1 MiB: above every eager limit (the shared-memory transport's is 4 KiB, TCP's 64 KiB)
  // and 32 of the shared-memory transport's 32 KiB fragments in its pipelined range, which
  // fills its per-peer fragments in turn. Its buffers and the all-reduce's temporary are
  // transient but stay in VmHWM (the plan's set-up peak): 8 MiB made that peak 12 MiB
  // higher and left the training's VmHWM within 0.3 MB of this (docs/memory.md).
  constexpr size_t kBig = size_t(1) << 20, kSmall = size_t(4) << 10;
  void* m = ::mmap(nullptr, 2 * kBig, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  SP_CHECK(m != MAP_FAILED, "warm_up_transport: mmap of ", 2 * kBig, " bytes failed");
  char* send = static_cast<char*>(m);
  char* recv = send + kBig;
  std::memset(send, 1, kBig);
  MPI_Comm raw = c.raw();
  for (int k = 1; k < n; ++k) {
    const int dst = (r + k) % n, src = (r - k + n) % n;
    for (size_t bytes : {kSmall, kBig}) {
      const int rc = MPI_Sendrecv(send, int(bytes), MPI_BYTE, dst, 7401, recv, int(bytes), MPI_BYTE,
                                  src, 7401, raw, MPI_STATUS_IGNORE);
      SP_CHECK(rc == MPI_SUCCESS, "warm_up_transport: MPI_Sendrecv with rank ", dst, " failed");
    }
  }
  const int rc =
      MPI_Allreduce(MPI_IN_PLACE, send, int(kBig / sizeof(float)), MPI_FLOAT, MPI_SUM, raw);
  SP_CHECK(rc == MPI_SUCCESS, "warm_up_transport: MPI_Allreduce failed");
  ::munmap(m, 2 * kBig);
}

}  // namespace seqpar
