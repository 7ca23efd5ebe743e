// One name table per enum. A setting's enum is parsed, printed, listed in --help and named
// in error messages from the same table, so a name is spelled once:
//
//   template <> struct EnumNames<ShardLayout> {
//     static constexpr const char* what = "shard layout";
//     static constexpr std::pair<ShardLayout, const char*> table[] = {
//         {ShardLayout::contiguous, "contiguous"}, {ShardLayout::zigzag, "zigzag"}};
//   };
//   enum_name(ShardLayout::zigzag)      -> "zigzag"
//   parse_enum<ShardLayout>("zigzag")   -> ShardLayout::zigzag
//   parse_enum<ShardLayout>("diagonal") -> UsageError "unknown shard layout 'diagonal'
//                                          (expected contiguous or zigzag)"
//   enum_choices<ShardLayout>()         -> "contiguous or zigzag"
#pragma once
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/check.hpp"

namespace seqpar {

// Specialised next to each enum (see above). An enum without one is not a named setting.
template <class E>
struct EnumNames;

template <class E>
concept NamedEnum = requires {
  EnumNames<E>::what;
  EnumNames<E>::table;
};

template <NamedEnum E>
const char* enum_name(E e) {
  for (const auto& [v, n] : EnumNames<E>::table)
    if (v == e) return n;
  SP_FAIL("enum value ", static_cast<long long>(e), " has no name in the ", EnumNames<E>::what,
          " table");
}

template <NamedEnum E>
std::vector<std::string> enum_names() {
  std::vector<std::string> all;
  for (const auto& [v, n] : EnumNames<E>::table) all.emplace_back(n);
  return all;
}

// "a, b or c": for help texts and error messages.
inline std::string join_choices(const std::vector<std::string>& names, const char* last = " or ") {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == names.size() ? last : ", ") + names[i];
  return s;
}

// "a|b|c": for CLI type names.
inline std::string join_names(const std::vector<std::string>& names, const char* sep) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : sep) + n;
  return s;
}

template <NamedEnum E>
std::string enum_choices() {
  return join_choices(enum_names<E>());
}

// Throws UsageError naming the value and the choices (a name the user typed).
template <NamedEnum E>
E parse_enum(std::string_view s) {
  for (const auto& [v, n] : EnumNames<E>::table)
    if (s == n) return v;
  SP_FAIL_USAGE("unknown ", EnumNames<E>::what, " '", s, "' (expected ", enum_choices<E>(), ")");
}

// A named enum prints and serialises as its name (found by argument-dependent lookup), so
// `{"layout", cfg.layout}` in a JSON report says "zigzag", never 1.
template <NamedEnum E>
void to_json(nlohmann::json& j, E e) {
  j = enum_name(e);
}
template <NamedEnum E>
std::ostream& operator<<(std::ostream& os, E e) {
  return os << enum_name(e);
}

}  // namespace seqpar
