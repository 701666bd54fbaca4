#include "certs/spiffe.hpp"

namespace portcullis::certs {
namespace {

constexpr std::string_view spiffe_scheme = "spiffe://";
constexpr std::size_t max_spiffe_id_bytes = 2048;
constexpr std::size_t max_trust_domain_bytes = 255;

constexpr bool is_trust_domain_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

constexpr bool is_path_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

}  // namespace

bool is_valid_spiffe_id(std::string_view id) noexcept {
  // The scheme is compared case-sensitively: the spec requires lowercase "spiffe".
  if (id.size() > max_spiffe_id_bytes || !id.starts_with(spiffe_scheme)) {
    return false;
  }
  std::string_view rest = id.substr(spiffe_scheme.size());
  const std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos) {
    return false;  // bare trust domain: not a workload identity
  }
  const std::string_view trust_domain = rest.substr(0, slash);
  if (trust_domain.empty() || trust_domain.size() > max_trust_domain_bytes) {
    return false;
  }
  // Uppercase, ':' (port), '@' (userinfo), '%' (percent-encoding) all fail here.
  for (char c : trust_domain) {
    if (!is_trust_domain_char(c)) {
      return false;
    }
  }
  // '?' (query) and '#' (fragment) fail as non-path characters.
  std::string_view path = rest.substr(slash);
  while (!path.empty()) {
    path.remove_prefix(1);  // the '/' before this segment
    const std::size_t end = path.find('/');
    const std::string_view segment = path.substr(0, end);
    if (segment.empty() || segment == "." || segment == "..") {
      return false;  // also rejects a trailing slash and "//"
    }
    for (char c : segment) {
      if (!is_path_char(c)) {
        return false;
      }
    }
    path = end == std::string_view::npos ? std::string_view{} : path.substr(end);
  }
  return true;
}

}  // namespace portcullis::certs
