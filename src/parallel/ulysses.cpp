// PLACEHOLDER: replaced by the ulysses strategy implementation.
#include "core/check.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
SEQPAR_STRATEGY_FACTORY(make_ulysses_attention) {
  SP_FAIL("attention strategy 'ulysses' is not implemented yet");
}
}  // namespace seqpar
