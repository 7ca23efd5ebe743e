// PLACEHOLDER: replaced by the mqsp strategy implementation.
#include "core/check.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
SEQPAR_STRATEGY_FACTORY(make_mqsp_attention) {
  SP_FAIL("attention strategy 'mqsp' is not implemented yet");
}
}  // namespace seqpar
