#pragma once
// The config file (CONFIG.md, contract v1) as typed values. Validated once, at load; the data
// path never re-reads YAML. Every error carries FILE:LINE:COL.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "certs/tls.hpp"
#include "firewall/spec.hpp"
#include "proxy/policy/policy.hpp"
#include "proxy/policy/spec.hpp"

namespace portcullis::config {

struct Location {
  int line = 0;  // 1-based; 0 = unknown
  int col = 0;
};

struct Diagnostic {
  std::string file;
  Location loc;
  std::string message;
  bool warning = false;
  // "FILE:LINE:COL: message" (or "FILE:LINE:COL: warning: message")
  std::string str() const;
};

struct ConfigError : std::runtime_error {
  explicit ConfigError(std::vector<Diagnostic> d);
  std::vector<Diagnostic> diagnostics;
};

struct Address {
  std::string host;  // literal IP address
  std::uint16_t port = 0;
  bool is_loopback() const;
  std::string str() const;  // host:port, IPv6 in brackets
};

struct Upstream {
  enum class Kind { tcp, unix_socket, tls, original_dst };
  std::string name;
  Kind kind = Kind::tcp;
  std::string host;  // tcp, tls: a literal address or a DNS name
  std::uint16_t port = 0;
  std::string path;  // unix
  std::string tls;   // bundle used to originate TLS (tls://, original_dst)
  std::string server_name;  // SNI and the name verified in the server's certificate
  std::vector<std::string> verify_spiffe;
  std::string address_text;  // as written, for logs
  Location loc;
};

struct Limits {
  std::uint64_t max_connections = 10000;
  std::uint64_t header_bytes = 65536;
  std::uint64_t inspect_body_bytes = 1048576;
  std::uint64_t max_body_bytes = 0;  // 0 = unlimited
  std::uint64_t handshake_timeout_ms = 10000;
  std::uint64_t header_timeout_ms = 10000;
  std::uint64_t idle_timeout_ms = 60000;
  std::uint64_t connect_timeout_ms = 5000;
  std::uint64_t upstream_timeout_ms = 0;  // 0 = none (watch streams)
};

enum class Protocol { tcp, http, kubernetes, docker };
enum class ForwardIdentity { xfcc, impersonate, remote_user, none };
// A request header whose name has '_' (Envoy's headers_with_underscores_action): CGI/WSGI
// environs and nginx's underscores_in_headers read X_Tenant as X-Tenant.
enum class Underscores { drop, reject, allow };
// The client's Forwarded / X-Forwarded-* / X-Real-IP: replaced by what Portcullis saw (the peer's
// address, the listener's scheme), or kept with the peer's address appended to X-Forwarded-For
// (a front proxy that is itself an authenticated peer).
enum class ForwardedHeaders { replace, append };

const char* to_string(Protocol p);
const char* to_string(ForwardIdentity f);
const char* to_string(Underscores u);
const char* to_string(ForwardedHeaders f);

struct Listener {
  std::string name;
  Address address;
  std::string tls;  // bundle name; empty = plaintext
  certs::ClientCertMode client_certs = certs::ClientCertMode::required;
  bool plaintext_allow = false;  // `plaintext: allow`: a plaintext listener off loopback
  Protocol protocol = Protocol::http;
  std::string upstream;
  std::string policy;
  std::vector<std::string> authenticate;  // client_cert, token_review
  ForwardIdentity forward_identity = ForwardIdentity::xfcc;
  Underscores headers_with_underscores = Underscores::drop;
  ForwardedHeaders forwarded_headers = ForwardedHeaders::replace;
  Limits limits;
  Location loc;
};

struct LogConfig {
  std::string level = "info";
  std::string access_log = "stdout";  // stdout | stderr | FILE | off
};

struct RunAs {
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
};

struct Config {
  std::string path;  // the file it was read from
  Address admin{"127.0.0.1", 15000};
  std::optional<Address> probes;
  unsigned workers = 0;  // resolved: `auto` = number of cores
  std::optional<RunAs> run_as;
  std::uint64_t max_connections = 0;  // process-wide client connections; 0 = derived from RLIMIT_NOFILE
  std::uint64_t drain_timeout_ms = 10000;  // SIGTERM/SIGINT: how long busy connections may finish
  LogConfig log;
  std::map<std::string, certs::BundleSpec> tls;
  std::map<std::string, Upstream> upstreams;
  std::vector<Listener> listeners;
  std::map<std::string, policy::PolicySpec> policies;
  std::map<std::string, std::shared_ptr<const policy::Policy>> compiled_policies;
  std::optional<firewall::Spec> firewall;
  std::vector<Diagnostic> warnings;
  std::map<std::string, Location> tls_locations;  // for errors found when building contexts
};

// Reads and validates FILE. Throws ConfigError listing every error found (not just the first).
Config load_file(const std::string& path);
// The same from text (unit tests); `name` stands in for FILE in messages.
Config load_string(const std::string& text, const std::string& name);

}  // namespace portcullis::config
