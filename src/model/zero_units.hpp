// Parameter units and the ParamSource interface through which a sharding scheme (ZeRO,
// train/zero.hpp) hands the model its parameters and takes its gradients, unit by unit
// (model/zero_units.cpp).
#pragma once
#include <vector>

#include "model/param_specs.hpp"

namespace seqpar {

// Parameter units, the granularity of sharded training (ZeRO, train/zero.hpp): unit 0
// holds the parameters outside the layers (embedding, head, final norm), unit 1 + l those
// of layer l. A unit's tensors, packed in spec order, form its block.
int param_unit(const ParamSpec& s);
// The specs of unit u, with offsets into the unit's packed block.
std::vector<ParamSpec> unit_specs(const std::vector<ParamSpec>& specs, int u);

// Where the model finds a unit's parameters and puts its gradients when a sharding scheme
// (ZeRO) holds them instead of the model's own blocks. The model calls, per step:
//   forward:  fetch(0), then per layer fetch(1 + l, next) … drop(1 + l);
//   backward: grad(0); per layer (last first) fetch(1 + l, next), grad(1 + l) …
//             grad_done(1 + l), drop(1 + l); finally grad_done(0).
// Unit 0's parameters stay valid from forward to the end of backward (the head serves the
// loss, argmax and logits). Every rank of the sharding group makes the same calls.
class ParamSource {
 public:
  virtual ~ParamSource() = default;
  virtual bool holds_params() const = 0;  // parameters come from fetch()
  virtual bool holds_grads() const = 0;   // gradients go to grad() / grad_done()
  // Unit u's packed parameters, valid until drop(u). `next` (−1: none) is the unit the model
  // fetches after this one, which the source may gather meanwhile.
  virtual float* fetch(int u, int next) = 0;
  virtual void drop(int u) = 0;
  // A zeroed packed gradient block for unit u to accumulate into; grad_done(u) hands the
  // unit's complete gradient over. After grad_done(0) every unit's gradient has landed.
  virtual float* grad(int u) = 0;
  virtual void grad_done(int u) = 0;
};

}  // namespace seqpar
