// PLACEHOLDER: replaced by the rsa strategy implementation.
#include "core/check.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
SEQPAR_STRATEGY_FACTORY(make_rsa_attention) {
  SP_FAIL("attention strategy 'rsa' is not implemented yet");
}
}  // namespace seqpar
