#pragma once
// What the policy decides on. Pure values: no sockets, no YAML, no OpenSSL.
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "certs/identity.hpp"

namespace portcullis::policy {

struct Header {
  std::string name;   // lowercased
  std::string value;  // as received, surrounding whitespace trimmed
};

// The value of the first field named `lower_name`, or null.
inline const std::string* find_header(std::span<const Header> headers, std::string_view lower_name) {
  for (const auto& h : headers)
    if (h.name == lower_name) return &h.value;
  return nullptr;
}

struct KubeAttributes;    // proxy/policy/kube.hpp
struct DockerAttributes;  // proxy/policy/docker.hpp

struct Request {
  const certs::Identity* peer = nullptr;  // null: no verified client certificate
  std::string_view method;                // as sent (methods are case-sensitive, RFC 9110 9.1)
  std::string_view host;                  // lowercased, without port
  std::string_view path;                  // normalised (see normalize.hpp)
  std::string_view query;                 // raw, without '?'
  std::span<const Header> headers;
  const KubeAttributes* kube = nullptr;     // on kubernetes listeners
  const DockerAttributes* docker = nullptr; // on docker listeners
  bool explain_allow = true;                // false: an allow carries no reason (nobody logs it)
};

struct Decision {
  enum class Outcome { allow, deny, audit_deny };
  Outcome outcome = Outcome::deny;
  std::string rule;    // the rule that decided; empty when none did
  std::string reason;  // one line, for the 403 body and the log (empty for an allow unless explain_allow)
  bool allowed() const { return outcome != Outcome::deny; }
};

}  // namespace portcullis::policy
