// Config validation: every kind of mistake gets FILE:LINE:COL and a message that says what to do.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "proxy/config.hpp"

using portcullis::config::ConfigError;
using portcullis::config::load_string;

namespace {

// A minimal valid config; tests replace one piece at a time.
std::string base(const std::string& listeners = "", const std::string& extra = "") {
  std::string l = listeners.empty() ? R"(listeners:
  - name: inbound
    address: 127.0.0.1:15006
    upstream: app
    policy: inbound
)"
                                    : listeners;
  return R"(upstreams:
  app: { address: tcp://127.0.0.1:8080 }
)" + l + R"(policies:
  inbound:
    rules:
      - name: everything
        http: { paths: ["/**"] }
)" + extra;
}

// base() with one listener 'inbound' of `protocol` whose last lines are `extra` (from line 9).
std::string listener(const std::string& extra, const std::string& protocol = "http") {
  return base("listeners:\n  - name: inbound\n    address: 127.0.0.1:15006\n    upstream: app\n    policy: inbound\n"
              "    protocol: " + protocol + "\n" + extra);
}

// The diagnostics of a config that must fail, joined.
std::string errors_of(const std::string& text) {
  try {
    load_string(text, "test.yaml");
  } catch (const ConfigError& e) {
    std::string all;
    for (const auto& d : e.diagnostics) all += d.str() + "\n";
    return all;
  }
  FAIL("config was accepted:\n" << text);
  return {};
}

}  // namespace

TEST_CASE("a minimal config loads with the documented defaults") {
  auto cfg = load_string(base(), "test.yaml");
  REQUIRE(cfg.listeners.size() == 1);
  const auto& l = cfg.listeners[0];
  CHECK(l.name == "inbound");
  CHECK(l.address.port == 15006);
  CHECK(l.protocol == portcullis::config::Protocol::http);
  CHECK(l.forward_identity == portcullis::config::ForwardIdentity::xfcc);
  CHECK(l.headers_with_underscores == portcullis::config::Underscores::drop);
  CHECK(l.client_certs == portcullis::certs::ClientCertMode::required);
  CHECK(l.limits.header_bytes == 65536);
  CHECK(l.limits.idle_timeout_ms == 60000);
  CHECK(l.limits.upstream_timeout_ms == 0);
  CHECK(cfg.admin.str() == "127.0.0.1:15000");
  CHECK(cfg.workers >= 1);
  CHECK(cfg.drain_timeout_ms == 10000);
  CHECK(cfg.log.access_log == "stdout");
  CHECK(cfg.compiled_policies.count("inbound") == 1);
}

TEST_CASE("drain_timeout_ms takes 0 to a day, and nothing else") {
  CHECK(load_string("drain_timeout_ms: 0\n" + base(), "test.yaml").drain_timeout_ms == 0);
  CHECK(load_string("drain_timeout_ms: 86400000\n" + base(), "test.yaml").drain_timeout_ms == 86400000);
  CHECK_THAT(errors_of("drain_timeout_ms: 86400001\n" + base()), Catch::Contains("test.yaml:1:19: drain_timeout_ms"));
  CHECK_THAT(errors_of("drain_timeout_ms: -1\n" + base()), Catch::Contains("test.yaml:1:19: drain_timeout_ms"));
  CHECK_THAT(errors_of("drain_timeout_ms: 10s\n" + base()), Catch::Contains("test.yaml:1:19: drain_timeout_ms"));
}

TEST_CASE("errors carry the file, line and column of the offending key") {
  auto text = base() + "bogus: 1\n";
  auto e = errors_of(text);
  CHECK_THAT(e, Catch::Contains("test.yaml:13:1: unknown key 'bogus' in the config"));
}

TEST_CASE("unknown keys are errors at every level, never ignored") {
  CHECK_THAT(errors_of(base(R"(listeners:
  - name: inbound
    address: 127.0.0.1:15006
    upstream: app
    policy: inbound
    limts: { idle_timeout_ms: 5 }
)")),
             Catch::Contains("test.yaml:8:5: unknown key 'limts' in listener 'inbound'"));
  auto policy_typo = R"(upstreams:
  app: { address: tcp://127.0.0.1:8080 }
listeners:
  - { name: inbound, address: 127.0.0.1:15006, upstream: app, policy: inbound }
policies:
  inbound:
    rules:
      - name: r
        http: { path: ["/admin"] }
)";
  // A misspelt condition must not silently become "any path".
  CHECK_THAT(errors_of(policy_typo), Catch::Contains("test.yaml:9:17: unknown key 'path' in policies.inbound rule 'r' http"));
}

TEST_CASE("wrong types are reported with what was expected") {
  auto e = errors_of(base(R"(listeners:
  - name: inbound
    address: 127.0.0.1:15006
    upstream: app
    policy: inbound
    limits: { idle_timeout_ms: soon }
)"));
  CHECK_THAT(e, Catch::Contains("must be a whole number, not 'soon'"));
  CHECK_THAT(errors_of(base("", "workers: lots\n")), Catch::Contains("workers (a number or auto) must be a whole number"));
  CHECK_THAT(errors_of(base("", "log: { level: loud }\n")), Catch::Contains("log.level must be trace, debug, info, warn or error"));
}

TEST_CASE("references to undefined tls bundles, upstreams and policies") {
  auto e = errors_of(base(R"(listeners:
  - name: inbound
    address: 127.0.0.1:15006
    tls: missing
    upstream: nowhere
    policy: nobody
)"));
  CHECK_THAT(e, Catch::Contains("test.yaml:6:10: listener 'inbound': tls bundle 'missing' is not defined under tls:"));
  CHECK_THAT(e, Catch::Contains("test.yaml:7:15: listener 'inbound': upstream 'nowhere' is not defined under upstreams:"));
  CHECK_THAT(e, Catch::Contains("test.yaml:8:13: listener 'inbound': policy 'nobody' is not defined under policies:"));
}

TEST_CASE("every listener needs a policy: default deny is explicit") {
  auto e = errors_of(base(R"(listeners:
  - name: inbound
    address: 127.0.0.1:15006
    upstream: app
)"));
  CHECK_THAT(e, Catch::Contains("policy is required"));
}

TEST_CASE("missing certificate files are reported at the key that names them") {
  auto e = errors_of(base("", "tls:\n  w: { cert: /nonexistent/tls.crt, key: /nonexistent/tls.key, ca: /nonexistent/ca.crt }\n"));
  CHECK_THAT(e, Catch::Contains("tls.w.cert: file '/nonexistent/tls.crt' does not exist or is not a regular file"));
  CHECK_THAT(e, Catch::Contains("tls.w.ca: file '/nonexistent/ca.crt' does not exist"));
}

TEST_CASE("duplicate listener addresses, including a wildcard overlapping a specific address") {
  auto e = errors_of(base(R"(listeners:
  - { name: a, address: 127.0.0.1:15006, upstream: app, policy: inbound }
  - { name: b, address: 127.0.0.1:15006, upstream: app, policy: inbound }
  - { name: c, address: 0.0.0.0:15007, upstream: app, policy: inbound, plaintext: allow }
  - { name: d, address: 127.0.0.1:15007, upstream: app, policy: inbound }
  - { name: a, address: 127.0.0.1:15008, upstream: app, policy: inbound }
)"));
  CHECK_THAT(e, Catch::Contains("listener 'b' address 127.0.0.1:15006 conflicts with listener 'a'"));
  CHECK_THAT(e, Catch::Contains("listener 'd' address 127.0.0.1:15007 conflicts with listener 'c' (0.0.0.0:15007)"));
  CHECK_THAT(e, Catch::Contains("duplicate listener name 'a'"));
}

TEST_CASE("a plaintext listener off loopback needs plaintext: allow") {
  auto e = errors_of(base(R"(listeners:
  - { name: open, address: 0.0.0.0:8080, upstream: app, policy: inbound }
)"));
  CHECK_THAT(e, Catch::Contains("test.yaml:4:28: listener 'open': a plaintext listener on 0.0.0.0:8080 is off loopback; add tls: or set plaintext: allow"));
  CHECK_NOTHROW(load_string(base(R"(listeners:
  - { name: open, address: 0.0.0.0:8080, upstream: app, policy: inbound, plaintext: allow }
)"),
                            "test.yaml"));
}

TEST_CASE("duplicate keys in YAML are refused rather than one silently winning") {
  auto e = errors_of(base("", "log: { level: info, level: debug }\n"));
  CHECK_THAT(e, Catch::Contains("duplicate key 'level' in log"));
}

TEST_CASE("upstream addresses must name a scheme") {
  auto text = base();
  text.replace(text.find("tcp://127.0.0.1:8080"), 20, "127.0.0.1:8080");
  CHECK_THAT(errors_of(text), Catch::Contains("must start with tcp://, tls:// or unix://, or be original_dst"));
  text = base();
  text.replace(text.find("tcp://127.0.0.1:8080"), 20, "unix://relative.sock");
  CHECK_THAT(errors_of(text), Catch::Contains("needs an absolute path"));
  text = base();
  text.replace(text.find("tcp://127.0.0.1:8080"), 20, "tcp://127.0.0.1");
  CHECK_THAT(errors_of(text), Catch::Contains("needs a host and a port"));
}

TEST_CASE("rules whose conditions the listener cannot see are errors") {
  auto tcp_with_http = base(R"(listeners:
  - { name: l4, address: 127.0.0.1:15006, upstream: app, policy: inbound, protocol: tcp }
)");
  CHECK_THAT(errors_of(tcp_with_http), Catch::Contains("(protocol tcp) checks only from:"));
}

TEST_CASE("from: with all lists empty would match no one and is refused") {
  auto text = base();
  text.replace(text.find("        http:"), 0, "        from: { users: [] }\n");
  CHECK_THAT(errors_of(text), Catch::Contains("lists are all empty"));
}

TEST_CASE("YAML syntax errors have a position") {
  CHECK_THAT(errors_of("listeners: [\n  - a\n"), Catch::Contains("test.yaml:"));
  CHECK_THAT(errors_of("listeners: [\n  - a\n"), Catch::Contains("YAML syntax"));
}

TEST_CASE("all errors are reported at once, not just the first") {
  auto e = errors_of(base("", "workers: 0\nlog: { level: loud }\n"));
  CHECK_THAT(e, Catch::Contains("workers"));
  CHECK_THAT(e, Catch::Contains("log.level"));
}

TEST_CASE("a listener unreachable under the firewall's ingress is a warning") {
  auto text = base(R"(listeners:
  - { name: pub, address: 0.0.0.0:15006, upstream: app, policy: inbound, plaintext: allow }
)",
                   R"(firewall:
  ingress:
    default: drop
    allow:
      - { cidrs: [10.0.0.0/8], ports: [8080] }
)");
  auto cfg = load_string(text, "test.yaml");
  REQUIRE(cfg.warnings.size() == 1);
  CHECK_THAT(cfg.warnings[0].str(), Catch::Contains("warning: listener 'pub' on port 15006 is unreachable"));
}

TEST_CASE("firewall CIDRs are validated") {
  auto text = base("", R"(firewall:
  ingress:
    allow:
      - { cidrs: [10.0.0.0/33, not-an-ip], ports: [8080] }
)");
  auto e = errors_of(text);
  CHECK_THAT(e, Catch::Contains("'10.0.0.0/33' is not an IPv4 or IPv6 CIDR"));
  CHECK_THAT(e, Catch::Contains("'not-an-ip' is not an IPv4 or IPv6 CIDR"));
}

TEST_CASE("relative file paths are relative to the config file") {
  auto dir = std::filesystem::temp_directory_path() / "portcullis-config-test";
  std::filesystem::create_directories(dir);
  for (auto f : {"a.crt", "a.key", "ca.crt"}) std::ofstream(dir / f) << "x";
  auto text = base("", "tls:\n  w: { cert: a.crt, key: a.key, ca: ca.crt }\n");
  auto cfg = load_string(text, (dir / "portcullis.yaml").string());
  CHECK(cfg.tls.at("w").cert == (dir / "a.crt").string());
}

TEST_CASE("headers_with_underscores takes drop, reject or allow, and not on tcp listeners") {
  CHECK(load_string(listener("    headers_with_underscores: reject\n"), "test.yaml").listeners[0].headers_with_underscores ==
        portcullis::config::Underscores::reject);
  CHECK_THAT(errors_of(listener("    headers_with_underscores: strip\n")),
             Catch::Contains("test.yaml:9:31: listener 'inbound': headers_with_underscores must be drop, reject or allow"));
  CHECK_THAT(errors_of(listener("    headers_with_underscores: allow\n", "tcp")),
             Catch::Contains("a tcp listener reads no headers"));
}

TEST_CASE("forwarded_headers takes replace (the default) or append, and not on tcp listeners") {
  CHECK(load_string(listener(""), "test.yaml").listeners[0].forwarded_headers ==
        portcullis::config::ForwardedHeaders::replace);
  CHECK(load_string(listener("    forwarded_headers: append\n"), "test.yaml").listeners[0].forwarded_headers ==
        portcullis::config::ForwardedHeaders::append);
  CHECK_THAT(errors_of(listener("    forwarded_headers: keep\n")),
             Catch::Contains("test.yaml:9:24: listener 'inbound': forwarded_headers must be replace or append"));
  CHECK_THAT(errors_of(listener("    forwarded_headers: append\n", "tcp")),
             Catch::Contains("a tcp listener forwards no headers"));
}

TEST_CASE("an upstream's verify_spiffe patterns are checked like from.spiffe ones") {
  auto upstream = [](const std::string& patterns) {
    std::string text = base("", "tls:\n  mesh: { cert: a.crt, key: a.key, ca: ca.crt }\n");
    const std::string app = "  app: { address: tcp://127.0.0.1:8080 }\n";
    return text.replace(text.find(app), app.size(),
                        app + "  peer: { address: \"tls://10.0.0.1:15006\", tls: mesh, verify_spiffe: " + patterns + " }\n");
  };
  // A pattern that can never match would have failed every connection to the upstream with 502.
  auto e = errors_of(upstream("[\"spiffe://cluster.local/ns/*/sa/web\", \"cluster.local/ns/shop\", \"spiffe://td/a*b\"]"));
  CHECK_THAT(e, Catch::Contains("test.yaml:3:109: upstreams.peer.verify_spiffe: spiffe pattern \"cluster.local/ns/shop\" must start with spiffe://"));
  CHECK_THAT(e, Catch::Contains("verify_spiffe: spiffe pattern \"spiffe://td/a*b\": "));
  CHECK_THAT(e, !Catch::Contains("spiffe://cluster.local/ns/*/sa/web"));
  CHECK_THAT(errors_of(upstream("[\"spiffe:///ns/x\"]")), Catch::Contains("has no trust domain"));
}

TEST_CASE("a kubernetes listener must name the client to the apiserver") {
  for (const char* mode : {"none", "xfcc"}) {
    std::string text = base(std::string("listeners:\n  - name: kube\n    address: 127.0.0.1:8443\n    upstream: app\n"
                                        "    policy: inbound\n    protocol: kubernetes\n    forward_identity: ") + mode + "\n");
    CHECK_THAT(errors_of(text), Catch::Contains("must name the client to the apiserver (impersonate or remote_user)"));
  }
}

// Red-team finding (session 13): `meta skgid` matches the socket's fsgid, which a process with
// the gid as a supplementary group can take through a setgid binary of its own.
TEST_CASE("firewall.proxy_gid gets a warning") {
  auto cfg = load_string(base("", "firewall:\n  proxy_uid: 1337\n  proxy_gid: 1337\n"), "test.yaml");
  REQUIRE(cfg.warnings.size() == 1);
  CHECK_THAT(cfg.warnings[0].str(), Catch::Contains("firewall.proxy_gid exempts from interception every process"));
  CHECK(load_string(base("", "firewall:\n  proxy_uid: 1337\n"), "test.yaml").warnings.empty());
}

namespace {
// base() with one more policy `k` holding one kubernetes rule `r` written as `kubernetes`.
std::string with_kube_rule(const std::string& kubernetes) {
  std::string text = base();
  text.replace(text.find("policies:\n"), std::string("policies:\n").size(),
               "policies:\n  k:\n    rules:\n      - name: r\n        kubernetes: " + kubernetes + "\n");
  return text;
}
}  // namespace

TEST_CASE("an http: rule on a kubernetes or docker listener gets a warning") {
  // Red-team (kube) finding 11: methods [GET] admits a WebSocket exec; on a docker listener no
  // body check applies to what an http: rule allows.
  for (const char* protocol : {"kubernetes", "docker"}) {
    auto cfg = load_string(listener("", protocol), "test.yaml");
    REQUIRE(cfg.warnings.size() == 1);
    CHECK_THAT(cfg.warnings[0].str(), Catch::Contains("test.yaml:4:5: warning: policy 'inbound' rule 'everything' is an "
                                                      "http: rule on " + std::string(protocol) + " listener 'inbound'"));
  }
  CHECK(load_string(listener(""), "test.yaml").warnings.empty());
}

TEST_CASE("a kubernetes rule granting nodes/proxy gets a warning") {
  CHECK(load_string(base(), "test.yaml").warnings.empty());
  auto cfg = load_string(with_kube_rule("{ verbs: [get], resources: [nodes/proxy] }"), "test.yaml");
  REQUIRE(cfg.warnings.size() == 1);
  CHECK_THAT(cfg.warnings[0].str(), Catch::Contains("grants nodes/proxy: it reaches the kubelet's API"));
}

TEST_CASE("a kubernetes rule granting update without create on a resource that PUT creates gets a warning") {
  // Red-team (kube) finding 4: a PUT of a missing rolebinding creates it once the apiserver's own
  // RBAC allows create; the rule that granted update never saw a create.
  auto cfg = load_string(
      with_kube_rule("{ verbs: [get, update], resources: [pods, rolebindings.rbac.authorization.k8s.io, services, leases.*] }"),
      "test.yaml");
  REQUIRE(cfg.warnings.size() == 3);
  CHECK_THAT(cfg.warnings[0].str(),
             Catch::Contains("rule 'r' grants update on rolebindings.rbac.authorization.k8s.io but not create: a PUT of a "
                             "missing object creates it"));
  CHECK_THAT(cfg.warnings[1].str(), Catch::Contains("grants update on services but not create"));
  CHECK_THAT(cfg.warnings[2].str(), Catch::Contains("grants update on leases.* but not create"));
  for (const char* fine : {"{ verbs: [get, update, create], resources: [services] }", "{ verbs: ['*'], resources: ['*'] }",
                           "{ verbs: [update], resources: [pods, deployments.apps, widgets.example.com] }",
                           "{ verbs: [get, patch], resources: [services] }"})
    CHECK(load_string(with_kube_rule(fine), "test.yaml").warnings.empty());
  CHECK(load_string(with_kube_rule("{ verbs: [update], resources: ['*'] }"), "test.yaml").warnings.size() == 1);
}
