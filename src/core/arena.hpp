// Arena: every byte the engine uses for parameters, gradients, optimizer state,
// activations, communication buffers and scratch is allocated here and accounted per
// category (current and peak). In dry-run mode nothing is allocated or touched: the
// arena hands out distinct fake addresses and only counts, so the planner can run the
// exact allocation sequence of a training step for any shape and read the peak.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace seqpar {

// ckpt: the one bounded buffer checkpoints stream through (train/checkpoint_stream.hpp).
enum class Mem : int { params = 0, grads, optim, acts, comm, scratch, ckpt, count };
constexpr int kMemCategories = static_cast<int>(Mem::count);
const char* mem_name(Mem m);

class Arena {
 public:
  explicit Arena(bool dry_run = false) : dry_run_(dry_run) {}
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // 64-byte aligned, zero-filled (so gradient accumulators start at 0).
  void* alloc_bytes(Mem cat, size_t bytes, const char* what);
  float* alloc(Mem cat, size_t n_floats, const char* what) {
    return static_cast<float*>(alloc_bytes(cat, n_floats * sizeof(float), what));
  }
  void release(void* p);

  bool dry_run() const { return dry_run_; }
  // A flag a signal handler sets (SIGTERM, SIGINT). While it is 0 every allocation is
  // zeroed; once set, allocations skip their zeroing (done in 256 MiB pieces, checked
  // between them), so a stop during a set-up of many GiB takes effect within a piece,
  // and interrupted() says so: the contents are then undefined and the caller must stop.
  void set_interrupt(const volatile int* flag) { interrupt_ = flag; }
  bool interrupted() const { return interrupted_; }
  size_t current(Mem m) const { return current_[static_cast<int>(m)]; }
  size_t peak(Mem m) const { return peak_[static_cast<int>(m)]; }
  size_t total_current() const { return total_current_; }
  size_t total_peak() const { return total_peak_; }
  // Forget peaks (keep current): lets a caller measure the peak of one phase.
  void reset_peaks();

  // Bytes a library call will hold outside the arena while it runs (MPI's temporaries for
  // a collective: Comm::scratch_bytes), declared by the code that will make the call when
  // it sets up, in a dry run as in a real one. Nothing is allocated; the arena keeps the
  // largest declaration (calls in flight together are declared as one sum), which the
  // planner adds to the process's plan (train/planner.hpp).
  void note_outside(uint64_t bytes, const char* what);
  uint64_t outside_peak() const { return outside_peak_; }
  const std::string& outside_what() const { return outside_what_; }  // the largest's name

 private:
  struct Block {
    Mem cat;
    size_t bytes;
  };
  bool dry_run_;
  const volatile int* interrupt_ = nullptr;
  bool interrupted_ = false;
  uintptr_t next_fake_ = 0x1000;
  std::unordered_map<void*, Block> blocks_;
  std::array<size_t, kMemCategories> current_{};
  std::array<size_t, kMemCategories> peak_{};
  size_t total_current_ = 0;
  size_t total_peak_ = 0;
  uint64_t outside_peak_ = 0;
  std::string outside_what_;
};

// Owning handle for one arena block (RAII); moves, never copies.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Arena& arena, Mem cat, size_t n_floats, const char* what)
      : arena_(&arena), p_(arena.alloc(cat, n_floats, what)), n_(n_floats) {}
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept : arena_(o.arena_), p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      arena_ = o.arena_;
      p_ = o.p_;
      n_ = o.n_;
      o.p_ = nullptr;
      o.n_ = 0;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void reset() {
    if (p_ && arena_) arena_->release(p_);
    p_ = nullptr;
    n_ = 0;
  }
  float* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  Arena* arena_ = nullptr;
  float* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace seqpar
