#include "proxy/config.hpp"

#include <arpa/inet.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "firewall/ruleset.hpp"
#include "proxy/policy/docker.hpp"
#include "proxy/policy/glob.hpp"
#include "proxy/policy/kube.hpp"

namespace portcullis::config {
namespace {

using Keys = std::initializer_list<std::string_view>;

std::string join(Keys keys) {
  std::string out;
  for (auto k : keys) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

// Collects every error with its position, so one `check` run reports them all.
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  static Location loc(const YAML::Node& n) {
    if (!n.IsDefined()) return {};
    auto m = n.Mark();
    if (m.is_null()) return {};
    return {m.line + 1, m.column + 1};
  }

  void error(Location l, std::string msg) { errors_.push_back({file_, l, std::move(msg), false}); }
  void error(const YAML::Node& n, std::string msg) { error(loc(n), std::move(msg)); }
  void warn(Location l, std::string msg) { warnings_.push_back({file_, l, std::move(msg), true}); }

  bool is_map(const YAML::Node& n, std::string_view what) {
    if (n.IsMap()) return true;
    error(n, std::string(what) + " must be a mapping");
    return false;
  }

  // Unknown and duplicate keys are errors: a typo must never silently widen a policy.
  void check_keys(const YAML::Node& map, Keys allowed, std::string_view what) {
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      if (!it->first.IsScalar()) {
        error(it->first, std::string(what) + ": keys must be plain strings");
        continue;
      }
      auto key = it->first.Scalar();
      if (!seen.insert(key).second) {
        error(it->first, "duplicate key '" + key + "' in " + std::string(what));
        continue;
      }
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        error(it->first, "unknown key '" + key + "' in " + std::string(what) +
                             " (expected one of: " + join(allowed) + ")");
    }
  }

  // Duplicate-key check for maps whose keys are free names (tls bundles, upstreams, policies).
  void check_unique_keys(const YAML::Node& map, std::string_view what) {
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it)
      if (it->first.IsScalar() && !seen.insert(it->first.Scalar()).second)
        error(it->first, "duplicate " + std::string(what) + " '" + it->first.Scalar() + "'");
  }

  std::optional<std::string> str(const YAML::Node& n, std::string_view what) {
    if (n.IsScalar()) return n.Scalar();
    error(n, std::string(what) + " must be a string");
    return std::nullopt;
  }

  std::optional<std::uint64_t> uint(const YAML::Node& n, std::string_view what, std::uint64_t min,
                                    std::uint64_t max) {
    if (!n.IsScalar()) {
      error(n, std::string(what) + " must be a number");
      return std::nullopt;
    }
    const auto& s = n.Scalar();
    std::uint64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || p != s.data() + s.size() || s.empty()) {
      error(n, std::string(what) + " must be a whole number, not '" + s + "'");
      return std::nullopt;
    }
    if (v < min || v > max) {
      error(n, std::string(what) + " must be between " + std::to_string(min) + " and " +
                   std::to_string(max) + ", not " + s);
      return std::nullopt;
    }
    return v;
  }

  std::optional<bool> boolean(const YAML::Node& n, std::string_view what) {
    if (n.IsScalar()) {
      const auto& s = n.Scalar();
      if (s == "true") return true;
      if (s == "false") return false;
    }
    error(n, std::string(what) + " must be true or false");
    return std::nullopt;
  }

  std::vector<std::string> strings(const YAML::Node& n, std::string_view what) {
    std::vector<std::string> out;
    if (!n.IsSequence()) {
      error(n, std::string(what) + " must be a list of strings");
      return out;
    }
    for (const auto& item : n) {
      if (auto s = str(item, std::string(what) + " entries")) out.push_back(*s);
    }
    return out;
  }

  std::vector<std::uint16_t> ports(const YAML::Node& n, std::string_view what) {
    std::vector<std::uint16_t> out;
    if (!n.IsSequence()) {
      error(n, std::string(what) + " must be a list of ports");
      return out;
    }
    for (const auto& item : n)
      if (auto v = uint(item, std::string(what) + " entries", 1, 65535))
        out.push_back(static_cast<std::uint16_t>(*v));
    return out;
  }

  const std::string& file() const { return file_; }
  std::vector<Diagnostic>& errors() { return errors_; }
  std::vector<Diagnostic>& warnings() { return warnings_; }

 private:
  std::string file_;
  std::vector<Diagnostic> errors_;
  std::vector<Diagnostic> warnings_;
};

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

std::optional<Address> parse_address(Reader& r, const YAML::Node& n, std::string_view what) {
  auto s = r.str(n, what);
  if (!s) return std::nullopt;
  std::string host, port;
  if (!s->empty() && (*s)[0] == '[') {
    auto close = s->find(']');
    if (close == std::string::npos || close + 1 >= s->size() || (*s)[close + 1] != ':') {
      r.error(n, std::string(what) + " '" + *s + "' is not [IPv6]:port");
      return std::nullopt;
    }
    host = s->substr(1, close - 1);
    port = s->substr(close + 2);
  } else {
    auto colon = s->rfind(':');
    if (colon == std::string::npos || s->find(':') != colon) {
      r.error(n, std::string(what) + " '" + *s + "' is not host:port (an IP address and a port)");
      return std::nullopt;
    }
    host = s->substr(0, colon);
    port = s->substr(colon + 1);
  }
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  if (ec) {
    r.error(n, std::string(what) + ": '" + host + "' is not an IP address");
    return std::nullopt;
  }
  std::uint16_t p = 0;
  auto [ptr, pec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (pec != std::errc{} || ptr != port.data() + port.size() || port.empty()) {
    r.error(n, std::string(what) + ": '" + port + "' is not a port number (0-65535)");
    return std::nullopt;
  }
  return Address{host, p};
}

void check_file(Reader& r, const YAML::Node& n, const std::string& path, std::string_view what) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    r.error(n, std::string(what) + ": file '" + path + "' does not exist or is not a regular file");
  } else if (::access(path.c_str(), R_OK) != 0) {
    r.error(n, std::string(what) + ": file '" + path + "' is not readable");
  }
}

// Relative paths in the config are relative to the config file's folder (as nginx and
// HAProxy users would expect of an include, and so configs are relocatable).
std::string resolve_path(const std::string& config_path, const std::string& p) {
  if (p.empty() || p[0] == '/') return p;
  auto dir = std::filesystem::path(config_path).parent_path();
  return (dir / p).lexically_normal().string();
}

void parse_tls(Reader& r, const YAML::Node& node, Config& cfg) {
  if (!r.is_map(node, "tls")) return;
  r.check_unique_keys(node, "tls bundle");
  for (auto it = node.begin(); it != node.end(); ++it) {
    auto name = it->first.Scalar();
    const YAML::Node b = it->second;  // a copy: `it->` is a temporary proxy (a reference would dangle)
    std::string what = "tls." + name;
    if (!valid_name(name)) r.error(it->first, "tls bundle name '" + name + "' must be letters, digits, '-', '_' or '.'");
    if (!r.is_map(b, what)) continue;
    r.check_keys(b, {"cert", "key", "ca", "min_version", "crl", "verify_depth", "expiry_warning_days"}, what);
    certs::BundleSpec spec;
    spec.name = name;
    for (auto [key, dest] : {std::pair{"cert", &spec.cert}, std::pair{"key", &spec.key},
                             std::pair{"ca", &spec.ca}, std::pair{"crl", &spec.crl}}) {
      if (!b[key]) continue;
      if (auto s = r.str(b[key], what + "." + key)) {
        *dest = resolve_path(cfg.path, *s);
        check_file(r, b[key], *dest, what + "." + key);
      }
    }
    if (spec.cert.empty() != spec.key.empty())
      r.error(b, what + ": cert and key go together (one is missing)");
    if (b["min_version"]) {
      if (auto s = r.str(b["min_version"], what + ".min_version")) {
        if (*s == "1.2") spec.min_version = 12;
        else if (*s == "1.3") spec.min_version = 13;
        else r.error(b["min_version"], what + ".min_version must be \"1.2\" or \"1.3\", not '" + *s + "'");
      }
    }
    if (b["verify_depth"])
      if (auto v = r.uint(b["verify_depth"], what + ".verify_depth", 1, 16)) spec.verify_depth = static_cast<int>(*v);
    if (b["expiry_warning_days"])
      if (auto v = r.uint(b["expiry_warning_days"], what + ".expiry_warning_days", 0, 3650))
        spec.expiry_warning_days = static_cast<int>(*v);
    cfg.tls[name] = spec;
    cfg.tls_locations[name] = Reader::loc(it->first);
  }
}

void parse_upstreams(Reader& r, const YAML::Node& node, Config& cfg) {
  if (!r.is_map(node, "upstreams")) return;
  r.check_unique_keys(node, "upstream");
  for (auto it = node.begin(); it != node.end(); ++it) {
    auto name = it->first.Scalar();
    const YAML::Node u = it->second;  // a copy: `it->` is a temporary proxy (a reference would dangle)
    std::string what = "upstreams." + name;
    if (!valid_name(name)) r.error(it->first, "upstream name '" + name + "' must be letters, digits, '-', '_' or '.'");
    if (!r.is_map(u, what)) continue;
    r.check_keys(u, {"address", "tls", "server_name", "verify_spiffe"}, what);
    Upstream up;
    up.name = name;
    up.loc = Reader::loc(it->first);
    if (!u["address"]) {
      r.error(u, what + ": address is required (tcp://HOST:PORT, unix:///PATH, tls://HOST:PORT or original_dst)");
      continue;
    }
    auto addr = r.str(u["address"], what + ".address");
    if (!addr) continue;
    up.address_text = *addr;
    auto host_port = [&](std::string_view rest) {
      auto colon = rest.rfind(':');
      std::string host(rest.substr(0, colon == std::string_view::npos ? rest.size() : colon));
      if (!host.empty() && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
      std::uint16_t port = 0;
      bool ok = colon != std::string_view::npos && !host.empty();
      if (ok) {
        auto ps = rest.substr(colon + 1);
        auto [p, ec] = std::from_chars(ps.data(), ps.data() + ps.size(), port);
        ok = ec == std::errc{} && p == ps.data() + ps.size() && port != 0;
      }
      if (!ok) r.error(u["address"], what + ".address '" + *addr + "' needs a host and a port (1-65535)");
      up.host = host;
      up.port = port;
    };
    if (addr->starts_with("tcp://")) {
      up.kind = Upstream::Kind::tcp;
      host_port(std::string_view(*addr).substr(6));
    } else if (addr->starts_with("tls://")) {
      up.kind = Upstream::Kind::tls;
      host_port(std::string_view(*addr).substr(6));
    } else if (addr->starts_with("unix://")) {
      up.kind = Upstream::Kind::unix_socket;
      up.path = addr->substr(7);
      if (up.path.empty() || up.path[0] != '/')
        r.error(u["address"], what + ".address '" + *addr + "' needs an absolute path: unix:///path/to/socket");
    } else if (*addr == "original_dst") {
      up.kind = Upstream::Kind::original_dst;
    } else {
      r.error(u["address"], what + ".address '" + *addr +
                                "' must start with tcp://, tls:// or unix://, or be original_dst");
    }
    if (u["tls"]) {
      if (auto s = r.str(u["tls"], what + ".tls")) up.tls = *s;
      if (up.kind == Upstream::Kind::tcp || up.kind == Upstream::Kind::unix_socket)
        r.error(u["tls"], what + ".tls only applies to tls:// and original_dst upstreams (use tls://HOST:PORT)");
    }
    if (u["server_name"]) {
      if (auto s = r.str(u["server_name"], what + ".server_name")) up.server_name = *s;
      if (up.kind != Upstream::Kind::tls)
        r.error(u["server_name"], what + ".server_name only applies to tls:// upstreams");
    }
    if (u["verify_spiffe"]) {
      up.verify_spiffe = r.strings(u["verify_spiffe"], what + ".verify_spiffe");
      // A pattern that cannot match would fail every connection with 502: say so now.
      for (std::size_t i = 0; i < up.verify_spiffe.size() && u["verify_spiffe"].IsSequence(); ++i)
        if (auto why = policy::spiffe_pattern_problem(up.verify_spiffe[i]); !why.empty())
          r.error(u["verify_spiffe"][i], what + ".verify_spiffe: " + why);
      if (up.kind != Upstream::Kind::tls && up.kind != Upstream::Kind::original_dst)
        r.error(u["verify_spiffe"], what + ".verify_spiffe only applies to TLS upstreams");
    }
    cfg.upstreams[name] = up;
  }
}

void parse_limits(Reader& r, const YAML::Node& n, Limits& l, const std::string& what) {
  if (!r.is_map(n, what)) return;
  r.check_keys(n, {"max_connections", "header_bytes", "inspect_body_bytes", "max_body_bytes",
                   "handshake_timeout_ms", "header_timeout_ms", "idle_timeout_ms",
                   "connect_timeout_ms", "upstream_timeout_ms"},
               what);
  struct Field {
    const char* key;
    std::uint64_t* dest;
    std::uint64_t min, max;
  };
  const std::uint64_t day_ms = 86'400'000;
  for (auto f : {Field{"max_connections", &l.max_connections, 1, 1'000'000},
                 Field{"header_bytes", &l.header_bytes, 1024, 1 << 24},
                 Field{"inspect_body_bytes", &l.inspect_body_bytes, 0, 1 << 28},
                 Field{"max_body_bytes", &l.max_body_bytes, 0, UINT64_MAX},
                 Field{"handshake_timeout_ms", &l.handshake_timeout_ms, 1, day_ms},
                 Field{"header_timeout_ms", &l.header_timeout_ms, 1, day_ms},
                 Field{"idle_timeout_ms", &l.idle_timeout_ms, 1, day_ms},
                 Field{"connect_timeout_ms", &l.connect_timeout_ms, 1, day_ms},
                 Field{"upstream_timeout_ms", &l.upstream_timeout_ms, 0, day_ms}}) {
    if (n[f.key])
      if (auto v = r.uint(n[f.key], what + "." + f.key, f.min, f.max)) *f.dest = *v;
  }
}

void parse_listeners(Reader& r, const YAML::Node& node, Config& cfg) {
  if (!node.IsSequence()) {
    r.error(node, "listeners must be a list");
    return;
  }
  for (const auto& n : node) {
    std::string what = "listener";
    if (n.IsMap() && n["name"] && n["name"].IsScalar()) what = "listener '" + n["name"].Scalar() + "'";
    if (!r.is_map(n, what)) continue;
    r.check_keys(n, {"name", "address", "tls", "client_certs", "plaintext", "protocol", "upstream",
                     "policy", "authenticate", "forward_identity", "headers_with_underscores", "forwarded_headers",
                     "limits"},
                 what);
    Listener l;
    l.loc = Reader::loc(n);
    if (!n["name"]) r.error(n, "every listener needs a name");
    else if (auto s = r.str(n["name"], "listener name")) {
      l.name = *s;
      if (!valid_name(*s)) r.error(n["name"], "listener name '" + *s + "' must be letters, digits, '-', '_' or '.'");
    }
    if (!n["address"]) r.error(n, what + ": address is required (e.g. 0.0.0.0:15006)");
    else if (auto a = parse_address(r, n["address"], what + " address")) l.address = *a;
    if (n["protocol"]) {
      if (auto s = r.str(n["protocol"], what + " protocol")) {
        if (*s == "tcp") l.protocol = Protocol::tcp;
        else if (*s == "http") l.protocol = Protocol::http;
        else if (*s == "kubernetes") l.protocol = Protocol::kubernetes;
        else if (*s == "docker") l.protocol = Protocol::docker;
        else r.error(n["protocol"], what + ": protocol must be tcp, http, kubernetes or docker, not '" + *s + "'");
      }
    }
    switch (l.protocol) {
      case Protocol::http: l.forward_identity = ForwardIdentity::xfcc; break;
      case Protocol::kubernetes: l.forward_identity = ForwardIdentity::impersonate; break;
      default: l.forward_identity = ForwardIdentity::none; break;
    }
    if (n["tls"]) {
      if (auto s = r.str(n["tls"], what + " tls")) {
        l.tls = *s;
        if (!cfg.tls.count(*s)) r.error(n["tls"], what + ": tls bundle '" + *s + "' is not defined under tls:");
        else if (cfg.tls[*s].cert.empty())
          r.error(n["tls"], what + ": tls bundle '" + *s + "' has no cert and key, which a listener needs");
      }
    }
    if (n["client_certs"]) {
      if (auto s = r.str(n["client_certs"], what + " client_certs")) {
        if (*s == "required") l.client_certs = certs::ClientCertMode::required;
        else if (*s == "optional") l.client_certs = certs::ClientCertMode::optional;
        else if (*s == "none") l.client_certs = certs::ClientCertMode::none;
        else r.error(n["client_certs"], what + ": client_certs must be required, optional or none");
        if (l.tls.empty()) r.error(n["client_certs"], what + ": client_certs needs a TLS listener (add tls:)");
      }
    }
    if (!l.tls.empty() && l.client_certs != certs::ClientCertMode::none && cfg.tls.count(l.tls) &&
        cfg.tls[l.tls].ca.empty())
      r.error(n["tls"], what + ": tls bundle '" + l.tls + "' has no ca to verify client certificates with "
                               "(add ca:, or set client_certs: none)");
    if (n["plaintext"]) {
      if (auto s = r.str(n["plaintext"], what + " plaintext")) {
        if (*s == "allow") l.plaintext_allow = true;
        else r.error(n["plaintext"], what + ": plaintext takes only the value allow");
      }
    }
    if (!n["upstream"]) r.error(n, what + ": upstream is required");
    else if (auto s = r.str(n["upstream"], what + " upstream")) {
      l.upstream = *s;
      if (!cfg.upstreams.count(*s)) r.error(n["upstream"], what + ": upstream '" + *s + "' is not defined under upstreams:");
    }
    if (!n["policy"])
      r.error(n, what + ": policy is required (every listener is default-deny; name a policy under policies:)");
    else if (auto s = r.str(n["policy"], what + " policy")) {
      l.policy = *s;
      if (!cfg.policies.count(*s)) r.error(n["policy"], what + ": policy '" + *s + "' is not defined under policies:");
    }
    l.authenticate = {"client_cert"};
    if (n["authenticate"]) {
      l.authenticate = r.strings(n["authenticate"], what + " authenticate");
      for (const auto& a : l.authenticate) {
        if (a == "token_review" && l.protocol != Protocol::kubernetes)
          r.error(n["authenticate"], what + ": token_review is only for kubernetes listeners");
        else if (a != "client_cert" && a != "token_review")
          r.error(n["authenticate"], what + ": authenticate entries are client_cert or token_review, not '" + a + "'");
      }
    }
    if (n["forward_identity"]) {
      if (auto s = r.str(n["forward_identity"], what + " forward_identity")) {
        if (*s == "xfcc") l.forward_identity = ForwardIdentity::xfcc;
        else if (*s == "impersonate") l.forward_identity = ForwardIdentity::impersonate;
        else if (*s == "remote_user") l.forward_identity = ForwardIdentity::remote_user;
        else if (*s == "none") l.forward_identity = ForwardIdentity::none;
        else r.error(n["forward_identity"], what + ": forward_identity must be xfcc, impersonate, remote_user or none");
        if (l.protocol == Protocol::tcp && l.forward_identity != ForwardIdentity::none)
          r.error(n["forward_identity"], what + ": a tcp listener cannot forward identity headers");
        // Without Impersonate-* or X-Remote-*, the apiserver would act as the proxy's own
        // certificate (which may impersonate anyone) for every client.
        if (l.protocol == Protocol::kubernetes && (l.forward_identity == ForwardIdentity::xfcc ||
                                                   l.forward_identity == ForwardIdentity::none))
          r.error(n["forward_identity"], what + ": a kubernetes listener must name the client to the apiserver "
                                                "(impersonate or remote_user); with " + *s +
                                                " every request would run as the proxy's own identity");
      }
    }
    if (n["headers_with_underscores"]) {
      if (auto s = r.str(n["headers_with_underscores"], what + " headers_with_underscores")) {
        if (*s == "drop") l.headers_with_underscores = Underscores::drop;
        else if (*s == "reject") l.headers_with_underscores = Underscores::reject;
        else if (*s == "allow") l.headers_with_underscores = Underscores::allow;
        else r.error(n["headers_with_underscores"], what + ": headers_with_underscores must be drop, reject or allow");
        if (l.protocol == Protocol::tcp)
          r.error(n["headers_with_underscores"], what + ": a tcp listener reads no headers");
      }
    }
    if (n["forwarded_headers"]) {
      if (auto s = r.str(n["forwarded_headers"], what + " forwarded_headers")) {
        if (*s == "replace") l.forwarded_headers = ForwardedHeaders::replace;
        else if (*s == "append") l.forwarded_headers = ForwardedHeaders::append;
        else r.error(n["forwarded_headers"], what + ": forwarded_headers must be replace or append");
        if (l.protocol == Protocol::tcp) r.error(n["forwarded_headers"], what + ": a tcp listener forwards no headers");
      }
    }
    if (n["limits"]) parse_limits(r, n["limits"], l.limits, what + " limits");
    if (l.tls.empty() && !l.address.is_loopback() && !l.plaintext_allow && n["address"])
      r.error(n["address"], what + ": a plaintext listener on " + l.address.str() +
                                " is off loopback; add tls: or set plaintext: allow");
    cfg.listeners.push_back(std::move(l));
  }
}

void parse_from(Reader& r, const YAML::Node& n, policy::FromSpec& from, const std::string& what) {
  if (!r.is_map(n, what)) return;
  r.check_keys(n, {"spiffe", "users", "groups", "any"}, what);
  if (n["spiffe"]) from.spiffe = r.strings(n["spiffe"], what + ".spiffe");
  if (n["users"]) from.users = r.strings(n["users"], what + ".users");
  if (n["groups"]) from.groups = r.strings(n["groups"], what + ".groups");
  if (n["any"]) from.any = r.boolean(n["any"], what + ".any").value_or(false);
  if (from.any && (!from.spiffe.empty() || !from.users.empty() || !from.groups.empty()))
    r.error(n, what + ": any: true admits everyone; it cannot be combined with spiffe, users or groups");
  if (!from.any && n.size() > 0 && from.spiffe.empty() && from.users.empty() && from.groups.empty())
    r.error(n, what + ": lists are all empty, which would match no one; omit from: to admit any verified peer");
}

void parse_policies(Reader& r, const YAML::Node& node, Config& cfg) {
  if (!r.is_map(node, "policies")) return;
  r.check_unique_keys(node, "policy");
  for (auto it = node.begin(); it != node.end(); ++it) {
    policy::PolicySpec spec;
    spec.name = it->first.Scalar();
    std::string what = "policies." + spec.name;
    const YAML::Node p = it->second;  // a copy: `it->` is a temporary proxy (a reference would dangle)
    if (!valid_name(spec.name)) r.error(it->first, "policy name '" + spec.name + "' must be letters, digits, '-', '_' or '.'");
    if (!r.is_map(p, what)) continue;
    r.check_keys(p, {"mode", "rules"}, what);
    if (p["mode"]) {
      if (auto s = r.str(p["mode"], what + ".mode")) {
        if (*s == "enforce") spec.mode = policy::Mode::enforce;
        else if (*s == "audit") spec.mode = policy::Mode::audit;
        else r.error(p["mode"], what + ".mode must be enforce or audit, not '" + *s + "'");
      }
    }
    std::vector<Location> rule_locs;
    if (p["rules"]) {
      if (!p["rules"].IsSequence()) r.error(p["rules"], what + ".rules must be a list");
      else {
        std::set<std::string> names;
        for (const auto& rn : p["rules"]) {
          policy::RuleSpec rule;
          std::string rwhat = what + " rule";
          if (rn.IsMap() && rn["name"] && rn["name"].IsScalar()) rwhat = what + " rule '" + rn["name"].Scalar() + "'";
          if (!r.is_map(rn, rwhat)) continue;
          r.check_keys(rn, {"name", "from", "http", "kubernetes", "docker"}, rwhat);
          if (!rn["name"]) r.error(rn, rwhat + ": every rule needs a name (it is logged with each decision)");
          else if (auto s = r.str(rn["name"], rwhat + " name")) {
            rule.name = *s;
            if (!names.insert(*s).second) r.error(rn["name"], what + ": duplicate rule name '" + *s + "'");
          }
          if (rn["from"]) parse_from(r, rn["from"], rule.from, rwhat + " from");
          if (rn["http"] && r.is_map(rn["http"], rwhat + " http")) {
            const auto& h = rn["http"];
            rule.has_http = true;
            r.check_keys(h, {"methods", "paths", "hosts", "headers"}, rwhat + " http");
            if (h["methods"]) rule.http.methods = r.strings(h["methods"], rwhat + " http.methods");
            if (h["paths"]) rule.http.paths = r.strings(h["paths"], rwhat + " http.paths");
            if (h["hosts"]) rule.http.hosts = r.strings(h["hosts"], rwhat + " http.hosts");
            if (h["headers"] && r.is_map(h["headers"], rwhat + " http.headers")) {
              r.check_unique_keys(h["headers"], "header");
              for (auto hit = h["headers"].begin(); hit != h["headers"].end(); ++hit) {
                std::string name = hit->first.Scalar();
                std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
                rule.http.headers.emplace_back(name, r.strings(hit->second, rwhat + " http.headers." + name));
              }
            }
          }
          if (rn["kubernetes"] && r.is_map(rn["kubernetes"], rwhat + " kubernetes")) {
            const auto& k = rn["kubernetes"];
            rule.has_kubernetes = true;
            r.check_keys(k, {"verbs", "resources", "namespaces", "names", "non_resource_urls"}, rwhat + " kubernetes");
            for (auto [key, dest] : {std::pair{"verbs", &rule.kubernetes.verbs}, std::pair{"resources", &rule.kubernetes.resources},
                                     std::pair{"namespaces", &rule.kubernetes.namespaces}, std::pair{"names", &rule.kubernetes.names},
                                     std::pair{"non_resource_urls", &rule.kubernetes.non_resource_urls}})
              if (k[key]) *dest = r.strings(k[key], rwhat + " kubernetes." + key);
            try {
              policy::validate_kube_spec(rule.kubernetes);
            } catch (const std::exception& e) {
              r.error(k, rwhat + " kubernetes: " + e.what());
            }
            // As in RBAC: nodes/proxy reaches the kubelet's own API, where even `get` runs
            // commands in any pod of the node (a websocket exec is a GET there).
            for (const auto& res : rule.kubernetes.resources)
              if (res == "nodes/proxy" || res == "nodes/*")
                r.warn(Reader::loc(k), rwhat + " grants " + res +
                                           ": it reaches the kubelet's API, where a client may exec into any pod of "
                                           "the node whatever the verb; grant it to node administrators only");
            for (const auto& res : policy::kube_creates_on_update(rule.kubernetes))
              r.warn(Reader::loc(k), rwhat + " grants update on " + res +
                                         " but not create: a PUT of a missing object creates it, and the "
                                         "apiserver checks create with its own RBAC, not with this rule");
          }
          if (rn["docker"] && r.is_map(rn["docker"], rwhat + " docker")) {
            const auto& d = rn["docker"];
            rule.has_docker = true;
            r.check_keys(d, {"actions", "images", "bind_sources", "allow"}, rwhat + " docker");
            for (auto [key, dest] : {std::pair{"actions", &rule.docker.actions}, std::pair{"images", &rule.docker.images},
                                     std::pair{"bind_sources", &rule.docker.bind_sources}, std::pair{"allow", &rule.docker.allow}})
              if (d[key]) *dest = r.strings(d[key], rwhat + " docker." + key);
            try {
              policy::validate_docker_spec(rule.docker);
            } catch (const std::exception& e) {
              r.error(d, rwhat + " docker: " + e.what());
            }
          }
          int forms = rule.has_http + rule.has_kubernetes + rule.has_docker;
          if (forms > 1)
            r.error(rn, rwhat + ": a rule has at most one of http:, kubernetes:, docker:");
          rule_locs.push_back(Reader::loc(rn));
          spec.rules.push_back(std::move(rule));
        }
      }
    }
    if (spec.rules.empty())
      r.warn(Reader::loc(it->first), what + " has no rules: it denies everything");
    try {
      cfg.compiled_policies[spec.name] = policy::Policy::compile(spec);
    } catch (const policy::CompileError& e) {
      Location l = e.rule_index < rule_locs.size() ? rule_locs[e.rule_index] : Reader::loc(it->first);
      r.error(l, what + ": " + e.what());
    } catch (const std::exception& e) {
      r.error(it->first, what + ": " + e.what());
    }
    cfg.policies[spec.name] = std::move(spec);
  }
}

bool valid_cidr(const std::string& s) {
  auto slash = s.find('/');
  std::string addr = s.substr(0, slash);
  unsigned char buf[16];
  int family = addr.find(':') != std::string::npos ? AF_INET6 : AF_INET;
  if (inet_pton(family, addr.c_str(), buf) != 1) return false;
  if (slash == std::string::npos) return true;
  unsigned bits = 0;
  auto p = s.substr(slash + 1);
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), bits);
  return ec == std::errc{} && ptr == p.data() + p.size() && !p.empty() &&
         bits <= (family == AF_INET6 ? 128u : 32u);
}

void parse_allow_list(Reader& r, const YAML::Node& n, std::vector<firewall::AllowEntry>& out,
                      const std::string& what) {
  if (!n.IsSequence()) {
    r.error(n, what + " must be a list");
    return;
  }
  for (const auto& e : n) {
    if (!r.is_map(e, what + " entry")) continue;
    r.check_keys(e, {"cidrs", "ports", "protocol"}, what + " entry");
    firewall::AllowEntry entry;
    if (e["cidrs"]) {
      entry.cidrs = r.strings(e["cidrs"], what + ".cidrs");
      for (const auto& c : entry.cidrs)
        if (!valid_cidr(c)) r.error(e["cidrs"], what + ": '" + c + "' is not an IPv4 or IPv6 CIDR");
    } else {
      r.error(e, what + " entry needs cidrs (use 0.0.0.0/0 and ::/0 for everyone)");
    }
    if (e["ports"]) entry.ports = r.ports(e["ports"], what + ".ports");
    if (e["protocol"]) {
      if (auto s = r.str(e["protocol"], what + ".protocol")) {
        if (*s != "tcp" && *s != "udp") r.error(e["protocol"], what + ".protocol must be tcp or udp");
        entry.protocol = *s;
      }
    }
    out.push_back(std::move(entry));
  }
}

void parse_firewall(Reader& r, const YAML::Node& n, Config& cfg) {
  if (!r.is_map(n, "firewall")) return;
  firewall::Spec spec;
  r.check_keys(n, {"table", "proxy_uid", "proxy_gid", "intercept", "ingress", "egress", "forward_interfaces"}, "firewall");
  if (n["forward_interfaces"]) spec.forward_interfaces = r.strings(n["forward_interfaces"], "firewall.forward_interfaces");
  if (n["table"]) {
    if (auto s = r.str(n["table"], "firewall.table")) {
      spec.table = *s;
      if (auto why = firewall::table_name_problem(*s); !why.empty()) r.error(n["table"], "firewall.table " + why);
    }
  }
  if (n["proxy_uid"]) if (auto v = r.uint(n["proxy_uid"], "firewall.proxy_uid", 0, UINT32_MAX - 1)) spec.proxy_uid = static_cast<std::uint32_t>(*v);
  if (n["proxy_gid"]) if (auto v = r.uint(n["proxy_gid"], "firewall.proxy_gid", 0, UINT32_MAX - 1)) {
    spec.proxy_gid = static_cast<std::uint32_t>(*v);
    // `meta skgid` is the socket's file-system gid: a process with this gid among its
    // supplementary groups can take it (a setgid copy of any binary) and leave unintercepted.
    r.warn(Reader::loc(n["proxy_gid"]),
           "firewall.proxy_gid exempts from interception every process that can take gid " + std::to_string(*v) +
               " (one with it as a supplementary group: a pod's fsGroup or supplementalGroups; a setgid binary it "
               "writes): prefer proxy_uid alone, and keep the proxy's uid and gid out of the app's security context");
  }
  if (n["intercept"] && r.is_map(n["intercept"], "firewall.intercept")) {
    const auto& i = n["intercept"];
    r.check_keys(i, {"inbound", "outbound"}, "firewall.intercept");
    if (i["inbound"] && r.is_map(i["inbound"], "firewall.intercept.inbound")) {
      r.check_keys(i["inbound"], {"ports", "to"}, "firewall.intercept.inbound");
      firewall::Spec::Inbound in;
      if (i["inbound"]["ports"]) in.ports = r.ports(i["inbound"]["ports"], "firewall.intercept.inbound.ports");
      else r.error(i["inbound"], "firewall.intercept.inbound needs ports");
      if (i["inbound"]["to"]) in.to = static_cast<std::uint16_t>(r.uint(i["inbound"]["to"], "firewall.intercept.inbound.to", 1, 65535).value_or(0));
      else r.error(i["inbound"], "firewall.intercept.inbound needs to: (the inbound listener's port)");
      spec.intercept_inbound = in;
    }
    if (i["outbound"] && r.is_map(i["outbound"], "firewall.intercept.outbound")) {
      r.check_keys(i["outbound"], {"to", "exclude_ports"}, "firewall.intercept.outbound");
      firewall::Spec::Outbound out;
      if (i["outbound"]["to"]) out.to = static_cast<std::uint16_t>(r.uint(i["outbound"]["to"], "firewall.intercept.outbound.to", 1, 65535).value_or(0));
      else r.error(i["outbound"], "firewall.intercept.outbound needs to: (the outbound listener's port)");
      if (i["outbound"]["exclude_ports"]) out.exclude_ports = r.ports(i["outbound"]["exclude_ports"], "firewall.intercept.outbound.exclude_ports");
      if (!spec.proxy_uid) r.error(i["outbound"], "firewall.intercept.outbound needs firewall.proxy_uid, or the proxy's own traffic would loop");
      spec.intercept_outbound = out;
    }
  }
  for (auto [key, has, drop, allow] :
       {std::tuple{"ingress", &spec.has_ingress, &spec.ingress_default_drop, &spec.ingress_allow},
        std::tuple{"egress", &spec.has_egress, &spec.egress_default_drop, &spec.egress_allow}}) {
    if (!n[key] || !r.is_map(n[key], std::string("firewall.") + key)) continue;
    const auto& s = n[key];
    std::string what = std::string("firewall.") + key;
    r.check_keys(s, {"default", "allow"}, what);
    *has = true;
    if (s["default"]) {
      if (auto d = r.str(s["default"], what + ".default")) {
        if (*d == "drop") *drop = true;
        else if (*d == "accept") *drop = false;
        else r.error(s["default"], what + ".default must be drop or accept");
      }
    }
    if (s["allow"]) parse_allow_list(r, s["allow"], *allow, what + ".allow");
  }
  cfg.firewall = spec;
}

// `check` warns when the firewall makes a listener unreachable from outside.
void warn_unreachable_listeners(Reader& r, Config& cfg) {
  if (!cfg.firewall || !cfg.firewall->has_ingress || !cfg.firewall->ingress_default_drop) return;
  const auto& fw = *cfg.firewall;
  for (const auto& l : cfg.listeners) {
    if (l.address.is_loopback()) continue;
    bool reachable = false;
    for (const auto& a : fw.ingress_allow) {
      if (a.protocol != "tcp") continue;
      if (a.ports.empty() || std::count(a.ports.begin(), a.ports.end(), l.address.port)) reachable = true;
      // A port intercepted to this listener is reachable through the redirect.
      if (fw.intercept_inbound && fw.intercept_inbound->to == l.address.port)
        for (auto p : fw.intercept_inbound->ports)
          if (a.ports.empty() || std::count(a.ports.begin(), a.ports.end(), p)) reachable = true;
    }
    if (!reachable)
      r.warn(l.loc, "listener '" + l.name + "' on port " + std::to_string(l.address.port) +
                        " is unreachable: firewall.ingress allows no TCP traffic to it");
  }
}

void validate_cross(Reader& r, Config& cfg, const YAML::Node& root) {
  // Duplicate addresses: the same port on the same address, or on a wildcard address.
  for (std::size_t i = 0; i < cfg.listeners.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      const auto& a = cfg.listeners[i];
      const auto& b = cfg.listeners[j];
      if (a.address.port == 0 || a.address.port != b.address.port) continue;
      auto wild = [](const Address& x) { return x.host == "0.0.0.0" || x.host == "::"; };
      if (a.address.host == b.address.host || wild(a.address) || wild(b.address))
        r.error(a.loc, "listener '" + a.name + "' address " + a.address.str() + " conflicts with listener '" +
                           b.name + "' (" + b.address.str() + ")");
    }
    for (std::size_t j = 0; j < i; ++j)
      if (!cfg.listeners[i].name.empty() && cfg.listeners[i].name == cfg.listeners[j].name)
        r.error(cfg.listeners[i].loc, "duplicate listener name '" + cfg.listeners[i].name + "'");
  }
  for (const auto& l : cfg.listeners) {
    auto pit = cfg.policies.find(l.policy);
    if (pit == cfg.policies.end()) continue;
    for (const auto& rule : pit->second.rules) {
      std::string where = "policy '" + l.policy + "' rule '" + rule.name + "'";
      if (l.protocol == Protocol::tcp && (rule.has_http || rule.has_kubernetes || rule.has_docker))
        r.error(l.loc, "listener '" + l.name + "' (protocol tcp) checks only from:, but " + where +
                           " has request conditions that a tcp listener cannot see");
      if (rule.has_kubernetes && l.protocol != Protocol::kubernetes)
        r.error(l.loc, "listener '" + l.name + "' (protocol " + to_string(l.protocol) + ") uses " + where +
                           ", whose kubernetes: conditions need a protocol: kubernetes listener");
      if (rule.has_docker && l.protocol != Protocol::docker)
        r.error(l.loc, "listener '" + l.name + "' (protocol " + to_string(l.protocol) + ") uses " + where +
                           ", whose docker: conditions need a protocol: docker listener");
      // http: conditions on these listeners see the raw method and path only (red-team, kube finding 11).
      if (rule.has_http && l.protocol == Protocol::kubernetes)
        r.warn(l.loc, where + " is an http: rule on kubernetes listener '" + l.name +
                          "': it judges the raw method and path, not Kubernetes verbs (a GET may be a WebSocket exec, "
                          "attach or port-forward, a PATCH a server-side apply that creates); write it as a kubernetes: rule");
      if (rule.has_http && l.protocol == Protocol::docker)
        r.warn(l.loc, where + " is an http: rule on docker listener '" + l.name +
                          "': it judges the raw method and path, and no Docker body check applies to what it allows "
                          "(privileged containers, host mounts, capabilities, images); write it as a docker: rule");
    }
    auto uit = cfg.upstreams.find(l.upstream);
    if (uit != cfg.upstreams.end()) {
      const auto& up = uit->second;
      if (up.kind == Upstream::Kind::original_dst && l.protocol != Protocol::tcp)
        r.error(l.loc, "listener '" + l.name + "': the original_dst upstream '" + up.name + "' needs protocol: tcp");
      if (!up.tls.empty() && !cfg.tls.count(up.tls))
        r.error(up.loc, "upstreams." + up.name + ": tls bundle '" + up.tls + "' is not defined under tls:");
      if (up.kind == Upstream::Kind::original_dst && up.tls.empty())
        r.error(up.loc, "upstreams." + up.name + ": original_dst needs tls: (the sidecar originates mTLS to its peer)");
    }
  }
  if (cfg.firewall) {
    for (const auto& l : cfg.listeners) cfg.firewall->listener_ports.push_back(l.address.port);
    warn_unreachable_listeners(r, cfg);
  }
  if (!cfg.admin.is_loopback())
    r.warn(Reader::loc(root["admin"]), "admin.address " + cfg.admin.str() +
                                           " is off loopback: /config and /metrics are readable from the network");
  if (cfg.listeners.empty()) r.error(Reader::loc(root), "no listeners: nothing to serve");
}

Config parse(const YAML::Node& root, Reader& r, const std::string& path) {
  Config cfg;
  cfg.path = path;
  if (!root.IsMap()) {
    r.error(root, "the config must be a mapping (admin:, tls:, upstreams:, listeners:, policies:, ...)");
    return cfg;
  }
  r.check_keys(root, {"admin", "probes", "workers", "run_as", "log", "tls", "upstreams", "listeners",
                      "policies", "firewall", "max_connections", "drain_timeout_ms"},
               "the config");
  for (auto [key, dest] : {std::pair{"admin", &cfg.admin}}) {
    if (!root[key] || !r.is_map(root[key], key)) continue;
    r.check_keys(root[key], {"address"}, key);
    if (root[key]["address"])
      if (auto a = parse_address(r, root[key]["address"], std::string(key) + ".address")) *dest = *a;
  }
  if (root["probes"] && r.is_map(root["probes"], "probes")) {
    r.check_keys(root["probes"], {"address"}, "probes");
    if (root["probes"]["address"]) cfg.probes = parse_address(r, root["probes"]["address"], "probes.address");
  }
  cfg.workers = std::max(1u, std::thread::hardware_concurrency());
  if (root["workers"]) {
    if (root["workers"].IsScalar() && root["workers"].Scalar() == "auto") {
    } else if (auto v = r.uint(root["workers"], "workers (a number or auto)", 1, 256)) {
      cfg.workers = static_cast<unsigned>(*v);
    }
  }
  if (root["max_connections"])
    if (auto v = r.uint(root["max_connections"], "max_connections", 1, 10'000'000)) cfg.max_connections = *v;
  if (root["drain_timeout_ms"])
    if (auto v = r.uint(root["drain_timeout_ms"], "drain_timeout_ms", 0, 86'400'000)) cfg.drain_timeout_ms = *v;
  if (root["run_as"] && r.is_map(root["run_as"], "run_as")) {
    r.check_keys(root["run_as"], {"uid", "gid"}, "run_as");
    RunAs ra;
    if (root["run_as"]["uid"]) ra.uid = static_cast<std::uint32_t>(r.uint(root["run_as"]["uid"], "run_as.uid", 0, UINT32_MAX - 1).value_or(0));
    else r.error(root["run_as"], "run_as needs uid");
    ra.gid = ra.uid;
    if (root["run_as"]["gid"]) ra.gid = static_cast<std::uint32_t>(r.uint(root["run_as"]["gid"], "run_as.gid", 0, UINT32_MAX - 1).value_or(0));
    cfg.run_as = ra;
  }
  if (root["log"] && r.is_map(root["log"], "log")) {
    r.check_keys(root["log"], {"level", "access_log"}, "log");
    if (root["log"]["level"]) {
      if (auto s = r.str(root["log"]["level"], "log.level")) {
        static const std::set<std::string> levels{"trace", "debug", "info", "warn", "error"};
        if (!levels.count(*s)) r.error(root["log"]["level"], "log.level must be trace, debug, info, warn or error");
        cfg.log.level = *s;
      }
    }
    if (root["log"]["access_log"])
      if (auto s = r.str(root["log"]["access_log"], "log.access_log")) {
        cfg.log.access_log = *s;
        if (*s != "stdout" && *s != "stderr" && *s != "off") cfg.log.access_log = resolve_path(path, *s);
      }
  }
  if (root["tls"]) parse_tls(r, root["tls"], cfg);
  if (root["upstreams"]) parse_upstreams(r, root["upstreams"], cfg);
  if (root["policies"]) parse_policies(r, root["policies"], cfg);
  if (root["listeners"]) parse_listeners(r, root["listeners"], cfg);
  if (root["firewall"]) parse_firewall(r, root["firewall"], cfg);
  validate_cross(r, cfg, root);
  return cfg;
}

Config load(const std::string& text, const std::string& name) {
  Reader r(name);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    r.error(Location{e.mark.line + 1, e.mark.column + 1}, "YAML syntax: " + e.msg);
    throw ConfigError(r.errors());
  }
  Config cfg = parse(root, r, name);
  if (!r.errors().empty()) throw ConfigError(r.errors());
  cfg.warnings = r.warnings();
  return cfg;
}

}  // namespace

std::string Diagnostic::str() const {
  std::ostringstream o;
  o << file << ':' << loc.line << ':' << loc.col << ": " << (warning ? "warning: " : "") << message;
  return o.str();
}

ConfigError::ConfigError(std::vector<Diagnostic> d)
    : std::runtime_error(d.empty() ? "invalid config" : d.front().str()), diagnostics(std::move(d)) {}

bool Address::is_loopback() const {
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

std::string Address::str() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

const char* to_string(Protocol p) {
  switch (p) {
    case Protocol::tcp: return "tcp";
    case Protocol::http: return "http";
    case Protocol::kubernetes: return "kubernetes";
    case Protocol::docker: return "docker";
  }
  return "?";
}

const char* to_string(Underscores u) {
  switch (u) {
    case Underscores::drop: return "drop";
    case Underscores::reject: return "reject";
    case Underscores::allow: return "allow";
  }
  return "?";
}

const char* to_string(ForwardedHeaders f) {
  switch (f) {
    case ForwardedHeaders::replace: return "replace";
    case ForwardedHeaders::append: return "append";
  }
  return "?";
}

const char* to_string(ForwardIdentity f) {
  switch (f) {
    case ForwardIdentity::xfcc: return "xfcc";
    case ForwardIdentity::impersonate: return "impersonate";
    case ForwardIdentity::remote_user: return "remote_user";
    case ForwardIdentity::none: return "none";
  }
  return "?";
}

Config load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError({Diagnostic{path, {}, "cannot read the config file: " + std::string(std::strerror(errno)), false}});
  std::stringstream ss;
  ss << in.rdbuf();
  return load(ss.str(), path);
}

Config load_string(const std::string& text, const std::string& name) { return load(text, name); }

}  // namespace portcullis::config
