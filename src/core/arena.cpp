#include "core/arena.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/check.hpp"

namespace seqpar {

const char* mem_name(Mem m) {
  switch (m) {
    case Mem::params:
      return "params";
    case Mem::grads:
      return "grads";
    case Mem::optim:
      return "optim";
    case Mem::acts:
      return "acts";
    case Mem::comm:
      return "comm";
    case Mem::scratch:
      return "scratch";
    case Mem::ckpt:
      return "ckpt";
    default:
      return "?";
  }
}

Arena::~Arena() {
  if (!dry_run_)
    for (auto& [p, b] : blocks_) std::free(p);
}

void* Arena::alloc_bytes(Mem cat, size_t bytes, const char* what) {
  SP_CHECK(cat != Mem::count, "bad arena category for ", what);
  constexpr size_t kAlign = 64;
  size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
  if (rounded == 0) rounded = kAlign;
  void* p;
  if (dry_run_) {
    p = reinterpret_cast<void*>(next_fake_);
    next_fake_ += rounded;
  } else {
    p = std::aligned_alloc(kAlign, rounded);
    SP_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes for ", what, " (",
             mem_name(cat), "; arena holds ", total_current_, " bytes)");
    constexpr size_t kPiece = size_t(256) << 20;  // zeroing between interrupt checks
    for (size_t off = 0; off < rounded && !interrupted_; off += kPiece) {
      if (interrupt_ && *interrupt_ != 0) {
        interrupted_ = true;
        break;
      }
      std::memset(static_cast<char*>(p) + off, 0, std::min(kPiece, rounded - off));
    }
  }
  blocks_.emplace(p, Block{cat, bytes});
  int c = static_cast<int>(cat);
  current_[c] += bytes;
  total_current_ += bytes;
  if (current_[c] > peak_[c]) peak_[c] = current_[c];
  if (total_current_ > total_peak_) total_peak_ = total_current_;
  return p;
}

void Arena::release(void* p) {
  if (!p) return;
  auto it = blocks_.find(p);
  SP_CHECK(it != blocks_.end(), "arena release of a pointer it does not own");
  int c = static_cast<int>(it->second.cat);
  current_[c] -= it->second.bytes;
  total_current_ -= it->second.bytes;
  if (!dry_run_) std::free(p);
  blocks_.erase(it);
}

void Arena::note_outside(uint64_t bytes, const char* what) {
  if (bytes <= outside_peak_) return;
  outside_peak_ = bytes;
  outside_what_ = what;
}

void Arena::reset_peaks() {
  peak_ = current_;
  total_peak_ = total_current_;
}

}  // namespace seqpar
