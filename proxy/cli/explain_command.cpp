// `portcullis explain` (CONFIG.md): decide one request offline against a config, the way the
// running proxy would, and say why: the normalised request, the decision, the deciding rule, and
// for a deny the closest rules with each failed condition.
// Exit codes: 0 explained (whatever the decision), 1 invalid input (config, arguments, certificate).
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "certs/tls.hpp"
#include "proxy/cli/commands.hpp"
#include "proxy/config.hpp"
#include "proxy/http/head_check.hpp"
#include "proxy/policy/docker.hpp"
#include "proxy/policy/kube.hpp"
#include "proxy/policy/normalize.hpp"
#include "proxy/policy/policy.hpp"

namespace portcullis::cli {
namespace {

struct ExplainArgs {
  std::string config_path, listener, cert, spiffe, user, body_file, method, target;
  std::vector<std::string> groups, headers;
};

struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(std::string("cannot read ") + what + " " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The identity the certificate would give once verified (explain does not verify it).
certs::Identity identity_from_pem(const std::string& path) {
  const std::string pem = read_file(path, "certificate");
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
  if (!cert) throw InputError("no PEM certificate in " + path);
  return certs::identity_from_x509(cert.get());
}

std::string lowercase(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(" \t") - b + 1));
}

std::vector<policy::Header> parse_headers(const std::vector<std::string>& raw) {
  std::vector<policy::Header> out;
  for (const auto& h : raw) {
    const auto colon = h.find(':');
    if (colon == std::string::npos || colon == 0) throw InputError("-H wants 'Name: value', got '" + h + "'");
    out.push_back({lowercase(h.substr(0, colon)), trim(std::string_view(h).substr(colon + 1))});
  }
  return out;
}

// host[:port] -> host, lowercased ("[::1]:80" -> "[::1]").
std::string host_without_port(std::string_view hostport) {
  if (!hostport.empty() && hostport.front() == '[') {
    const auto close = hostport.find(']');
    return lowercase(std::string(hostport.substr(0, close == std::string_view::npos ? hostport.size() : close + 1)));
  }
  return lowercase(std::string(hostport.substr(0, hostport.find(':'))));
}

std::string describe_peer(const certs::Identity* peer) {
  if (!peer) return "no client certificate";
  std::string out;
  auto add = [&](const std::string& label, const std::string& v) {
    if (v.empty()) return;
    if (!out.empty()) out += ", ";
    out += label + v;
  };
  add("spiffe ", peer->spiffe);
  add("user ", peer->user);
  for (const auto& g : peer->groups) add("group ", g);
  return out.empty() ? "a certificate without SPIFFE ID, CN or O" : out;
}

const char* outcome_name(policy::Decision::Outcome o) {
  switch (o) {
    case policy::Decision::Outcome::allow:
      return "allow";
    case policy::Decision::Outcome::deny:
      return "deny";
    case policy::Decision::Outcome::audit_deny:
      return "audit-deny (allowed: the policy is in audit mode)";
  }
  return "?";
}

const config::Listener& pick_listener(const config::Config& cfg, const std::string& name) {
  if (cfg.listeners.empty()) throw InputError("the config has no listeners");
  std::string names;
  for (const auto& l : cfg.listeners) {
    if (!name.empty() && l.name == name) return l;
    names += (names.empty() ? "" : ", ") + l.name;
  }
  if (!name.empty()) throw InputError("no listener named " + name + " (listeners: " + names + ")");
  for (const auto& l : cfg.listeners)
    if (!l.policy.empty()) return l;
  throw InputError("no listener has a policy");
}

int explain(const ExplainArgs& a) {
  const config::Config cfg = config::load_file(a.config_path);
  const config::Listener& listener = pick_listener(cfg, a.listener);
  const auto it = cfg.compiled_policies.find(listener.policy);
  if (listener.policy.empty() || it == cfg.compiled_policies.end())
    throw InputError("listener " + listener.name + " has no policy");
  const policy::Policy& pol = *it->second;

  std::optional<certs::Identity> identity;
  if (!a.cert.empty()) {
    if (!a.spiffe.empty() || !a.user.empty() || !a.groups.empty())
      throw InputError("--cert excludes --spiffe, --user and --group");
    identity = identity_from_pem(a.cert);
  } else if (!a.spiffe.empty() || !a.user.empty() || !a.groups.empty()) {
    identity.emplace();
    identity->spiffe = a.spiffe;
    identity->user = a.user;
    identity->groups = a.groups;
  }
  const certs::Identity* peer = identity ? &*identity : nullptr;
  std::vector<policy::Header> headers = parse_headers(a.headers);

  std::cout << "listener   " << listener.name << " (" << config::to_string(listener.protocol) << ", policy "
            << pol.name() << ")\n";
  std::cout << "peer       " << describe_peer(peer) << (a.cert.empty() ? "" : " (certificate not verified)") << "\n";

  auto refused = [](const std::string& why) {
    std::cout << "decision   refused before policy (400, connection closed)\nreason     " << why << "\n";
    return 0;
  };

  if (listener.protocol == config::Protocol::tcp) {
    const policy::Decision d = pol.decide_peer(peer);
    std::cout << "request    (tcp listener: only `from` is checked)\n";
    std::cout << "decision   " << outcome_name(d.outcome) << "\n";
    if (!d.rule.empty()) std::cout << "rule       " << d.rule << "\n";
    std::cout << "reason     " << d.reason << "\n";
    return 0;
  }

  const policy::NormalizedTarget target = policy::normalize_target(a.method, a.target);
  if (!target.ok) return refused(target.error);
  // The proxy requires Host; explain fills it in from an absolute-form target when not given.
  const bool has_host = std::any_of(headers.begin(), headers.end(), [](const auto& h) { return h.name == "host"; });
  if (!has_host) headers.push_back({"host", target.authority.empty() ? "localhost" : target.authority});
  if (auto why = http::check_request_fields(headers); !why.empty()) return refused(why);
  if (auto why = http::check_request_body(a.method, headers); !why.empty()) return refused(why);
  if (auto why = http::check_request_overrides(headers); !why.empty()) return refused(why);
  std::string host;
  for (const auto& h : headers)
    if (h.name == "host") host = host_without_port(h.value);
  if (!target.authority.empty() && host_without_port(target.authority) != host)
    return refused("absolute-form target names " + target.authority + " but Host is " + host);

  policy::Request request;
  request.peer = peer;
  request.method = a.method;
  request.host = host;
  request.path = target.path;
  request.query = target.query;
  request.headers = headers;
  std::cout << "request    " << a.method << " " << target.path << (target.query.empty() ? "" : "?" + target.query)
            << " (host " << host << ")\n";

  policy::KubeAttributes kube;
  policy::DockerAttributes docker;
  if (listener.protocol == config::Protocol::kubernetes) {
    const std::string* content_type = policy::find_header(headers, "content-type");
    kube = policy::resolve_kube(a.method, target.path, target.query,
                                content_type ? std::string_view(*content_type) : std::string_view());
    request.kube = &kube;
    std::cout << "kubernetes " << (kube.error.empty() ? policy::describe(kube) : "unresolvable: " + kube.error) << "\n";
  } else if (listener.protocol == config::Protocol::docker) {
    docker = policy::resolve_docker(a.method, target.path, target.query);
    std::string content_type;
    for (const auto& h : headers)
      if (h.name == "content-type") content_type = h.value;
    if (docker.body != policy::DockerBody::none) {
      if (a.body_file.empty()) throw InputError("this Docker request carries a body to inspect: pass --body FILE");
      const std::string body = read_file(a.body_file, "body");
      if (body.size() > listener.limits.inspect_body_bytes)
        return refused("body larger than inspect_body_bytes (" + std::to_string(listener.limits.inspect_body_bytes) +
                       ")");
      policy::inspect_docker_body(content_type.empty() ? "application/json" : content_type, body, docker);
    }
    request.docker = &docker;
    std::cout << "docker     action " << docker.action << " (" << docker.endpoint << ")\n";
  }

  const policy::Explanation e = pol.explain(request);
  std::cout << "decision   " << outcome_name(e.decision.outcome) << "\n";
  if (!e.decision.rule.empty()) std::cout << "rule       " << e.decision.rule << "\n";
  std::cout << "reason     " << e.decision.reason << "\n";
  if (!e.closest.empty()) {
    std::cout << "closest rules:\n";
    for (const auto& miss : e.closest) {
      std::cout << "  " << miss.rule << "\n";
      for (const auto& f : miss.failed) std::cout << "    - " << f << "\n";
    }
  }
  return 0;
}

}  // namespace

void register_explain_command(CLI::App& app) {
  auto args = std::make_shared<ExplainArgs>();
  auto* cmd = app.add_subcommand(
      "explain",
      "decide one request against a config: the decision, the deciding rule and why; for a deny, the "
      "closest rules and which of their conditions failed");
  cmd->add_option("-c,--config", args->config_path, "config file")->required();
  cmd->add_option("--listener", args->listener, "listener whose policy decides (default: the first with a policy)");
  auto* cert = cmd->add_option("--cert", args->cert, "the client certificate (PEM) the request would present");
  cmd->add_option("--spiffe", args->spiffe, "SPIFFE ID of the peer")->excludes(cert);
  cmd->add_option("--user", args->user, "certificate CN of the peer")->excludes(cert);
  cmd->add_option("--group", args->groups, "certificate O of the peer (repeatable)")
      ->allow_extra_args(false)
      ->excludes(cert);
  cmd->add_option("--body", args->body_file, "request body (Docker create requests are inspected)");
  cmd->add_option("-H,--header", args->headers, "request header 'Name: value' (repeatable)")->allow_extra_args(false);
  cmd->add_option("method", args->method, "request method, e.g. GET")->required();
  cmd->add_option("target", args->target, "request target, e.g. /api/v1/products?x=1")->required();
  cmd->callback([args] {
    int rc = 0;
    try {
      rc = explain(*args);
    } catch (const config::ConfigError& e) {
      for (const auto& d : e.diagnostics) std::cerr << d.str() << "\n";
      throw CLI::RuntimeError(1);
    } catch (const std::exception& e) {
      std::cerr << "portcullis: " << e.what() << "\n";
      throw CLI::RuntimeError(1);
    }
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace portcullis::cli
