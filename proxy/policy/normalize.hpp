#pragma once
// Request-target normalisation (RFC 3986 / RFC 9112 3.2): one spelling per resource, so that a
// rule cannot be dodged by encoding. What cannot be normalised safely is rejected (400).
// The exact choices are listed at the top of normalize.cpp and in docs/policy.md.
#include <string>
#include <string_view>

namespace portcullis::policy {

struct NormalizedTarget {
  bool ok = false;
  std::string error;      // why it was rejected (when !ok), for the 400 body and the log
  std::string path;       // normalised path, always starting with '/' ("*" for OPTIONS *)
  std::string query;      // without '?', as sent (validated)
  std::string authority;  // host[:port] from an absolute-form target, lowercased; else empty
};

NormalizedTarget normalize_target(std::string_view method, std::string_view target);

namespace detail {
// The path step of normalize_target (path starts with '/'). A path that is already canonical
// (no '%', no ';', no empty, "." or ".." segment but a final empty one) is returned as it is
// without rebuilding it; `use_shortcut = false` always rebuilds, so a test can compare the two.
std::string normalize_path(std::string_view encoded, std::string& error, bool use_shortcut = true);
}  // namespace detail

}  // namespace portcullis::policy
