// Names and parsers of the model's enum settings (--recompute, --precision, --loss), the
// spelling the CLI, config.json and checkpoints use.
#include "core/check.hpp"
#include "model/model.hpp"

namespace seqpar {

const char* recompute_name(Recompute r) {
  return r == Recompute::none ? "none" : r == Recompute::selective ? "selective" : "full";
}

Recompute parse_recompute(const std::string& s) {
  if (s == "none") return Recompute::none;
  if (s == "selective") return Recompute::selective;
  if (s == "full") return Recompute::full;
  SP_FAIL_USAGE("unknown recompute mode '", s, "' (expected none, selective or full)");
}

const char* precision_name(Precision p) { return p == Precision::fp32 ? "fp32" : "bf16"; }

Precision parse_precision(const std::string& s) {
  if (s == "fp32") return Precision::fp32;
  if (s == "bf16") return Precision::bf16;
  SP_FAIL_USAGE("unknown precision '", s, "' (expected fp32 or bf16)");
}

const char* loss_name(LossImpl l) { return l == LossImpl::fused ? "fused" : "materialized"; }

LossImpl parse_loss(const std::string& s) {
  if (s == "fused") return LossImpl::fused;
  if (s == "materialized") return LossImpl::materialized;
  SP_FAIL_USAGE("unknown loss '", s, "' (expected fused or materialized)");
}

}  // namespace seqpar
