#include "infer/generate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/check.hpp"

namespace seqpar {

int32_t sample_token(const std::vector<float>& logits, const SamplingOptions& opt,
                     std::mt19937_64& rng) {
  SP_CHECK(!logits.empty(), "no logits to sample from");
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  if (opt.temperature <= 0.0)  // greedy: the first maximum (smallest id among ties)
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  // Candidates by decreasing logit (ties by id), cut by top-k, then softmax at the
  // temperature, cut by top-p (the smallest prefix whose mass reaches p), renormalised.
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  size_t k = opt.top_k > 0 ? std::min(size_t(opt.top_k), ids.size()) : ids.size();
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] ||
           (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + ptrdiff_t(k), ids.end(), by_logit);
  ids.resize(k);
  std::vector<double> p(k);
  const double m = logits[size_t(ids[0])];
  double sum = 0.0;
  for (size_t i = 0; i < k; ++i)
    sum += p[i] = std::exp((logits[size_t(ids[i])] - m) / opt.temperature);
  size_t keep = k;
  if (opt.top_p < 1.0) {
    double acc = 0.0;
    for (size_t i = 0; i < k; ++i) {
      acc += p[i] / sum;
      if (acc >= opt.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0.0;
  for (size_t i = 0; i < keep; ++i) kept += p[i];
  double acc = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    acc += p[i] / kept;
    if (u < acc) return ids[i];
  }
  return ids[keep - 1];
}

namespace {

// Tokens the prefill covers: all but the last prompt token, when every sp rank gets one.
int64_t prefill_len(int64_t prompt_len, int sp) {
  return prompt_len - 1 >= sp ? prompt_len - 1 : 0;
}

}  // namespace

Generator::Generator(const ModelConfig& cfg, const GenerateMesh& gm, Comm& world, Arena& arena,
                     int64_t prompt_len, int64_t max_new)
    : cfg_(cfg),
      gm_(gm),
      world_(world),
      arena_(arena),
      mesh_(make_mesh(world, gm.tp, gm.sp, kv_replicas(cfg, gm.tp))),
      prompt_len_(prompt_len),
      max_new_(max_new) {
  SP_CHECK_USAGE(cfg_.causal(),
                 "generation needs a causal model (gpt or llama); this checkpoint "
                 "is ",
                 model_kind_name(cfg_.kind));
  SP_CHECK_USAGE(mesh_.dp == 1, "generate runs on tp·sp ranks: ", world.size(), " ranks with --tp ",
                 gm.tp, " and --sp ", gm.sp, " leave dp = ", mesh_.dp);
  SP_CHECK_USAGE(prompt_len >= 1, "the prompt is empty: generation needs at least one token");
  SP_CHECK_USAGE(max_new >= 0, "--max-new-tokens must be >= 0, got ", max_new);
  specs_ = param_specs(cfg_, gm.tp, mesh_.tp_rank);
  params_ =
      Buffer(arena, Mem::params, size_t(specs_.back().offset + specs_.back().numel), "parameters");
  // This rank's cache: its prefill shard, and every N-th position fed afterwards
  // (positions [start, prompt_len + max_new − 1): the last sampled token is never fed).
  const int64_t P0 = prefill_len(prompt_len, gm.sp);
  const int64_t local = P0 > 0 ? shard_len(P0, gm.sp, mesh_.sp_rank, gm.layout) : 0;
  const int64_t fed = std::max<int64_t>(prompt_len + max_new - 1 - P0, 1);
  const int64_t cap = local + (fed + gm.sp - 1) / gm.sp + 1;
  cache_ =
      std::make_unique<KvCache>(arena, cfg_.n_layer, kv_heads_per_rank(cfg_, gm.tp), cfg_.d(), cap);
  ModelParallel par;
  par.tp = TpSetup{gm.tp > 1 ? &mesh_.tp_comm : nullptr};
  par.tp_sequence_parallel = false;  // one row, the same on every tp rank
  par.inference = true;
  par.shared_params = params_.data();
  Comm* sp = gm.sp > 1 ? &mesh_.sp_comm : nullptr;
  KvCache& cache = *cache_;
  par.attention = [&cache, sp](Arena& a, const SpSetup&, int, int, int H, int Hkv, int d) {
    return make_decode_attention(a, cache, sp, H, Hkv, d);
  };
  decode_ = std::make_unique<Model>(cfg_, 1, 1, arena, par);
}

Generator::~Generator() = default;

void Generator::load_weights(
    const std::function<const std::vector<float>*(const std::string&, const std::vector<int64_t>&)>&
        global) {
  for (const ParamSpec& s : specs_) {
    const std::vector<float>* g = global(s.name, s.global_shape);
    SP_CHECK(g, "no weights for '", s.name, "'");
    if (!arena_.dry_run()) shard_from_global(s, g->data(), params_.data() + s.offset);
  }
}

std::vector<float> Generator::prefill(const std::vector<int32_t>& prompt) {
  SP_CHECK(int64_t(prompt.size()) == prompt_len_, "prefill got ", prompt.size(),
           " tokens, the generator was built for ", prompt_len_);
  SP_CHECK(next_pos_ == 0, "prefill runs once, before any step");
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t P0 = prefill_len(prompt_len_, gm_.sp);
  if (P0 > 0) {
    // The prompt shard through the model with the training strategy; its K, V stay cached.
    const std::vector<int64_t> pos = shard_positions(P0, gm_.sp, mesh_.sp_rank, gm_.layout);
    ModelParallel par;
    par.strategy = gm_.strategy;
    par.sp = SpSetup{gm_.sp > 1 ? &mesh_.sp_comm : nullptr, gm_.layout, P0, gm_.mqsp_micro,
                     gm_.usp_ulysses};
    par.tp = TpSetup{gm_.tp > 1 ? &mesh_.tp_comm : nullptr};
    par.inference = true;
    par.shared_params = params_.data();
    // Forward only: each layer's activations are dead once the next layer has its input,
    // so the prefill keeps one layer's working set (plus the layer inputs), as training
    // does under full recomputation.
    par.recompute = Recompute::full;
    KvCache& cache = *cache_;
    const Strategy name = gm_.strategy;
    par.attention = [&cache, name](Arena& a, const SpSetup& sp, int B, int T, int H, int Hkv,
                                   int d) {
      return make_prefill_attention(make_attention(name, a, sp, B, T, H, Hkv, d), cache);
    };
    Model m(cfg_, 1, int(pos.size()), arena_, par);
    Batch b;
    b.B = 1;
    b.T = int(pos.size());
    b.L = P0;
    b.rope_len = prompt_len_ + max_new_;  // dynamic RoPE scaling: the whole generation
    b.pos = pos;
    b.row_key = pos;
    for (int64_t p : pos) b.tokens.push_back(prompt[size_t(p)]);
    b.targets.assign(pos.size(), -1);
    m.forward(b, StepContext{0, 0, false});
    next_pos_ = P0;
    prefilled_ = P0;
  }
  // The rest of the prompt one token at a time; the last gives the first logits.
  std::vector<float> logits;
  while (next_pos_ < prompt_len_) logits = step(prompt[size_t(next_pos_)]);
  prefill_s_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return logits;
}

std::vector<float> Generator::step(int32_t token) {
  SP_CHECK(token >= 0 && token < cfg_.V, "token ", token, " is outside the vocabulary [0, ", cfg_.V,
           ")");
  Batch b;
  b.B = b.T = 1;
  b.L = next_pos_ + 1;
  b.rope_len = prompt_len_ + max_new_;
  b.pos = {next_pos_};
  b.row_key = {next_pos_};
  b.tokens = {token};
  b.targets = {-1};
  decode_->forward(b, StepContext{0, 0, false});
  ++next_pos_;
  return decode_->logits();
}

uint64_t generation_peak_bytes(const ModelConfig& cfg, const GenerateMesh& gm, Comm& world,
                               int64_t prompt_len, int64_t max_new) {
  Arena dry(true);
  uint64_t peak = 0;
  {
    Generator g(cfg, gm, world, dry, prompt_len, max_new);
    g.prefill(std::vector<int32_t>(size_t(prompt_len), 0));
    peak = dry.total_peak();
  }
  int64_t v = int64_t(peak);
  world.allreduce_max(&v, 1);
  return uint64_t(v);
}

}  // namespace seqpar
