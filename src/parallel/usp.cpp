// PLACEHOLDER: replaced by the usp strategy implementation.
#include "core/check.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
SEQPAR_STRATEGY_FACTORY(make_usp_attention) {
  SP_FAIL("attention strategy 'usp' is not implemented yet");
}
}  // namespace seqpar
