#include "cli/options.hpp"

#include "cli/command.hpp"

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

CLI::Option* add_checkpoint_option(CLI::App& app, std::string& path) {
  return app.add_option("--checkpoint,--run", path,
                        "a step directory, a checkpoints/ root or a run directory (its newest "
                        "complete checkpoint)");
}

}  // namespace seqpar
