#pragma once
// One JSON object per request (per connection on tcp listeners), with ECS field names, for ELK
// and Splunk. Denials are always written, even with `access_log: off` (then to stderr).
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "certs/identity.hpp"

namespace portcullis::observe {

struct AccessRecord {
  std::string_view outcome;  // allow | deny | audit-deny | error
  std::string_view listener;
  std::string source_ip;
  std::uint16_t source_port = 0;
  const certs::Identity* peer = nullptr;
  std::string_view method, path, query;
  int status = 0;
  std::string_view rule;
  std::string_view reason;
  std::string_view kube_verb, kube_resource, kube_namespace;
  std::string_view docker_action;
  std::string_view upstream;
  std::uint64_t bytes_in = 0, bytes_out = 0;
  std::chrono::microseconds duration{0};
};

// Where lines go: "stdout", "stderr", a file path, or "off". Thread-safe; call once at startup.
// False (with an error logged) when the file cannot be opened: the proxy must not start and
// lose its audit trail.
bool configure_access_log(const std::string& target);
// SIGUSR1 (logrotate): opens the file again under its configured name. When that fails the old
// file stays in use and the error is logged; returns false then.
bool reopen_access_log();
void write_access_log(const AccessRecord& r);
// False with `access_log: off`: only denials are written, so an allow needs no reason text.
bool access_log_records_allows();

// Appends s to out as a JSON string body (without the quotes).
void json_escape(std::string& out, std::string_view s);

}  // namespace portcullis::observe
