// PLACEHOLDER: replaced by the ring strategy implementation.
#include "core/check.hpp"
#include "parallel/strategies.hpp"

namespace seqpar {
SEQPAR_STRATEGY_FACTORY(make_ring_attention) {
  SP_FAIL("attention strategy 'ring' is not implemented yet");
}
}  // namespace seqpar
