// Decision cost of the compiled allowlist as the rule count grows (issue 3). Not a test: prints
// ns/decision for 10, 1,000 and 10,000 rules, for a request that the last rule allows, one the
// first rule allows, and one that no rule allows, then the 10,000 / 10 ratios.
// Goal: 10,000 rules cost less than twice what 10 rules cost, and under 1 us.
//
//   cmake --build build --target portcullis-policy-bench && build/portcullis-policy-bench [iterations]
//
// Rule mix: a third exact paths, a third `*` patterns, a third `**` prefixes; identities rotate
// over exact SPIFFE IDs, SPIFFE patterns (`/ns/teamN/**`, shared by many rules), users and
// groups; methods rotate over GET, POST, PUT, DELETE.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "proxy/policy/policy.hpp"

using namespace portcullis;
using namespace portcullis::policy;

namespace {

const char* const methods[] = {"GET", "POST", "PUT", "DELETE"};

std::string exact_id(int i) {
  return "spiffe://cluster.local/ns/ns" + std::to_string(i % 50) + "/sa/sa" + std::to_string(i);
}
std::string team_id(int i) { return "spiffe://cluster.local/ns/team" + std::to_string(i % 100) + "/sa/worker"; }

RuleSpec make_rule(int i) {
  RuleSpec r;
  r.name = "rule-" + std::to_string(i);
  switch (i % 4) {
    case 0:
      r.from.spiffe = {exact_id(i)};
      break;
    case 1:
      r.from.spiffe = {"spiffe://cluster.local/ns/team" + std::to_string(i % 100) + "/**"};
      break;
    case 2:
      r.from.users = {"user" + std::to_string(i)};
      break;
    default:
      r.from.groups = {"group" + std::to_string(i % 20)};
      break;
  }
  r.has_http = true;
  r.http.methods = {methods[i % 4]};
  const std::string base = "/svc" + std::to_string(i);
  switch (i % 3) {
    case 0:
      r.http.paths = {base + "/items"};
      break;
    case 1:
      r.http.paths = {base + "/items/*"};
      break;
    default:
      r.http.paths = {base + "/**"};
      break;
  }
  return r;
}

// A peer and a path that rule i allows.
struct Probe {
  certs::Identity peer;
  std::string method, path;
};
Probe probe_for(int i) {
  Probe p;
  switch (i % 4) {
    case 0:
      p.peer.spiffe = exact_id(i);
      break;
    case 1:
      p.peer.spiffe = team_id(i);
      break;
    case 2:
      p.peer.user = "user" + std::to_string(i);
      break;
    default:
      p.peer.user = "someone";
      p.peer.groups = {"group" + std::to_string(i % 20)};
      break;
  }
  p.method = methods[i % 4];
  const std::string base = "/svc" + std::to_string(i);
  switch (i % 3) {
    case 0:
      p.path = base + "/items";
      break;
    case 1:
      p.path = base + "/items/42";
      break;
    default:
      p.path = base + "/static/css/site.css";
      break;
  }
  return p;
}

double ns_per_decision(const Policy& policy, const Probe& probe, bool expect_allow, long iterations) {
  Request r;
  r.peer = &probe.peer;
  r.method = probe.method;
  r.path = probe.path;
  r.host = "svc.cluster.local";
  if (policy.decide(r).allowed() != expect_allow) {
    std::fprintf(stderr, "unexpected decision for %s %s\n", probe.method.c_str(), probe.path.c_str());
    std::exit(1);
  }
  std::size_t sink = 0;
  const auto start = std::chrono::steady_clock::now();
  for (long k = 0; k < iterations; ++k) sink += policy.decide(r).reason.size();
  const auto elapsed = std::chrono::steady_clock::now() - start;
  if (sink == 0) std::puts("");  // keeps the loop observable
  return std::chrono::duration<double, std::nano>(elapsed).count() / static_cast<double>(iterations);
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 300000;
  const int sizes[] = {10, 1000, 10000};
  double results[3][3] = {};
  std::printf("%8s  %14s  %14s  %14s\n", "rules", "last rule", "first rule", "no rule");
  for (int s = 0; s < 3; ++s) {
    const int n = sizes[s];
    PolicySpec spec;
    spec.name = "bench";
    for (int i = 0; i < n; ++i) spec.rules.push_back(make_rule(i));
    const auto policy = Policy::compile(spec);
    Probe none = probe_for(n - 1);
    none.method = "PATCH";  // right peer and path, a method no rule names
    results[s][0] = ns_per_decision(*policy, probe_for(n - 1), true, iterations);
    results[s][1] = ns_per_decision(*policy, probe_for(0), true, iterations);
    results[s][2] = ns_per_decision(*policy, none, false, iterations);
    std::printf("%8d  %11.1f ns  %11.1f ns  %11.1f ns\n", n, results[s][0], results[s][1], results[s][2]);
  }
  std::printf("%8s  %13.2fx  %13.2fx  %13.2fx   (10,000 rules / 10 rules; goal < 2x and < 1000 ns)\n", "ratio",
              results[2][0] / results[0][0], results[2][1] / results[0][1], results[2][2] / results[0][2]);
  return 0;
}
