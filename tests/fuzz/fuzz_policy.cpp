// The policy matcher: random rules x random requests. Whatever compiles must decide every request
// without throwing; an audit-mode policy never denies; a deny always carries a reason; explain()
// reaches the same decision as decide().
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>
#include <vector>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/kube.hpp"
#include "proxy/policy/policy.hpp"
#include "tests/fuzz/fuzz_check.hpp"

namespace {
using namespace portcullis;

// Mostly plausible words, sometimes random bytes, so both matching and edge cases are reached.
std::string word(FuzzedDataProvider& p, std::initializer_list<const char*> choices) {
  if (p.ConsumeIntegralInRange<int>(0, 3) == 0) return p.ConsumeRandomLengthString(24);
  std::vector<const char*> v(choices);
  return v[p.ConsumeIntegralInRange<std::size_t>(0, v.size() - 1)];
}

std::vector<std::string> words(FuzzedDataProvider& p, std::initializer_list<const char*> choices) {
  std::vector<std::string> out(p.ConsumeIntegralInRange<int>(0, 3));
  for (auto& w : out) w = word(p, choices);
  return out;
}

policy::RuleSpec rule(FuzzedDataProvider& p, int i) {
  policy::RuleSpec r;
  r.name = "r" + std::to_string(i);
  r.from.any = p.ConsumeBool();
  r.from.spiffe = words(p, {"spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/**", "spiffe://x/*"});
  r.from.users = words(p, {"alice", "bob", "*"});
  r.from.groups = words(p, {"ops", "dev"});
  switch (p.ConsumeIntegralInRange<int>(0, 3)) {
    case 1:
      r.has_http = true;
      r.http.methods = words(p, {"GET", "POST", "HEAD", "*"});
      r.http.paths = words(p, {"/", "/api/*", "/api/**", "/static/**", "/a/*/b", "/x%2Fy", "/**"});
      r.http.hosts = words(p, {"example.com", "*.example.com", "*"});
      if (p.ConsumeBool()) r.http.headers.push_back({word(p, {"x-tenant", "accept"}), words(p, {"blue", "*"})});
      break;
    case 2:
      r.has_kubernetes = true;
      r.kubernetes.verbs = words(p, {"get", "list", "watch", "create", "*"});
      r.kubernetes.resources = words(p, {"pods", "pods/log", "deployments.apps", "*", "*/status"});
      r.kubernetes.namespaces = words(p, {"prod", "default", "*"});
      r.kubernetes.names = words(p, {"web", "*"});
      r.kubernetes.non_resource_urls = words(p, {"/version", "/api", "/apis/*", "/openapi/**"});
      break;
    case 3:
      r.has_docker = true;
      r.docker.actions = words(p, {"read", "container.create", "container.start", "image.pull", "*"});
      r.docker.images = words(p, {"docker.io/library/*", "alpine", "*"});
      r.docker.bind_sources = words(p, {"/srv/**", "/tmp/*"});
      r.docker.allow = words(p, {"privileged", "cap_add", "host_network", "devices"});
      break;
    default:
      break;
  }
  return r;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider p(data, size);
  policy::PolicySpec spec;
  spec.name = "fuzz";
  spec.mode = p.ConsumeBool() ? policy::Mode::audit : policy::Mode::enforce;
  int n = p.ConsumeIntegralInRange<int>(0, 6);
  for (int i = 0; i < n; ++i) spec.rules.push_back(rule(p, i));
  std::shared_ptr<const policy::Policy> pol;
  try {
    pol = policy::Policy::compile(spec);
  } catch (const std::exception&) {
    return 0;  // an invalid spec is a config error, reported at load
  }
  FUZZ_CHECK(pol);

  int requests = p.ConsumeIntegralInRange<int>(1, 4);
  for (int k = 0; k < requests; ++k) {
    certs::Identity id;
    id.spiffe = word(p, {"spiffe://cluster.local/ns/a/sa/b", "spiffe://x/y", ""});
    id.user = word(p, {"alice", "bob"});
    id.groups = words(p, {"ops", "dev"});
    bool with_peer = p.ConsumeBool();
    std::string method = word(p, {"GET", "POST", "HEAD", "DELETE", "PUT"});
    std::string host = word(p, {"example.com", "a.example.com", ""});
    std::string path = word(p, {"/", "/api/x", "/api/v1/namespaces/prod/pods/web", "/v1.43/containers/create",
                                "/static/a/b", "/version"});
    std::string query = word(p, {"", "watch=true", "fieldSelector=metadata.name%3Dweb"});
    std::vector<policy::Header> headers;
    if (p.ConsumeBool()) headers.push_back({word(p, {"x-tenant", "accept"}), word(p, {"blue", "red"})});
    policy::Request req;
    req.peer = with_peer ? &id : nullptr;
    req.method = method;
    req.host = host;
    req.path = path;
    req.query = query;
    req.headers = headers;
    policy::KubeAttributes kube;
    policy::DockerAttributes docker;
    int kind = p.ConsumeIntegralInRange<int>(0, 2);
    if (kind == 1) {
      kube = policy::resolve_kube(method, path, query);
      req.kube = &kube;
    } else if (kind == 2) {
      docker = policy::resolve_docker(method, path, query);
      req.docker = &docker;
    }
    auto d = pol->decide(req);
    if (spec.mode == policy::Mode::audit) FUZZ_CHECK(d.allowed());
    if (!d.allowed()) FUZZ_CHECK(!d.reason.empty());
    auto e = pol->explain(req);
    FUZZ_CHECK(e.decision.outcome == d.outcome);
    FUZZ_CHECK(e.decision.rule == d.rule);
  }
  return 0;
}
