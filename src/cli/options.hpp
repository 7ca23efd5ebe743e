// Option rows (core/options.hpp) on the command line: each row a subcommand takes becomes
// one CLI11 flag, and a flag given writes its value, under the row's config key, into a
// JSON object, so flags and config files meet in one merge (defaults < file < flags).
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "core/options.hpp"

namespace seqpar {

// "(default: X)" for --help, from a default-constructed config's value.
std::string default_suffix(OptionKind kind, const nlohmann::json& value, const std::string& text);

// Adds to `app` the rows of `rows` that subcommand `sub` takes. `run_defaults`: the value
// comes from a checkpoint's run unless given (eval), so --help says so for those rows.
template <class Cfg>
void add_option_rows(CLI::App& app, unsigned sub, const OptionTable<Cfg>& rows,
                     nlohmann::json& given, bool run_defaults = false) {
  const Cfg defaults{};
  for (const Option<Cfg>& o : rows) {
    if (!o.takes(sub) || o.flags.empty()) continue;
    const std::string help =
        o.help + (run_defaults && !o.per_launch
                      ? std::string(" (default: the run's)")
                      : default_suffix(o.kind, o.get(defaults), o.default_text));
    const std::string key = o.key;
    nlohmann::json* out = &given;
    CLI::Option* opt = nullptr;
    switch (o.kind) {
      case OptionKind::integer:
        opt = app.add_option_function<int64_t>(
            o.flags, [out, key](const int64_t& v) { (*out)[key] = v; }, help);
        break;
      case OptionKind::real:
        opt = app.add_option_function<double>(
            o.flags, [out, key](const double& v) { (*out)[key] = v; }, help);
        break;
      case OptionKind::text:
      case OptionKind::choice:
        opt = app.add_option_function<std::string>(
            o.flags, [out, key](const std::string& v) { (*out)[key] = v; }, help);
        if (o.kind == OptionKind::choice) opt->type_name(join_names(o.choices, "|"));
        break;
      case OptionKind::on_off:
        opt = app.add_option_function<std::string>(
                     o.flags, [out, key](const std::string& v) { (*out)[key] = v == "on"; }, help)
                  ->check(CLI::IsMember({"on", "off"}));
        break;
      case OptionKind::flag:
        app.add_flag_function(
            o.flags, [out, key](int64_t n) { (*out)[key] = n > 0; }, help);
        continue;
      case OptionKind::list:
        app.add_option_function<std::vector<std::string>>(
               o.flags, [out, key](const std::vector<std::string>& v) { (*out)[key] = v; }, help)
            ->type_name("KEY");
        continue;
    }
    opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
}

}  // namespace seqpar
