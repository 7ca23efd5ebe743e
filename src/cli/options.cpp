#include "cli/options.hpp"

namespace seqpar {

std::string default_suffix(OptionKind kind, const nlohmann::json& value, const std::string& text) {
  if (!text.empty()) return " (default: " + text + ")";
  if (kind == OptionKind::list) return "";
  if (kind == OptionKind::flag || kind == OptionKind::on_off)
    return std::string(" (default: ") + (value.get<bool>() ? "on" : "off") + ")";
  if (value.is_string()) {
    const std::string s = value.get<std::string>();
    return s.empty() ? "" : " (default: " + s + ")";
  }
  return " (default: " + value.dump() + ")";
}

}  // namespace seqpar
