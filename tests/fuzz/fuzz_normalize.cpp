// Request-target normalisation: never crashes; an accepted target has one spelling (normalising
// the result again gives the same path), starts with '/' (or is "*"), and keeps no dot segment,
// NUL or encoded slash that a rule could be dodged with.
#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/policy/normalize.hpp"
#include "tests/fuzz/fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static constexpr std::string_view methods[] = {"GET", "CONNECT", "OPTIONS", "POST", "get"};
  std::string_view method = methods[data[0] % 5];
  std::string_view target(reinterpret_cast<const char*>(data + 1), size - 1);
  auto n = portcullis::policy::normalize_target(method, target);
  if (!n.ok) {
    FUZZ_CHECK(!n.error.empty());
    return 0;
  }
  if (n.path == "*") return 0;
  FUZZ_CHECK(!n.path.empty() && n.path[0] == '/');
  FUZZ_CHECK(n.path.find('\0') == std::string::npos);
  FUZZ_CHECK(n.path.find("/../") == std::string::npos && !n.path.ends_with("/.."));
  FUZZ_CHECK(n.path.find("/./") == std::string::npos && !n.path.ends_with("/."));
  std::string again = n.path;
  if (!n.query.empty()) again += "?" + n.query;
  auto m = portcullis::policy::normalize_target("GET", again);
  FUZZ_CHECK(m.ok);
  FUZZ_CHECK(m.path == n.path);
  FUZZ_CHECK(m.query == n.query);
  return 0;
}
