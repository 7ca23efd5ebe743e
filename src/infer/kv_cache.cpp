#include "infer/kv_cache.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "comm/comm.hpp"
#include "core/check.hpp"
#include "kernels/attention.hpp"

namespace seqpar {

KvCache::KvCache(Arena& arena, int n_layer, int Hkv, int d, int64_t capacity)
    : cap_(capacity),
      row_(int64_t(Hkv) * d),
      k_(arena, Mem::acts, size_t(n_layer) * size_t(capacity) * size_t(Hkv) * size_t(d),
         "kv cache K"),
      v_(arena, Mem::acts, size_t(n_layer) * size_t(capacity) * size_t(Hkv) * size_t(d),
         "kv cache V"),
      // int64 positions as pairs of floats' bytes: from the arena like K and V, so a dry run
      // counts them and allocates nothing (a host vector here grew to gigabytes in the plan
      // of an oversized --max-new-tokens before its refusal).
      pos_(arena, Mem::acts, 2 * size_t(n_layer) * size_t(capacity), "kv cache positions"),
      n_(size_t(n_layer), 0) {
  SP_CHECK(capacity >= 1, "KV cache capacity must be >= 1, got ", capacity);
}

void KvCache::append(int layer, int64_t pos, const float* k, const float* v) {
  int64_t& n = n_[size_t(layer)];
  SP_CHECK(n < cap_, "KV cache of layer ", layer, " is full (", cap_, " tokens)");
  const int64_t at = int64_t(layer) * cap_ + n;
  std::memcpy(k_.data() + at * row_, k, sizeof(float) * size_t(row_));
  std::memcpy(v_.data() + at * row_, v, sizeof(float) * size_t(row_));
  positions()[at] = pos;
  ++n;
}

namespace {

class PrefillAttention final : public AttentionStrategy {
 public:
  PrefillAttention(std::unique_ptr<AttentionStrategy> inner, KvCache& cache)
      : inner_(std::move(inner)), cache_(cache) {}
  const char* name() const override { return inner_->name(); }
  void forward(const AttnShard& s, float* o, float* lse) override {
    SP_CHECK(s.B == 1, "prefill runs one sequence, got B = ", s.B);
    const int64_t d = s.d, W = int64_t(s.H + 2 * s.Hkv) * d;
    for (int t = 0; t < s.T; ++t) {
      const float* row = s.qkv + t * W;
      cache_.append(int(s.layer), s.pos[t], row + s.H * d, row + (s.H + s.Hkv) * d);
    }
    inner_->forward(s, o, lse);
  }
  void backward(const AttnShard&, const float*, const float*, const float*, float*) override {
    SP_FAIL("the prefill strategy has no backward pass");
  }
  uint64_t bytes_forward(const AttnShard& s) const override { return inner_->bytes_forward(s); }
  uint64_t bytes_backward(const AttnShard&) const override { return 0; }

 private:
  std::unique_ptr<AttentionStrategy> inner_;
  KvCache& cache_;
};

class DecodeAttention final : public AttentionStrategy {
 public:
  DecodeAttention(Arena& arena, KvCache& cache, Comm* sp, int H, int d)
      : cache_(cache),
        sp_(sp),
        n_(sp ? sp->size() : 1),
        scratch_floats_(attention_scratch_floats(d, 0)),
        scratch_(arena, Mem::scratch, size_t(scratch_floats_), "decode attention scratch"),
        // (H·d partial output + H lse) for each of the n ranks, then this rank's own.
        part_(arena, Mem::comm, size_t(n_ + 1) * size_t(H) * size_t(d + 1), "decode partials") {}
  const char* name() const override { return "decode"; }

  void forward(const AttnShard& s, float* o, float* lse) override {
    SP_CHECK(s.B == 1 && s.T == 1, "decode attends one token, got (B, T) = (", s.B, ", ", s.T, ")");
    const int H = s.H, Hkv = s.Hkv, d = s.d, l = int(s.layer);
    const int64_t W = int64_t(H + 2 * Hkv) * d, P = int64_t(H) * (d + 1), p = s.pos[0];
    const float* q = s.qkv;
    // The new token's K, V live on sp rank p mod N: the cache grows evenly over the ranks.
    if (p % n_ == (sp_ ? sp_->rank() : 0)) cache_.append(l, p, q + H * d, q + (H + Hkv) * d);
    float* mine = part_.data() + int64_t(n_) * P;  // [o (H·d) | lse (H)]
    const int64_t nk = cache_.size(l);
    if (nk == 0) {
      std::fill(mine, mine + int64_t(H) * d, 0.0f);
      std::fill(mine + int64_t(H) * d, mine + P, -std::numeric_limits<float>::infinity());
    } else {
      AttnParams a;
      a.q = q;
      a.k = cache_.k(l);
      a.v = cache_.v(l);
      a.o = mine;
      a.lse = mine + int64_t(H) * d;
      a.q_stride = a.q_bstride = W;
      a.kv_stride = cache_.row();
      a.kv_bstride = cache_.row() * cache_.capacity();
      a.o_stride = a.o_bstride = int64_t(H) * d;
      a.q_pos = &p;
      a.k_pos = cache_.pos(l);
      a.B = 1;
      a.Tq = 1;
      a.Tk = int(nk);
      a.H = H;
      a.Hkv = Hkv;
      a.d = d;
      a.causal = true;  // every cached key precedes or is the query
      a.scratch = scratch_.data();
      a.scratch_floats = scratch_floats_;
      attention_forward(a);
    }
    if (n_ == 1) {
      std::memcpy(o, mine, sizeof(float) * size_t(H) * size_t(d));
      std::memcpy(lse, mine + int64_t(H) * d, sizeof(float) * size_t(H));
      return;
    }
    float* all = part_.data();
    sp_->allgather(mine, all, size_t(P));
    // The log-sum-exp merge of the N partials, in rank order on every rank.
    for (int h = 0; h < H; ++h) {
      float M = -std::numeric_limits<float>::infinity();
      for (int r = 0; r < n_; ++r) M = std::max(M, all[r * P + int64_t(H) * d + h]);
      float* oh = o + int64_t(h) * d;
      std::fill(oh, oh + d, 0.0f);
      if (M == -std::numeric_limits<float>::infinity()) {
        lse[h] = M;
        continue;
      }
      double wsum = 0.0;
      for (int r = 0; r < n_; ++r) {
        const float lr = all[r * P + int64_t(H) * d + h];
        if (lr == -std::numeric_limits<float>::infinity()) continue;
        const double w = std::exp(double(lr) - M);
        wsum += w;
        const float* orh = all + r * P + int64_t(h) * d;
        for (int c = 0; c < d; ++c) oh[c] += float(w) * orh[c];
      }
      for (int c = 0; c < d; ++c) oh[c] = float(oh[c] / wsum);
      lse[h] = float(M + std::log(wsum));
    }
  }
  void backward(const AttnShard&, const float*, const float*, const float*, float*) override {
    SP_FAIL("the decode strategy has no backward pass");
  }
  // One all-gather of H·(d + 1) floats: (N − 1)·H·(d + 1)·4 bytes.
  uint64_t bytes_forward(const AttnShard& s) const override {
    return uint64_t(n_ - 1) * uint64_t(s.H) * uint64_t(s.d + 1) * sizeof(float);
  }
  uint64_t bytes_backward(const AttnShard&) const override { return 0; }

 private:
  KvCache& cache_;
  Comm* sp_;
  int n_;
  int64_t scratch_floats_;
  Buffer scratch_, part_;
};

}  // namespace

std::unique_ptr<AttentionStrategy> make_prefill_attention(std::unique_ptr<AttentionStrategy> inner,
                                                          KvCache& cache) {
  return std::make_unique<PrefillAttention>(std::move(inner), cache);
}

std::unique_ptr<AttentionStrategy> make_decode_attention(Arena& arena, KvCache& cache, Comm* sp,
                                                         int H, int Hkv, int d) {
  (void)Hkv;
  return std::make_unique<DecodeAttention>(arena, cache, sp, H, d);
}

}  // namespace seqpar
