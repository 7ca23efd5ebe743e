// Non-owning tensor view: a float pointer with up to 4 row-major dimensions.
// Views never allocate; memory comes from the Arena (core/arena.hpp).
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/check.hpp"

namespace seqpar {

struct Tensor {
  float* data = nullptr;
  std::array<int64_t, 4> shape{0, 0, 0, 0};
  int ndim = 0;

  Tensor() = default;
  Tensor(float* p, std::initializer_list<int64_t> dims) : data(p) {
    SP_CHECK(dims.size() >= 1 && dims.size() <= 4, "Tensor takes 1..4 dims, got ", dims.size());
    for (int64_t d : dims) {
      SP_CHECK(d >= 0, "negative tensor dimension ", d);
      shape[ndim++] = d;
    }
  }
  int64_t numel() const {
    int64_t n = ndim ? 1 : 0;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  int64_t dim(int i) const {
    SP_CHECK(i >= 0 && i < ndim, "dim ", i, " of a ", ndim, "-d tensor");
    return shape[i];
  }
  std::string shape_str() const {
    std::string s = "(";
    for (int i = 0; i < ndim; ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + ")";
  }
};

}  // namespace seqpar
