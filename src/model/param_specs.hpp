// The parameter block's layout (model/param_specs.cpp): one ParamSpec per tensor, in block
// order, with this rank's shard of it under tensor parallelism; the model's views into the
// block; copies between a shard and the global tensor; initial values.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "model/config.hpp"

namespace seqpar {

class Comm;

// The tensor-parallel group this rank belongs to (t = 1: none).
struct TpSetup {
  Comm* comm = nullptr;  // null when t = 1
  int size() const;
  int rank() const;
};

struct ParamSpec {
  std::string name;                   // safetensors / PyTorch name, e.g. "layers.0.attn.qkv.weight"
  std::vector<int64_t> shape;         // this rank's shape (PyTorch layout (out, in) for linears)
  std::vector<int64_t> global_shape;  // the unsharded shape
  int64_t offset = 0;                 // floats from the start of the parameter block
  int64_t numel = 0;
  bool decay = false;      // AdamW weight decay applies (matrices, not biases/LN)
  bool replicated = true;  // same on every tp rank (else a tensor-parallel shard)
  int split_dim = -1;      // sharded along this dim of global_shape (0 rows, 1 columns)
  // The global index ranges [start, start + len) along split_dim this rank holds, in order.
  std::vector<std::pair<int64_t, int64_t>> segments;
};
// Replicated parameters first, then this rank's shards: gradients of the first range are
// all-reduced over the world, of the second over the ranks holding the same shard.
std::vector<ParamSpec> param_specs(const ModelConfig& c, int tp = 1, int tp_rank = 0);
// Vocabulary rows [begin, begin + len) of the embedding and head held by tp rank r (Megatron's
// vocabulary parallelism): V split as evenly as it goes, the first V mod t ranks one more.
std::pair<int64_t, int64_t> vocab_range(int64_t V, int tp, int tp_rank);
// kv heads a tp rank holds (Hkv/t, or 1 replicated when Hkv < t), and on how many ranks
// each kv head lives (1, or t/Hkv).
int kv_heads_per_rank(const ModelConfig& c, int tp);
int kv_replicas(const ModelConfig& c, int tp);

// Copies between a rank's shard and the global tensor (row-major) of one parameter.
void shard_from_global(const ParamSpec& s, const float* global, float* shard);
void shard_to_global(const ParamSpec& s, const float* shard, float* global);
// The global tensor of parameter i of param_specs(cfg, t, ·) from every tp rank's shard
// (shards may differ in size: a vocabulary V not divisible by t). Collective over tp
// (null: t = 1, or a replicated parameter, copied as it is).
std::vector<float> gather_param(const ModelConfig& cfg, size_t i, const float* shard, Comm* tp);

// (offset, floats) of the parameter block holding replicated kv heads (Hkv < t): see
// Model::kv_replica_ranges.
std::vector<std::pair<int64_t, int64_t>> kv_replica_ranges(const ModelConfig& c,
                                                           const std::vector<ParamSpec>& specs,
                                                           int tp);
// GPT-2 style initial values of `specs` (offsets into `block`), keyed by (parameter name,
// GLOBAL element index): the same weights whatever the layout. See Model::init_weights.
void init_params(const ModelConfig& c, const std::vector<ParamSpec>& specs, float* block,
                 uint64_t seed);

// Views into the parameter (or gradient) block; shapes are this rank's.
struct LayerParams {
  float* ln1_w = nullptr;   // (C)
  float* ln1_b = nullptr;   // (C)
  float* qkv_w = nullptr;   // ((H + 2Hkv)·d / t, C)  column-parallel
  float* qkv_b = nullptr;   // ((H + 2Hkv)·d / t)
  float* proj_w = nullptr;  // (C, H·d / t)           row-parallel
  float* proj_b = nullptr;  // (C)
  float* ln2_w = nullptr;   // (C)
  float* ln2_b = nullptr;   // (C)
  float* fc1_w = nullptr;   // (F / t, C), llama (2·F / t, C)  column-parallel
  float* fc1_b = nullptr;   // (F / t)
  float* fc2_w = nullptr;   // (C, F / t)             row-parallel
  float* fc2_b = nullptr;   // (C)
};
// LLaMA: ln* are RMSNorm weights, qkv_w spans q_proj|k_proj|v_proj, fc1_w spans
// gate_proj|up_proj ((2·F/t, C)), proj_w is o_proj, fc2_w down_proj; biases are null.
struct ParamViews {
  float* wte = nullptr;    // (V, C) input embedding
  float* head = nullptr;   // (V, C) output head: == wte when tied
  float* lnf_w = nullptr;  // (C)
  float* lnf_b = nullptr;  // (C), null for llama
  std::vector<LayerParams> layers;
};
ParamViews param_views(const std::vector<ParamSpec>& specs, int n_layer, float* block);

}  // namespace seqpar
