// Inputs the fuzzers (tests/fuzz) found, and the config additions of the hardening work.
#include <catch2/catch.hpp>

#include "proxy/config.hpp"

using portcullis::config::ConfigError;
using portcullis::config::load_string;

namespace {
// One listener, one upstream, one policy: tests add a section at the end (line 7 on).
std::string minimal() {
  return R"(upstreams:
  app: { address: tcp://127.0.0.1:8080 }
listeners:
  - { name: a, address: 127.0.0.1:15006, upstream: app, policy: p }
policies:
  p: { rules: [ { name: r, http: { paths: ["/**"] } } ] }
)";
}
}  // namespace

// fuzz_config, first run: parse_tls / parse_upstreams / parse_policies held `const auto& x =
// it->second` where yaml-cpp's iterator returns a temporary proxy, so every later use read a
// dead stack object (ASan: stack-use-after-scope; GCC builds happened to work). This test reads
// each section's entries after the iteration step and fails under PORTCULLIS_SANITIZE=address.
TEST_CASE("fuzz regression: map sections are read through live YAML nodes", "[config][fuzz]") {
  auto cfg = load_string(R"(upstreams:
  app: { address: tcp://127.0.0.1:8080 }
  docker: { address: unix:///var/run/docker.sock }
listeners:
  - { name: a, address: 127.0.0.1:15006, upstream: app, policy: first }
  - { name: b, address: 127.0.0.1:15007, upstream: docker, policy: second }
policies:
  first:
    mode: audit
    rules: [ { name: r1, http: { paths: ["/a/**"] } } ]
  second:
    rules: [ { name: r2, http: { methods: [GET] } } ]
)",
                         "regress.yaml");
  REQUIRE(cfg.upstreams.at("app").port == 8080);
  REQUIRE(cfg.upstreams.at("docker").path == "/var/run/docker.sock");
  REQUIRE(cfg.policies.at("first").rules.at(0).name == "r1");
  REQUIRE(cfg.policies.at("first").mode == portcullis::policy::Mode::audit);
  REQUIRE(cfg.policies.at("second").rules.at(0).http.methods.at(0) == "GET");

  try {
    load_string("tls:\n  one: { cert: /nonexistent/a.crt, key: /nonexistent/a.key }\n  two: { cert: 5 }\n", "t.yaml");
    FAIL("missing certificate files were accepted");
  } catch (const ConfigError& e) {
    bool names_file = false;
    for (const auto& d : e.diagnostics) names_file |= d.message.find("/nonexistent/a.crt") != std::string::npos;
    REQUIRE(names_file);
  }
}

TEST_CASE("max_connections at the top is the process-wide connection cap", "[config][limits]") {
  const std::string rest = minimal();
  REQUIRE(load_string(rest, "c.yaml").max_connections == 0);  // derived from RLIMIT_NOFILE at run time
  REQUIRE(load_string("max_connections: 300\n" + rest, "c.yaml").max_connections == 300);
  try {
    load_string("max_connections: 0\n" + rest, "c.yaml");
    FAIL("max_connections: 0 was accepted");
  } catch (const ConfigError& e) {
    REQUIRE(e.diagnostics.at(0).str().rfind("c.yaml:1:", 0) == 0);
    REQUIRE(e.diagnostics.at(0).message.find("max_connections") != std::string::npos);
  }
}

// The same finding at the config level: `firewall.table: 1x` is refused with its position.
TEST_CASE("fuzz regression: firewall.table must start with a letter", "[config][fuzz]") {
  const std::string rest = minimal() + "firewall:\n  table: 1x\n";
  try {
    load_string(rest, "t.yaml");
    FAIL("a table name starting with a digit was accepted");
  } catch (const ConfigError& e) {
    REQUIRE(e.diagnostics.at(0).str().rfind("t.yaml:8:", 0) == 0);
    REQUIRE(e.diagnostics.at(0).message.find("must start with a letter") != std::string::npos);
  }
}

// A keyword of nft's language is refused with its position too (firewall::table_name_problem).
TEST_CASE("firewall.table may not be an nft keyword", "[config]") {
  try {
    load_string(minimal() + "firewall:\n  table: drop\n", "t.yaml");
    FAIL("an nft keyword was accepted as the table name");
  } catch (const ConfigError& e) {
    REQUIRE(e.diagnostics.at(0).str().rfind("t.yaml:8:", 0) == 0);
    REQUIRE(e.diagnostics.at(0).message.find("'drop' is a keyword of nft's language") != std::string::npos);
  }
}
