// Generation from a checkpoint with a KV cache and a sequence-parallel prefill.
//
// The world is a tp × sp mesh (no data parallelism). The prompt p[0..n) is processed in
// two parts:
//  * prefill: p[0..n−1) runs through the model once, sharded over the sp ranks by the
//    training layout and attended by the training strategy (ring, ulysses, allgather,
//    ...); every rank keeps the K, V of its shard in its KV cache (infer/kv_cache.hpp).
//    It runs when n − 1 ≥ sp; a shorter prompt is fed token by token instead.
//  * decode: from p[n−1] on, one token at a time through the same weights (B = T = 1, the
//    same row on every sp rank), each layer's attention merged over the ranks' caches by
//    LSE. The logits of the last token give the next one.
// Every rank computes the same logits (same merge order); world rank 0 samples and
// broadcasts, so all ranks feed the same token.
// Greedy decoding (temperature 0) is the argmax, the smallest id among ties: on one rank
// and under any sp, strategy or tp it gives the same tokens unless two logits are closer
// than the float rounding of the reductions (tests/mpi/test_generate.cpp).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "comm/comm.hpp"
#include "core/arena.hpp"
#include "infer/kv_cache.hpp"
#include "model/model.hpp"
#include "parallel/layout.hpp"
#include "parallel/mesh.hpp"

namespace seqpar {

struct GenerateMesh {
  int sp = 1, tp = 1;
  Strategy strategy = Strategy::local;  // the prefill's attention strategy (sp > 1: ring, ...)
  ShardLayout layout = ShardLayout::contiguous;
  int mqsp_micro = 0, usp_ulysses = 0;
};

struct SamplingOptions {
  double temperature = 1.0;  // 0: greedy
  int top_k = 0;             // keep the k most likely tokens (0: all)
  double top_p = 1.0;        // keep the smallest set whose probability reaches p (1: all)
  uint64_t seed = 1234;
};

// Samples from logits (V) with the options above; `rng` advances once per call (also when
// greedy, so the sequence of draws does not depend on the temperature).
int32_t sample_token(const std::vector<float>& logits, const SamplingOptions& opt,
                     std::mt19937_64& rng);

// Per-rank memory a generation needs (dry run): the weights, the prefill model's
// activations for its shard of n_prefill tokens, the decode model and a KV cache of
// `capacity` tokens. Collective over world. Max over ranks.
uint64_t generation_peak_bytes(const ModelConfig& cfg, const GenerateMesh& gm, Comm& world,
                               int64_t prompt_len, int64_t max_new);

class Generator {
 public:
  // Collective over world (world = tp·sp). Allocates, from `arena`, the weights of this
  // tp rank and a KV cache for prompt_len + max_new tokens; the weights are zero until
  // load_weights.
  Generator(const ModelConfig& cfg, const GenerateMesh& gm, Comm& world, Arena& arena,
            int64_t prompt_len, int64_t max_new);
  ~Generator();
  // Places this rank's shard of each named global tensor (checkpoint names and shapes).
  void load_weights(const std::function<const std::vector<float>*(
                        const std::string& name, const std::vector<int64_t>& shape)>& global);
  float* params() { return params_.data(); }
  const std::vector<ParamSpec>& specs() const { return specs_; }

  // Prefill (the sp strategy) over prompt[0..n−1) and decode of prompt[n−1]: returns the
  // logits (V) of the next token, the same on every rank. Collective.
  std::vector<float> prefill(const std::vector<int32_t>& prompt);
  // Feeds `token` at the next position; returns the logits (V) of the token after it.
  std::vector<float> step(int32_t token);
  int64_t position() const { return next_pos_; }  // tokens in the cache (all ranks)
  double prefill_seconds() const { return prefill_s_; }
  int64_t prefilled_tokens() const { return prefilled_; }
  const KvCache& cache() const { return *cache_; }

 private:
  ModelConfig cfg_;
  GenerateMesh gm_;
  Comm& world_;
  Arena& arena_;
  Mesh mesh_;
  std::vector<ParamSpec> specs_;
  Buffer params_;
  std::unique_ptr<KvCache> cache_;
  std::unique_ptr<Model> decode_;
  int64_t prompt_len_, max_new_, next_pos_ = 0, prefilled_ = 0;
  double prefill_s_ = 0.0;
};

}  // namespace seqpar
