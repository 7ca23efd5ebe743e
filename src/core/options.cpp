#include "core/options.hpp"

#include <charconv>
#include <cmath>
#include <cstdlib>

namespace seqpar {

nlohmann::json json_float(float f) {
  if (!std::isfinite(f)) return f;
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, f);  // shortest round-trip form of the float
  *r.ptr = '\0';
  return std::strtod(buf, nullptr);
}

}  // namespace seqpar
