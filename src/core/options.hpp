// One declaration per setting. A setting is one row: its config key, its command-line
// spelling, help, default (the value a default-constructed config holds), the check on its
// value, the subcommands that take it, whether a resume must keep it, and where it lives
// in the config struct. From the rows come:
//   * the command line of every subcommand (cli/options.cpp turns rows into CLI11 flags),
//   * the JSON merge (defaults < config file < flags; unknown keys refused),
//   * the JSON echo (config.json, manifests, the cross-rank agreement),
//   * the value checks, applied the same to flags, config files and run directories,
//   * the resume comparison (rows marked resume_key).
// A config struct declares its rows once (e.g. train_options() in train/config.cpp) with
//   option<Cfg>("seq_len", [](Cfg& c) -> auto& { return c.seq_len; }, "--seq-len,-L",
//               "global sequence length L in tokens").at_least(2)
// and adding a setting is adding a row.
#pragma once
#include <cstdint>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "core/check.hpp"
#include "core/names.hpp"

namespace seqpar {

// Reads j[key] into field if present, refusing a value of the wrong type or out of the
// field's range with the key named (no silent truncation of 2.9 → 2 or 2³²+2 → 2).
template <class T>
void json_get(const nlohmann::json& j, const char* key, T& field) {
  if (!j.contains(key)) return;
  const nlohmann::json& v = j.at(key);
  if constexpr (std::is_same_v<T, bool>) {
    SP_CHECK_USAGE(v.is_boolean(), "config '", key, "' must be true or false, got ", v.dump());
    field = v.get<bool>();
  } else if constexpr (std::is_integral_v<T>) {
    SP_CHECK_USAGE(v.is_number_integer(), "config '", key, "' must be an integer, got ", v.dump());
    if (v.is_number_unsigned()) {
      const uint64_t x = v.get<uint64_t>();
      SP_CHECK_USAGE(x <= uint64_t(std::numeric_limits<T>::max()), "config '", key, "' = ", x,
                     " is out of range (at most ", std::numeric_limits<T>::max(), ")");
      field = static_cast<T>(x);
    } else {
      const int64_t x = v.get<int64_t>();
      SP_CHECK_USAGE(x >= int64_t(std::numeric_limits<T>::min()) &&
                         (x < 0 || uint64_t(x) <= uint64_t(std::numeric_limits<T>::max())),
                     "config '", key, "' = ", x, " is out of range [",
                     +std::numeric_limits<T>::min(), ", ", +std::numeric_limits<T>::max(), "]");
      field = static_cast<T>(x);
    }
  } else if constexpr (std::is_floating_point_v<T>) {
    SP_CHECK_USAGE(v.is_number(), "config '", key, "' must be a number, got ", v.dump());
    field = v.get<T>();
  } else {
    SP_CHECK_USAGE(v.is_string(), "config '", key, "' must be a string, got ", v.dump());
    field = v.get<std::string>();
  }
}

// A float as the user wrote it: the shortest decimal that reads back as the same float
// (2e-3f is shown 0.002, not 0.0020000000949949026 as its widening to double prints).
nlohmann::json json_float(float f);

// The subcommands a row belongs to (a bit mask).
enum Subcommand : unsigned {
  kTrain = 1u << 0,
  kPlan = 1u << 1,
  kCheck = 1u << 2,
  kEval = 1u << 3,
  kGenerate = 1u << 4,
  kExport = 1u << 5,
};
constexpr unsigned kTrainLike = kTrain | kPlan | kCheck;  // the whole configuration

// How a row reads on the command line.
enum class OptionKind {
  integer,  // --x N
  real,     // --x 1e-3
  text,     // --x STR
  choice,   // --x NAME, one of a name table
  flag,     // boolean: --x / --no-x (the spelling "--x,!--no-x")
  on_off,   // boolean: --x on|off
  list,     // repeatable --x KEY, a JSON list of strings
};

template <class Cfg>
struct Option {
  std::string key;    // config key (snake_case): config files, config.json, messages
  std::string flags;  // CLI11 names: "--seq-len,-L"; empty: config file only
  std::string help;   // without the default: the command line appends it
  OptionKind kind = OptionKind::text;
  std::vector<std::string> choices;  // kind choice / on_off
  unsigned subcommands = 0;          // Subcommand bits
  bool resume_key = false;           // a resume must keep it unless --override names it
  bool identity = true;      // part of the run's identity: echoed in config.json and manifests
  bool per_launch = false;   // the mesh: eval and generate take it from the launch, not the run
  std::string default_text;  // help: the default when it is not one value
  std::vector<std::string> follows;  // keys whose change recomputes this one's default
  std::function<nlohmann::json(const Cfg&)> get;
  std::function<void(Cfg&, const nlohmann::json&)> set;  // type-checked, UsageError naming key
  std::vector<std::function<void(const Cfg&)>> checks;   // the value's own checks
  std::function<void(Cfg&)> derive;                      // the default that follows `follows`

  bool takes(unsigned sub) const { return (subcommands & sub) != 0; }

  // Value checks; the message reads "<key> <text>, got <value>".
  Option& check(std::function<bool(const Cfg&)> ok, std::string text) {
    checks.push_back(
        [key = key, ok = std::move(ok), text = std::move(text), g = get](const Cfg& c) {
          SP_CHECK_USAGE(ok(c), key, " ", text, ", got ", shown(g(c)));
        });
    return *this;
  }
  // A check that throws its own UsageError (e.g. a parser of the value).
  Option& check_with(std::function<void(const Cfg&)> f) {
    checks.push_back(std::move(f));
    return *this;
  }
  Option& at_least(double lo, std::string note = "") {
    return check([lo, n = num_](const Cfg& c) { return n(c) >= lo; },
                 "must be >= " + shown(lo) + note);
  }
  Option& above(double lo, std::string note = "") {
    return check([lo, n = num_](const Cfg& c) { return n(c) > lo; },
                 "must be > " + shown(lo) + note);
  }
  // [lo, hi) when open_hi, else [lo, hi].
  Option& within(double lo, double hi, bool open_hi = false) {
    return check([lo, hi, open_hi, n = num_](
                     const Cfg& c) { return n(c) >= lo && (open_hi ? n(c) < hi : n(c) <= hi); },
                 "must be in [" + shown(lo) + ", " + shown(hi) + (open_hi ? ")" : "]"));
  }
  Option& resume() { return resume_key = true, *this; }
  Option& launch() { return per_launch = true, *this; }
  Option& not_identity() { return identity = false, *this; }
  Option& in(unsigned sub) { return subcommands |= sub, *this; }
  Option& shows_default(std::string text) { return default_text = std::move(text), *this; }
  Option& follow(std::vector<std::string> keys, std::function<void(Cfg&)> f) {
    follows = std::move(keys), derive = std::move(f);
    return *this;
  }

  std::function<double(const Cfg&)> num_;  // numeric rows: the value as a double

  static std::string shown(const nlohmann::json& v) {
    return v.is_string() ? v.get<std::string>() : v.dump();
  }
  static std::string shown(double v) {
    std::ostringstream os;
    if (v > -1e18 && v < 1e18 && v == double(int64_t(v)))
      os << int64_t(v);  // bounds such as 2^24 in full, not 1.67772e+07
    else
      os << v;
    return os.str();
  }
};

// A row for the field `ref(cfg)` (a lambda Cfg& -> T&). T picks the kind: bool (a --x/--no-x
// flag), an integer, float/double, std::string, a NamedEnum (its name table) or
// std::vector<std::string> (a repeatable list).
template <class Cfg, class Ref>
Option<Cfg> option(std::string key, Ref ref, std::string flags, std::string help,
                   unsigned subcommands) {
  using T = std::remove_cvref_t<decltype(ref(std::declval<Cfg&>()))>;
  Option<Cfg> o;
  o.key = key;
  o.flags = std::move(flags);
  o.help = std::move(help);
  o.subcommands = subcommands;
  auto cref = [ref](const Cfg& c) -> const T& { return ref(const_cast<Cfg&>(c)); };
  if constexpr (std::is_same_v<T, bool>) {
    o.kind = OptionKind::flag;
    o.get = [cref](const Cfg& c) { return nlohmann::json(cref(c)); };
    o.set = [ref, key](Cfg& c, const nlohmann::json& v) { json_get(v, key.c_str(), ref(c)); };
  } else if constexpr (std::is_integral_v<T> || std::is_floating_point_v<T>) {
    o.kind = std::is_integral_v<T> ? OptionKind::integer : OptionKind::real;
    o.get = [cref](const Cfg& c) {
      if constexpr (std::is_same_v<T, float>)
        return json_float(cref(c));
      else
        return nlohmann::json(cref(c));
    };
    o.num_ = [cref](const Cfg& c) { return double(cref(c)); };
    o.set = [ref, key](Cfg& c, const nlohmann::json& v) { json_get(v, key.c_str(), ref(c)); };
  } else if constexpr (std::is_same_v<T, std::string>) {
    o.kind = OptionKind::text;
    o.get = [cref](const Cfg& c) { return nlohmann::json(cref(c)); };
    o.set = [ref, key](Cfg& c, const nlohmann::json& v) { json_get(v, key.c_str(), ref(c)); };
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    o.kind = OptionKind::list;
    o.get = [cref](const Cfg& c) { return nlohmann::json(cref(c)); };
    o.set = [ref, key](Cfg& c, const nlohmann::json& j) {
      const nlohmann::json& v = j.at(key);
      SP_CHECK_USAGE(v.is_array(), "config '", key, "' must be a list of strings");
      std::vector<std::string> out;
      for (const auto& s : v) {
        SP_CHECK_USAGE(s.is_string(), "config '", key, "' must hold strings, got ", s.dump());
        out.push_back(s.get<std::string>());
      }
      ref(c) = std::move(out);
    };
  } else {
    static_assert(NamedEnum<T>, "a setting's type: bool, a number, a string or a named enum");
    o.kind = OptionKind::choice;
    o.choices = enum_names<T>();
    o.get = [cref](const Cfg& c) { return nlohmann::json(enum_name(cref(c))); };
    o.set = [ref, key](Cfg& c, const nlohmann::json& v) {
      std::string s;
      json_get(v, key.c_str(), s);
      ref(c) = parse_enum<T>(s);
    };
  }
  // json_get reads j[key]: wrap so `set` takes the bare value.
  auto inner = o.set;
  o.set = [inner, key](Cfg& c, const nlohmann::json& v) { inner(c, nlohmann::json{{key, v}}); };
  return o;
}

template <class Cfg>
using OptionTable = std::vector<Option<Cfg>>;

// The table's row for `key`, or null.
template <class Cfg>
const Option<Cfg>* find_option(const OptionTable<Cfg>& rows, const std::string& key) {
  for (const auto& o : rows)
    if (o.key == key) return &o;
  return nullptr;
}

// Overlays the keys of j onto cfg, in table order; a key no row declares, or a value of the
// wrong type or name, throws UsageError naming it. A row whose default follows other keys
// (follows) is recomputed when one of those keys is given and it is not.
template <class Cfg>
void merge_options(const OptionTable<Cfg>& rows, Cfg& cfg, const nlohmann::json& j,
                   const char* what = "config") {
  SP_CHECK_USAGE(j.is_object(), what, " must be a JSON object, got ", j.dump());
  for (const auto& [k, v] : j.items())
    SP_CHECK_USAGE(find_option(rows, k), "unknown ", what, " key '", k, "'");
  for (const auto& o : rows)
    if (j.contains(o.key)) o.set(cfg, j.at(o.key));
  for (const auto& o : rows) {
    if (!o.derive || j.contains(o.key)) continue;
    for (const auto& k : o.follows)
      if (j.contains(k)) {
        o.derive(cfg);
        break;
      }
  }
}

// {key: value} of every row with `identity` (the run's identity).
template <class Cfg>
nlohmann::json options_to_json(const OptionTable<Cfg>& rows, const Cfg& cfg) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& o : rows)
    if (o.identity) j[o.key] = o.get(cfg);
  return j;
}

template <class Cfg>
void check_options(const OptionTable<Cfg>& rows, const Cfg& cfg) {
  for (const auto& o : rows)
    for (const auto& chk : o.checks) chk(cfg);
}

// Projects the rows of a nested struct (e.g. the model config inside the training config)
// into rows of the outer one.
template <class Outer, class Inner, class Ref>
OptionTable<Outer> project_options(const OptionTable<Inner>& rows, Ref ref) {
  OptionTable<Outer> out;
  for (const auto& r : rows) {
    Option<Outer> o;
    o.key = r.key, o.flags = r.flags, o.help = r.help, o.kind = r.kind, o.choices = r.choices;
    o.subcommands = r.subcommands, o.resume_key = r.resume_key, o.identity = r.identity;
    o.per_launch = r.per_launch, o.default_text = r.default_text, o.follows = r.follows;
    auto in = [ref](const Outer& c) -> const Inner& { return ref(const_cast<Outer&>(c)); };
    o.get = [g = r.get, in](const Outer& c) { return g(in(c)); };
    o.set = [s = r.set, ref](Outer& c, const nlohmann::json& v) { s(ref(c), v); };
    for (const auto& chk : r.checks) o.checks.push_back([chk, in](const Outer& c) { chk(in(c)); });
    if (r.derive) o.derive = [d = r.derive, ref](Outer& c) { d(ref(c)); };
    if (r.num_) o.num_ = [n = r.num_, in](const Outer& c) { return n(in(c)); };
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace seqpar
