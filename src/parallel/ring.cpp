// `ring`: Ring Attention with online softmax (ring core in parallel/ring.hpp; algorithm,
// byte formulas and memory in docs/strategies/ring.md).
//
// Overlap. MPI in this build has no progress thread, so a non-blocking transfer advances
// only inside MPI calls. Each block's computation is therefore cut into several kernel
// calls and MPI_Testall runs over every outstanding request between them:
//  * forward: key sub-ranges of the block (multiples of the kernel's 128-key tile); each
//    call merges into (O, LSE) by LSE, which is exact for any split of the key set, and
//    keeps the kernel's (b, h, query chunk) parallelism intact;
//  * backward: query sub-ranges (multiples of the kernel's 64-row tile), which keep the
//    kernel's (b, kv head, key block) parallelism intact; dK, dV and dQ accumulate (+=),
//    so any split is exact. The kernel wants LSE and Δ as (B, H, Tq_piece) arrays, so they
//    are regrouped piece by piece once per backward call (B·H·Tq floats each).
// About kPieces calls per block: enough polls for the shared-memory and TCP transports to
// move a block in fragments, few enough that the per-call cost stays negligible.
#include "parallel/ring.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "core/threads.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
namespace {

constexpr int kTagKv = 7301;       // K|V blocks
constexpr int kTagDkv = 7302;      // dK|dV accumulators, onward with their block
constexpr int kTagDkvHome = 7303;  // dK|dV accumulators going home
constexpr int kPieces = 8;         // target kernel calls (and MPI polls) per block
constexpr int kKeyUnit = 128;      // forward pieces: multiple of the kernel's key tile (Bk)
constexpr int kRowUnit = 64;       // backward pieces: multiple of the kernel's query tile (Bq)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Length of the pieces a range of n rows is cut into: about n/kPieces, rounded up to a
// multiple of unit (so the kernel sees no ragged tiles but the last), at least unit.
int piece_len(int n, int unit) {
  const int per = (n + kPieces - 1) / kPieces;
  return std::max(unit, (per + unit - 1) / unit * unit);
}

int64_t min_of(const int64_t* p, int n) {
  int64_t m = std::numeric_limits<int64_t>::max();
  for (int i = 0; i < n; ++i) m = std::min(m, p[i]);
  return m;
}
int64_t max_of(const int64_t* p, int n) {
  int64_t m = std::numeric_limits<int64_t>::min();
  for (int i = 0; i < n; ++i) m = std::max(m, p[i]);
  return m;
}

// The non-blocking transfers of one call, in fixed slots: MPI_Testall is all-or-nothing
// (it changes no handle unless all completed), so polling every slot and waiting on one
// slot see the same handles. Null slots complete at once. Every path that returns
// normally has waited on every slot; when an exception unwinds the call, the destructor
// cancels what is still pending, so nothing lands later in freed workspace buffers.
class InFlight {
 public:
  enum Slot { kv_send, kv_recv, dkv_send, dkv_send2, dkv_recv, dkv_home, n_slots };
  explicit InFlight(Comm* comm) : comm_(comm), reqs_(n_slots) {}
  ~InFlight() {
    if (comm_) comm_->cancel_all(reqs_);
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
  Comm::Request& operator[](Slot s) { return reqs_[s]; }
  void poll() {
    if (comm_) comm_->test_all(reqs_);
  }
  void wait(Slot s) {
    if (comm_) comm_->wait(reqs_[s]);
  }

 private:
  Comm* comm_;
  std::vector<Comm::Request> reqs_;
};

// Checks shared by forward and backward, all before any transfer is posted.
int check_ring(Comm* comm, const AttnParams& p, const std::vector<std::vector<int64_t>>& kv_pos,
               const RingWorkspace& ws, const char* who) {
  const int N = static_cast<int>(kv_pos.size());
  SP_CHECK(N >= 1, who, ": kv_pos is empty; it needs the key positions of every ring rank");
  SP_CHECK(comm != nullptr || N == 1, who, ": no communicator but ", N,
           " ring ranks of key positions");
  SP_CHECK(comm == nullptr || comm->size() == N, who, ": communicator '", comm->name(), "' has ",
           comm->size(), " ranks but kv_pos has key positions for ", N);
  SP_CHECK(p.B == ws.B && p.Tq <= ws.Tq && p.Tk <= ws.Tk && p.H == ws.H && p.Hkv == ws.Hkv &&
               p.d == ws.d,
           who, ": call has B=", p.B, " Tq=", p.Tq, " Tk=", p.Tk, " H=", p.H, " Hkv=", p.Hkv,
           " d=", p.d, " but the ring workspace was built for B=", ws.B, " Tq=", ws.Tq,
           " Tk=", ws.Tk, " H=", ws.H, " Hkv=", ws.Hkv, " d=", ws.d);
  SP_CHECK(p.H % p.Hkv == 0, who, ": H=", p.H, " not divisible by Hkv=", p.Hkv);
  for (int j = 0; j < N; ++j)
    SP_CHECK(static_cast<int64_t>(kv_pos[j].size()) <= ws.Tk && !kv_pos[j].empty(), who,
             ": ring rank ", j, " has ", kv_pos[j].size(),
             " key positions, expected 1 to the workspace's Tk=", ws.Tk);
  const int r = comm ? comm->rank() : 0;
  SP_CHECK(static_cast<int64_t>(kv_pos[r].size()) == p.Tk, who, ": this rank's block has Tk=", p.Tk,
           " keys but kv_pos gives it ", kv_pos[r].size());
  SP_CHECK(p.q && p.k && p.v && p.o && p.lse && p.q_pos, who,
           ": q, k, v, o, lse and q_pos must all be set");
  SP_CHECK(p.q_stride >= int64_t{p.H} * p.d && p.kv_stride >= int64_t{p.Hkv} * p.d &&
               p.o_stride >= int64_t{p.H} * p.d,
           who, ": strides q=", p.q_stride, " kv=", p.kv_stride, " o=", p.o_stride,
           " smaller than a token's heads (H·d=", p.H * p.d, ", Hkv·d=", p.Hkv * p.d, ")");
  return N;
}

// dst (B, Tk, 2·Hkv·d) = [K | V] of this rank's block, token by token, in the workspace's
// block type (bf16: rounded, which is exact for K, V that come from bf16 storage).
void pack_kv(RingWorkspace& ws, const AttnParams& p) {
  const int64_t kvd = int64_t{p.Hkv} * p.d, rows = int64_t{p.B} * p.Tk;
  float* dst = ws.kv[0].data();
  bf16* dst16 = reinterpret_cast<bf16*>(dst);
#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (int64_t u = 0; u < rows; ++u) {
    const int64_t b = u / p.Tk, t = u % p.Tk, src = b * p.kv_bstride + t * p.kv_stride;
    if (ws.kv_bf16) {
      to_bf16(dst16 + u * 2 * kvd, p.k + src, kvd);
      to_bf16(dst16 + u * 2 * kvd + kvd, p.v + src, kvd);
    } else {
      std::memcpy(dst + u * 2 * kvd, p.k + src, kvd * sizeof(float));
      std::memcpy(dst + u * 2 * kvd + kvd, p.v + src, kvd * sizeof(float));
    }
  }
}

void fill_zero(float* x, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
}

void add_into(float* dst, const float* src, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

// The kernel's view of the packed K|V block at kv (B, Tk, 2·Hkv·d), Tk keys per row, fp32
// or bf16 (k16 / v16).
void point_at_block(AttnParams& q, const float* kv, int Tk, bool bf) {
  const int64_t kvd = int64_t{q.Hkv} * q.d;
  if (bf) {
    q.k = q.v = nullptr;
    q.k16 = reinterpret_cast<const bf16*>(kv);
    q.v16 = q.k16 + kvd;
  } else {
    q.k16 = q.v16 = nullptr;
    q.k = kv;
    q.v = kv + kvd;
  }
  q.kv_stride = 2 * kvd;
  q.kv_bstride = 2 * kvd * Tk;
  q.Tk = Tk;
}

// Moves the kernel's key/value view j0 keys on.
void skip_keys(AttnParams& q, int j0) {
  if (q.k16) {
    q.k16 += j0 * q.kv_stride;
    q.v16 += j0 * q.kv_stride;
  } else {
    q.k += j0 * q.kv_stride;
    q.v += j0 * q.kv_stride;
  }
}

}  // namespace

int64_t ring_comm_floats(int B, int Tk, int Hkv, int d, Precision kv) {
  return (kv == Precision::bf16 ? 5 : 6) * int64_t{B} * Tk * 2 * Hkv * d;
}

RingWorkspace::RingWorkspace(Arena& arena, int B_, int Tq_, int Tk_, int H_, int Hkv_, int d_,
                             Precision kvp)
    : B(B_), Tq(Tq_), Tk(Tk_), H(H_), Hkv(Hkv_), d(d_), kv_bf16(kvp == Precision::bf16) {
  SP_CHECK(B > 0 && Tq > 0 && Tk > 0 && H > 0 && Hkv > 0 && d > 0,
           "ring workspace: need positive B, Tq, Tk, H, Hkv, d, got B=", B, " Tq=", Tq, " Tk=", Tk,
           " H=", H, " Hkv=", Hkv, " d=", d);
  const size_t blk = size_t(B) * Tk * 2 * Hkv * d;
  // bf16: blk is even (2·Hkv·d per token), so a block is exactly blk/2 floats.
  for (auto& b : kv) b = Buffer(arena, Mem::comm, kv_bf16 ? blk / 2 : blk, "ring kv block");
  for (auto& b : dkv) b = Buffer(arena, Mem::comm, blk, "ring dkv block");
  home = Buffer(arena, Mem::comm, blk, "ring dkv home");
  lse_p = Buffer(arena, Mem::scratch, size_t(B) * H * Tq, "ring lse pieces");
  delta_p = Buffer(arena, Mem::scratch, size_t(B) * H * Tq, "ring delta");
  scratch = Buffer(arena, Mem::scratch, attention_scratch_floats(d, num_threads()), "attn scratch");
}

RingSchedule ring_schedule(const SeqMask* mask, bool causal, int B,
                           const std::vector<std::vector<int64_t>>& kv_pos) {
  RingSchedule sc;
  const int N = static_cast<int>(kv_pos.size());
  sc.N = N;
  sc.need.assign(size_t(N) * N, 1);
  sc.last.assign(N, N - 1);
  sc.steps = N;
  if (N == 1) return sc;
  if (!causal && (mask == nullptr || mask->trivial())) return sc;  // everything everywhere
  std::vector<std::vector<int64_t>> sorted = kv_pos;
  for (auto& v : sorted) std::sort(v.begin(), v.end());
  for (int r = 0; r < N; ++r)
    for (int src = 0; src < N; ++src)
      sc.need[size_t(r) * N + src] =
          any_key_visible(mask, causal, B, kv_pos[r].data(), int(kv_pos[r].size()),
                          sorted[src].data(), int64_t(sorted[src].size()));
  sc.steps = 1;
  for (int src = 0; src < N; ++src) {
    int last = 0;
    for (int k = 1; k < N; ++k)
      if (sc.needs((src + k) % N, src)) last = k;
    sc.last[src] = last;
    sc.steps = std::max(sc.steps, last + 1);
  }
  return sc;
}

uint64_t ring_bytes_forward(const RingSchedule& sc, int r, const std::vector<uint64_t>& block) {
  uint64_t n = 0;
  for (int k = 0; k + 1 < sc.steps; ++k) {
    const int src = ((r - k) % sc.N + sc.N) % sc.N;
    if (sc.moves(src, k)) n += block[src];
  }
  return n;
}

uint64_t ring_bytes_backward(const RingSchedule& sc, int r, const std::vector<uint64_t>& block,
                             const std::vector<uint64_t>& acc) {
  const std::vector<uint64_t>& a = acc.empty() ? block : acc;
  uint64_t n = 0;
  for (int k = 1; k < sc.N; ++k) {
    const int src = ((r - k) % sc.N + sc.N) % sc.N;
    if (sc.last[src] >= k) n += a[src];
  }
  return ring_bytes_forward(sc, r, block) + n;
}

namespace {

// Refreshes ws.schedule when the mask, causality or shape changed since the last call
// (key: FNV-1a over everything the schedule depends on).
const RingSchedule& schedule_for(RingWorkspace& ws, const SeqMask* mask, bool causal, int B,
                                 const std::vector<std::vector<int64_t>>& kv_pos) {
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t x) { h = (h ^ x) * 1099511628211ull; };
  mix(causal), mix(uint64_t(B)), mix(kv_pos.size());
  for (const auto& v : kv_pos) {
    mix(v.size());
    if (!v.empty()) mix(uint64_t(v.front())), mix(uint64_t(v.back()));
  }
  if (mask && !mask->trivial()) {
    mix(uint64_t(mask->window)), mix(uint64_t(mask->L));
    for (const auto& row : mask->doc_starts) {
      mix(row.size());
      for (int64_t x : row) mix(uint64_t(x));
    }
  }
  if (h != ws.schedule_key || ws.schedule.N != int(kv_pos.size())) {
    ws.schedule = ring_schedule(mask, causal, B, kv_pos);
    ws.schedule_key = h;
  }
  return ws.schedule;
}

}  // namespace

void ring_attention_forward(Comm* comm, const AttnParams& p_in,
                            const std::vector<std::vector<int64_t>>& kv_pos, RingWorkspace& ws,
                            const SeqMask* mask) {
  const int N = check_ring(comm, p_in, kv_pos, ws, "ring_attention_forward");
  const int r = comm ? comm->rank() : 0;
  const bool move = N > 1 && !ws.skip_comm;
  // Floats of block j as it travels (shards may differ in length by a unit of the layout;
  // bf16 blocks: two elements per float).
  auto blk = [&](int j) {
    return size_t(p_in.B) * kv_pos[j].size() * 2 * p_in.Hkv * p_in.d / (ws.kv_bf16 ? 2 : 1);
  };
  const RingSchedule& sc = schedule_for(ws, mask, p_in.causal, p_in.B, kv_pos);
  auto owner = [N, r](int k) { return ((r - k) % N + N) % N; };

  pack_kv(ws, p_in);
  // (O, LSE) start as "no key seen" (0, −∞) so every block, the first included, merges
  // with accumulate = true and any block can be skipped.
  const int64_t hd = int64_t{p_in.H} * p_in.d;
  for (int b = 0; b < p_in.B; ++b)
    for (int t = 0; t < p_in.Tq; ++t)
      std::fill_n(p_in.o + b * p_in.o_bstride + t * p_in.o_stride, hd, 0.0f);
  std::fill_n(p_in.lse, int64_t{p_in.B} * p_in.H * p_in.Tq, kNegInf);

  AttnParams p = p_in;
  p.scratch = ws.scratch.data();
  p.scratch_floats = static_cast<int64_t>(ws.scratch.size());
  ws.bounds.build(mask, p.q_pos, p.B, p.Tq, p.causal);
  ws.bounds.apply(p);

  InFlight io(move ? comm : nullptr);
  int cur = 0;
  for (int k = 0; k < sc.steps; ++k) {
    const int src = owner(k);
    SP_CHECK(move || kv_pos[src].size() == size_t(p.Tk),
             "ring: skip_comm needs blocks of equal length");
    const float* block = ws.kv[cur].data();
    if (move && k + 1 < sc.steps) {  // the block of step k+1 travels while this one computes
      if (sc.moves(src, k))
        io[InFlight::kv_send] = comm->isend(block, blk(src), (r + 1) % N, kTagKv);
      if (sc.moves(owner(k + 1), k))
        io[InFlight::kv_recv] =
            comm->irecv(ws.kv[1 - cur].data(), blk(owner(k + 1)), (r + N - 1) % N, kTagKv);
    }
    const int64_t* kpos = kv_pos[src].data();
    const int Tk = int(kv_pos[src].size()), piece = piece_len(Tk, kKeyUnit);
    if (sc.needs(r, src) || !move)
      for (int j0 = 0; j0 < Tk; j0 += piece) {
        const int len = std::min(piece, Tk - j0);
        // no query sees any key of the piece (causality, documents, window): skip it
        if (!attention_any_visible(p, min_of(kpos + j0, len), max_of(kpos + j0, len))) continue;
        AttnParams q = p;
        point_at_block(q, block, Tk, ws.kv_bf16);
        skip_keys(q, j0);
        q.k_pos = kpos + j0;
        q.Tk = len;
        attention_forward(q, true);
        io.poll();
      }
    io.wait(InFlight::kv_send);
    io.wait(InFlight::kv_recv);
    if (move) cur = 1 - cur;
  }
}

void ring_attention_backward(Comm* comm, const AttnBwdParams& p_in,
                             const std::vector<std::vector<int64_t>>& kv_pos, RingWorkspace& ws,
                             const SeqMask* mask) {
  const int N = check_ring(comm, p_in, kv_pos, ws, "ring_attention_backward");
  SP_CHECK(p_in.dout && p_in.dq && p_in.dk && p_in.dv,
           "ring_attention_backward: dout, dq, dk and dv must all be set");
  const int r = comm ? comm->rank() : 0;
  const bool move = N > 1 && !ws.skip_comm;
  const int B = p_in.B, H = p_in.H, Tq = p_in.Tq, Tk = p_in.Tk;
  const int64_t kvd = int64_t{p_in.Hkv} * p_in.d, W2 = 2 * kvd;
  auto blk = [&](int j) { return size_t(B) * kv_pos[j].size() * W2; };  // floats of block j
  // Floats of K|V block j as it travels (bf16: half); accumulators are fp32 (blk).
  auto kv_blk = [&](int j) { return blk(j) / (ws.kv_bf16 ? 2 : 1); };
  const RingSchedule& sc = schedule_for(ws, mask, p_in.causal, B, kv_pos);
  auto owner = [N, r](int k) { return ((r - k) % N + N) % N; };

  pack_kv(ws, p_in);

  // Query pieces; LSE and Δ of piece [i0, i0 + len) live at offset B·H·i0 as (B, H, len).
  const int piece = piece_len(Tq, kRowUnit);
  float* lse_p = ws.lse_p.data();
  float* delta_p = ws.delta_p.data();
  for (int i0 = 0; i0 < Tq; i0 += piece) {
    const int len = std::min(piece, Tq - i0);
    const int64_t off = int64_t{B} * H * i0;
    for (int64_t bh = 0; bh < int64_t{B} * H; ++bh)
      std::copy_n(p_in.lse + bh * Tq + i0, len, lse_p + off + bh * len);
    AttnParams v = p_in;  // Δ = rowsum(dO∘O) of this piece's rows
    v.o += i0 * v.o_stride;
    v.Tq = len;
    attention_delta(delta_p + off, p_in.dout + i0 * p_in.o_stride, v);
  }

  AttnBwdParams p = p_in;
  p.scratch = ws.scratch.data();
  p.scratch_floats = static_cast<int64_t>(ws.scratch.size());
  ws.bounds.build(mask, p.q_pos, B, Tq, p.causal);

  // Two send slots for the accumulators: buffer dkv[k % 2] is reused at step k + 2, after
  // its send (slot k % 2) has completed; the other one overlaps the next step.
  InFlight io(move ? comm : nullptr);
  const int next = (r + 1) % N, prev = (r + N - 1) % N;
  if (move && sc.last[r] >= 1)  // our own block's accumulator comes home from its last user
    io[InFlight::dkv_home] = comm->irecv(ws.home.data(), blk(r), (r + sc.last[r]) % N, kTagDkvHome);
  int cur = 0;
  for (int k = 0; k < sc.steps; ++k) {
    const int src = owner(k);
    SP_CHECK(move || kv_pos[src].size() == size_t(Tk),
             "ring: skip_comm needs blocks of equal length");
    const int Tks = int(kv_pos[src].size());  // keys of the block at this step
    const float* block = ws.kv[cur].data();
    float* loc = ws.dkv[k % 2].data();
    float* in = ws.dkv[2].data();
    const InFlight::Slot send_slot = k % 2 ? InFlight::dkv_send : InFlight::dkv_send2;
    if (move) {
      if (k + 1 < sc.steps) {
        if (sc.moves(src, k)) io[InFlight::kv_send] = comm->isend(block, kv_blk(src), next, kTagKv);
        if (sc.moves(owner(k + 1), k))
          io[InFlight::kv_recv] =
              comm->irecv(ws.kv[1 - cur].data(), kv_blk(owner(k + 1)), prev, kTagKv);
      }
      // the accumulator rank r−1 built for this block over steps 1..k−1
      if (k >= 2 && sc.last[src] >= k)
        io[InFlight::dkv_recv] = comm->irecv(in, blk(src), prev, kTagDkv);
    }
    const bool carries = move && k >= 1 && sc.last[src] >= k;  // an accumulator passes here
    AttnBwdParams q0 = p;
    point_at_block(q0, block, Tks, ws.kv_bf16);
    q0.k_pos = kv_pos[src].data();
    if (k > 0) {           // a visiting block: contributions go to the travelling accumulator
      io.wait(send_slot);  // loc's previous send (step k − 2) has left
      if (carries || !move) fill_zero(loc, static_cast<int64_t>(blk(src)));
      q0.dk = loc;
      q0.dv = loc + kvd;
      q0.dkv_stride = W2;
      q0.dkv_bstride = W2 * Tks;
    }  // k = 0: our own block, straight into the caller's dk, dv
    const int64_t kmin = min_of(q0.k_pos, Tks), kmax = max_of(q0.k_pos, Tks);
    if ((k == 0 || carries || !move) && sc.needs(r, src))
      for (int i0 = 0; i0 < Tq; i0 += piece) {
        const int len = std::min(piece, Tq - i0);
        const int64_t off = int64_t{B} * H * i0;
        AttnBwdParams q = q0;
        q.q += i0 * q.q_stride;
        q.q_pos += i0;
        q.o += i0 * q.o_stride;
        q.dout += i0 * q.o_stride;
        q.dq += i0 * q.dq_stride;
        q.lse = lse_p + off;
        q.delta = delta_p + off;
        q.Tq = len;
        ws.bounds.apply(q, i0);
        if (!attention_any_visible(q, kmin, kmax)) continue;  // every key hidden from the piece
        attention_backward(q);
        io.poll();
      }
    if (carries) {
      if (k >= 2) {
        io.wait(InFlight::dkv_recv);
        add_into(loc, in, static_cast<int64_t>(blk(src)));
      }
      if (k < sc.last[src])  // onward with the block, or home after its last user
        io[send_slot] = comm->isend(loc, blk(src), next, kTagDkv);
      else
        io[send_slot] = comm->isend(loc, blk(src), src, kTagDkvHome);
    }
    io.wait(InFlight::kv_send);
    io.wait(InFlight::kv_recv);
    if (move && k + 1 < sc.steps) cur = 1 - cur;
  }
  io.wait(InFlight::dkv_send);
  io.wait(InFlight::dkv_send2);
  if (!move || sc.last[r] == 0) return;
  io.wait(InFlight::dkv_home);
  const float* home = ws.home.data();
  // dK, dV of our own block += what the other ranks' queries contributed.
  const int64_t rows = int64_t{B} * Tk;
#pragma omp parallel for schedule(static) num_threads(num_threads())
  for (int64_t u = 0; u < rows; ++u) {
    const int64_t b = u / Tk, t = u % Tk, dst = b * p.dkv_bstride + t * p.dkv_stride;
    const float* g = home + u * W2;
    for (int64_t c = 0; c < kvd; ++c) p.dk[dst + c] += g[c];
    for (int64_t c = 0; c < kvd; ++c) p.dv[dst + c] += g[kvd + c];
  }
}

namespace {

// The `ring` strategy: the ring core over the whole sp group, this rank's QKV shard in
// place (K and V packed into the comm buffer), key positions of every rank from the layout.
class RingAttention final : public AttentionStrategy {
 public:
  RingAttention(Arena& arena, const SpSetup& sp, int64_t L, int B, int T, int H, int Hkv, int d)
      : comm_(sp.comm && sp.comm->size() > 1 ? sp.comm : nullptr),
        N_(sp.sp_size()),
        r_(sp.sp_rank()),
        L_(L),
        ws_(arena, B, T, int(max_shard_len(L, N_, sp.layout)), H, Hkv, d, sp.precision) {
    for (int j = 0; j < N_; ++j) kv_pos_.push_back(shard_positions(L_, N_, j, sp.layout));
  }

  const char* name() const override { return "ring"; }
  // Bytes follow the hop schedule of the shard's mask (parallel/ring.hpp).
  uint64_t bytes_forward(const AttnShard& s) const override {
    return ring_bytes_forward(ring_schedule(s.mask, s.causal, s.B, kv_pos_), r_, block_bytes(s));
  }
  uint64_t bytes_backward(const AttnShard& s) const override {
    return ring_bytes_backward(ring_schedule(s.mask, s.causal, s.B, kv_pos_), r_, block_bytes(s),
                               block_bytes(s, 4));
  }

  void forward(const AttnShard& s, float* o, float* lse) override {
    agree_on_shard(comm_, "ring", [&] { check_shard(s); });
    ring_attention_forward(comm_, params(s, o, lse), kv_pos_, ws_, s.mask);
  }

  void backward(const AttnShard& s, const float* o, const float* lse, const float* dout,
                float* dqkv) override {
    agree_on_shard(comm_, "ring", [&] { check_shard(s); });
    AttnBwdParams p = shard_self_bwd_params(s, o, lse, dout, dqkv);
    ring_attention_backward(comm_, p, kv_pos_, ws_, s.mask);
  }

 private:
  // Bytes of each rank's packed K|V block (shards may differ by a unit of the layout), at
  // e bytes an element (0: the blocks' own type).
  std::vector<uint64_t> block_bytes(const AttnShard& s, int e = 0) const {
    if (e == 0) e = ws_.kv_bf16 ? 2 : 4;
    std::vector<uint64_t> b;
    for (const auto& kp : kv_pos_) b.push_back(uint64_t(s.B) * kp.size() * 2 * s.Hkv * s.d * e);
    return b;
  }

  // The shard must be the one the strategy was built for: same shape, same positions.
  void check_shard(const AttnShard& s) const {
    SP_CHECK(s.B == ws_.B && s.T == ws_.Tq && s.H == ws_.H && s.Hkv == ws_.Hkv && s.d == ws_.d,
             "ring: shard has B=", s.B, " T=", s.T, " H=", s.H, " Hkv=", s.Hkv, " d=", s.d,
             " but the strategy was built for B=", ws_.B, " T=", ws_.Tq, " H=", ws_.H,
             " Hkv=", ws_.Hkv, " d=", ws_.d);
    SP_CHECK(s.L == L_, "ring: shard says L=", s.L, " but the sp group was set up for L=", L_);
    SP_CHECK(s.pos != nullptr, "ring: shard positions are null");
    const std::vector<int64_t>& mine = kv_pos_[r_];
    for (int t = 0; t < s.T; ++t)
      SP_CHECK(s.pos[t] == mine[t], "ring: token ", t, " of rank ", r_, " has position ", s.pos[t],
               " but the layout gives ", mine[t],
               "; the data loader and the sp setup disagree on the layout");
  }

  // Every sp rank runs every head of this tp rank: the shard's own parameters.
  AttnParams params(const AttnShard& s, float* o, float* lse) const {
    return shard_self_params(s, o, lse);
  }

  Comm* comm_;  // null when N = 1
  int N_, r_;
  int64_t L_;
  std::vector<std::vector<int64_t>> kv_pos_;  // (N)(T) positions of each rank's tokens
  RingWorkspace ws_;
};

}  // namespace

SEQPAR_STRATEGY_FACTORY(make_ring_attention) {
  const int64_t L = checked_sequence_length("ring", sp, T);
  SP_CHECK(H % Hkv == 0, "ring: H=", H, " query heads not divisible by Hkv=", Hkv,
           " key/value heads");
  return std::make_unique<RingAttention>(arena, sp, L, B, T, H, Hkv, d);
}

}  // namespace seqpar
