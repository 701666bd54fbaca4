// The compiled matcher: identities (SPIFFE patterns, users, groups, omitted `from`, `any`),
// HTTP conditions (AND within a rule, OR across rules), audit mode, explain(), compile errors.
#include "proxy/policy/policy.hpp"

#include <catch2/catch.hpp>
#include <random>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/kube.hpp"

using namespace portcullis;
using namespace portcullis::policy;
using Outcome = Decision::Outcome;

namespace {

certs::Identity spiffe_peer(std::string id) {
  certs::Identity p;
  p.spiffe = std::move(id);
  return p;
}
certs::Identity user_peer(std::string cn, std::vector<std::string> groups = {}) {
  certs::Identity p;
  p.user = std::move(cn);
  p.groups = std::move(groups);
  return p;
}

RuleSpec http_rule(std::string name, FromSpec from, std::vector<std::string> methods, std::vector<std::string> paths) {
  RuleSpec r;
  r.name = std::move(name);
  r.from = std::move(from);
  r.has_http = true;
  r.http.methods = std::move(methods);
  r.http.paths = std::move(paths);
  return r;
}
FromSpec from_spiffe(std::vector<std::string> ids) {
  FromSpec f;
  f.spiffe = std::move(ids);
  return f;
}

std::shared_ptr<const Policy> compile(std::vector<RuleSpec> rules, Mode mode = Mode::enforce) {
  PolicySpec spec;
  spec.name = "test";
  spec.mode = mode;
  spec.rules = std::move(rules);
  return Policy::compile(spec);
}

Request req(const certs::Identity* peer, std::string_view method, std::string_view path,
            std::string_view host = "svc.local", std::span<const Header> headers = {}) {
  Request r;
  r.peer = peer;
  r.method = method;
  r.path = path;
  r.host = host;
  r.headers = headers;
  return r;
}

const std::string frontend = "spiffe://cluster.local/ns/shop/sa/frontend";

}  // namespace

TEST_CASE("an allowlist: what no rule allows is denied, with the rule and reason named") {
  auto p = compile({http_rule("frontend-reads", from_spiffe({frontend}), {"GET"}, {"/api/products"})});
  auto fe = spiffe_peer(frontend);
  auto other = spiffe_peer("spiffe://cluster.local/ns/x/sa/y");

  Decision ok = p->decide(req(&fe, "GET", "/api/products"));
  CHECK(ok.outcome == Outcome::allow);
  CHECK(ok.rule == "frontend-reads");
  CHECK(ok.reason == "rule frontend-reads allows GET /api/products for " + frontend);

  Decision no = p->decide(req(&other, "GET", "/admin"));
  CHECK(no.outcome == Outcome::deny);
  CHECK_FALSE(no.allowed());
  CHECK(no.rule.empty());
  CHECK(no.reason == "no rule allows GET /admin for spiffe://cluster.local/ns/x/sa/y");

  CHECK(p->decide(req(&other, "GET", "/api/products")).outcome == Outcome::deny);
  CHECK(p->decide(req(&fe, "GET", "/api/products/1")).outcome == Outcome::deny);
  CHECK(compile({})->decide(req(&fe, "GET", "/")).outcome == Outcome::deny);

  // With `access_log: off` an allow is not written anywhere, so it needs no reason text; a
  // denial still gets its full reason (it is always logged and sent in the 403).
  auto quiet = req(&fe, "GET", "/api/products");
  quiet.explain_allow = false;
  Decision quiet_ok = p->decide(quiet);
  CHECK(quiet_ok.outcome == Outcome::allow);
  CHECK(quiet_ok.rule == "frontend-reads");
  CHECK(quiet_ok.reason.empty());
  auto quiet_no = req(&other, "GET", "/admin");
  quiet_no.explain_allow = false;
  CHECK(p->decide(quiet_no).reason == "no rule allows GET /admin for spiffe://cluster.local/ns/x/sa/y");
}

TEST_CASE("SPIFFE patterns: * is one segment, ** any depth") {
  auto p = compile({
      http_rule("one", from_spiffe({"spiffe://cluster.local/ns/*/sa/frontend"}), {}, {"/one"}),
      http_rule("deep", from_spiffe({"spiffe://cluster.local/ns/ops/**"}), {}, {"/deep"}),
      http_rule("anytd", from_spiffe({"spiffe://*/ns/shop/sa/batch"}), {}, {"/td"}),
  });
  auto a = spiffe_peer("spiffe://cluster.local/ns/shop/sa/frontend");
  auto b = spiffe_peer("spiffe://cluster.local/ns/shop/extra/sa/frontend");
  auto ops = spiffe_peer("spiffe://cluster.local/ns/ops/sa/deployer");
  auto ops_ns = spiffe_peer("spiffe://cluster.local/ns/ops");
  auto opsx = spiffe_peer("spiffe://cluster.local/ns/opsx/sa/deployer");
  auto batch = spiffe_peer("spiffe://other.domain/ns/shop/sa/batch");

  CHECK(p->decide(req(&a, "GET", "/one")).allowed());
  CHECK_FALSE(p->decide(req(&b, "GET", "/one")).allowed());
  CHECK(p->decide(req(&ops, "GET", "/deep")).allowed());
  CHECK(p->decide(req(&ops_ns, "GET", "/deep")).allowed());  // ** includes zero segments
  CHECK_FALSE(p->decide(req(&opsx, "GET", "/deep")).allowed());
  CHECK(p->decide(req(&batch, "GET", "/td")).allowed());
  CHECK_FALSE(p->decide(req(&a, "GET", "/deep")).allowed());
}

TEST_CASE("from lists are OR: spiffe, users (CN) and groups (O), all exact") {
  FromSpec from;
  from.spiffe = {frontend};
  from.users = {"alice"};
  from.groups = {"ops"};
  auto p = compile({http_rule("mixed", from, {}, {})});
  auto fe = spiffe_peer(frontend);
  auto alice = user_peer("alice");
  auto bob_ops = user_peer("bob", {"dev", "ops"});
  auto bob = user_peer("bob", {"dev", "Ops"});
  auto alice_upper = user_peer("Alice");

  CHECK(p->decide(req(&fe, "GET", "/x")).rule == "mixed");
  CHECK(p->decide(req(&alice, "GET", "/x")).rule == "mixed");
  CHECK(p->decide(req(&bob_ops, "GET", "/x")).rule == "mixed");
  CHECK_FALSE(p->decide(req(&bob, "GET", "/x")).allowed());
  CHECK_FALSE(p->decide(req(&alice_upper, "GET", "/x")).allowed());
  CHECK_FALSE(p->decide(req(nullptr, "GET", "/x")).allowed());
  CHECK(p->decide(req(&bob, "GET", "/x")).reason == "no rule allows GET /x for user bob (groups [dev, Ops])");
}

TEST_CASE("omitted from = any verified peer, and any: true = everyone, even without a certificate") {
  RuleSpec verified = http_rule("verified", {}, {"GET"}, {"/v"});
  FromSpec anyone;
  anyone.any = true;
  RuleSpec open = http_rule("open", anyone, {"GET"}, {"/healthz"});
  auto p = compile({verified, open});
  auto someone = user_peer("whoever");
  certs::Identity bare;  // verified, but neither SPIFFE ID nor CN

  CHECK(p->decide(req(&someone, "GET", "/v")).rule == "verified");
  CHECK(p->decide(req(&bare, "GET", "/v")).rule == "verified");
  Decision d = p->decide(req(nullptr, "GET", "/v"));
  CHECK_FALSE(d.allowed());
  CHECK(d.reason == "no rule allows GET /v for a peer without a verified client certificate");
  CHECK(p->decide(req(nullptr, "GET", "/healthz")).rule == "open");
  CHECK(p->decide(req(&someone, "GET", "/healthz")).rule == "open");
}

TEST_CASE("http fields are AND within a rule, rules are OR") {
  RuleSpec r = http_rule("all", {}, {"GET", "HEAD"}, {"/api/*"});
  r.http.hosts = {"catalog.shop.svc"};
  r.http.headers = {{"x-tenant", {"blue", "green"}}};
  auto p = compile({r, http_rule("posts", {}, {"POST"}, {"/upload"})});
  auto peer = user_peer("u");
  const std::vector<Header> blue = {{"x-tenant", "blue"}};
  const std::vector<Header> red = {{"x-tenant", "red"}};
  const std::vector<Header> blue_and_red = {{"x-tenant", "blue"}, {"x-tenant", "red"}};

  CHECK(p->decide(req(&peer, "GET", "/api/a", "catalog.shop.svc", blue)).rule == "all");
  CHECK(p->decide(req(&peer, "HEAD", "/api/a", "catalog.shop.svc", blue)).rule == "all");
  CHECK_FALSE(p->decide(req(&peer, "PUT", "/api/a", "catalog.shop.svc", blue)).allowed());
  CHECK_FALSE(p->decide(req(&peer, "GET", "/api/a/b", "catalog.shop.svc", blue)).allowed());
  CHECK_FALSE(p->decide(req(&peer, "GET", "/api/a", "other.svc", blue)).allowed());
  CHECK_FALSE(p->decide(req(&peer, "GET", "/api/a", "catalog.shop.svc", red)).allowed());
  CHECK_FALSE(p->decide(req(&peer, "GET", "/api/a", "catalog.shop.svc")).allowed());
  // A second copy of the header could be the one the upstream reads: every copy must pass.
  CHECK_FALSE(p->decide(req(&peer, "GET", "/api/a", "catalog.shop.svc", blue_and_red)).allowed());
  CHECK(p->decide(req(&peer, "POST", "/upload", "anything")).rule == "posts");
}

TEST_CASE("methods are exact and case-sensitive") {
  auto p = compile({http_rule("get", {}, {"GET"}, {})});
  auto peer = user_peer("u");
  CHECK(p->decide(req(&peer, "GET", "/")).allowed());
  CHECK_FALSE(p->decide(req(&peer, "get", "/")).allowed());
  CHECK_FALSE(p->decide(req(&peer, "GETX", "/")).allowed());
}

TEST_CASE("empty lists mean any, and a rule without http allows any request of its peers") {
  RuleSpec bare;
  bare.name = "alice-anything";
  bare.from.users = {"alice"};
  RuleSpec empty_http = http_rule("bob-anything", {}, {}, {});
  empty_http.from.users = {"bob"};
  auto p = compile({bare, empty_http});
  auto alice = user_peer("alice");
  auto bob = user_peer("bob");
  CHECK(p->decide(req(&alice, "DELETE", "/any/thing", "h")).rule == "alice-anything");
  CHECK(p->decide(req(&bob, "PATCH", "/", "x")).rule == "bob-anything");
  CHECK(p->decide(req(&bob, "OPTIONS", "*", "x")).rule == "bob-anything");
}

TEST_CASE("path patterns: exact, * one non-empty segment, ** any depth including none") {
  auto p = compile({http_rule("paths", {}, {}, {"/api/v1/products", "/api/v1/products/*", "/static/**", "/"})});
  auto peer = user_peer("u");
  auto allowed = [&](std::string_view path) { return p->decide(req(&peer, "GET", path)).allowed(); };
  CHECK(allowed("/api/v1/products"));
  CHECK(allowed("/api/v1/products/42"));
  CHECK_FALSE(allowed("/api/v1/products/"));  // `*` needs a non-empty segment
  CHECK_FALSE(allowed("/api/v1/products/42/reviews"));
  CHECK_FALSE(allowed("/api/v1/product"));
  CHECK(allowed("/static"));  // `**` matches zero segments
  CHECK(allowed("/static/"));
  CHECK(allowed("/static/css/site.css"));
  CHECK_FALSE(allowed("/staticfiles"));
  CHECK_FALSE(allowed("/Static/a"));  // case-sensitive
  CHECK(allowed("/"));
  CHECK_FALSE(allowed("*"));  // OPTIONS * is not a path any path rule names
  auto all = compile({http_rule("all", {}, {}, {"/**"})});
  CHECK(all->decide(req(&peer, "GET", "/")).allowed());
  CHECK(all->decide(req(&peer, "GET", "/a/b/c")).allowed());
}

TEST_CASE("hosts: lowercase exact or a leading *. wildcard for subdomains") {
  RuleSpec r = http_rule("hosts", {}, {}, {});
  r.http.hosts = {"API.example.com", "*.svc.local"};
  auto p = compile({r});
  auto peer = user_peer("u");
  auto allowed = [&](std::string_view host) { return p->decide(req(&peer, "GET", "/", host)).allowed(); };
  CHECK(allowed("api.example.com"));
  CHECK(allowed("api.example.com."));
  CHECK(allowed("a.svc.local"));
  CHECK(allowed("a.b.svc.local"));
  CHECK_FALSE(allowed("svc.local"));
  CHECK_FALSE(allowed("evilsvc.local"));
  CHECK_FALSE(allowed("example.com"));
}

TEST_CASE("the deciding rule is the first that allows, in config order") {
  auto p = compile({
      http_rule("specific", from_spiffe({frontend}), {"GET"}, {"/a/b"}),
      http_rule("broad", {}, {}, {"/**"}),
      http_rule("also", from_spiffe({"spiffe://cluster.local/**"}), {}, {"/a/*"}),
  });
  auto fe = spiffe_peer(frontend);
  CHECK(p->decide(req(&fe, "GET", "/a/b")).rule == "specific");
  CHECK(p->decide(req(&fe, "POST", "/a/b")).rule == "broad");
  auto q = compile({
      http_rule("also", from_spiffe({"spiffe://cluster.local/**"}), {}, {"/a/*"}),
      http_rule("specific", from_spiffe({frontend}), {"GET"}, {"/a/b"}),
  });
  CHECK(q->decide(req(&fe, "GET", "/a/b")).rule == "also");
}

TEST_CASE("audit mode: a deny becomes audit-deny, which is allowed and keeps the reason") {
  auto p = compile({http_rule("r", from_spiffe({frontend}), {"GET"}, {"/ok"})}, Mode::audit);
  CHECK(p->mode() == Mode::audit);
  auto fe = spiffe_peer(frontend);
  CHECK(p->decide(req(&fe, "GET", "/ok")).outcome == Outcome::allow);
  Decision d = p->decide(req(&fe, "GET", "/admin"));
  CHECK(d.outcome == Outcome::audit_deny);
  CHECK(d.allowed());
  CHECK(d.rule.empty());
  CHECK(d.reason == "no rule allows GET /admin for " + frontend);
  CHECK(p->decide_peer(nullptr).outcome == Outcome::audit_deny);
}

TEST_CASE("decide_peer checks from only (tcp listeners)") {
  auto p = compile({
      http_rule("fe", from_spiffe({"spiffe://cluster.local/ns/shop/**"}), {"GET"}, {"/x"}),
      http_rule("ops", FromSpec{false, {}, {}, {"ops"}}, {}, {}),
  });
  auto fe = spiffe_peer(frontend);
  auto ops = user_peer("carol", {"ops"});
  auto dev = user_peer("dave", {"dev"});
  CHECK(p->decide_peer(&fe).rule == "fe");
  CHECK(p->decide_peer(&ops).rule == "ops");
  Decision d = p->decide_peer(&dev);
  CHECK(d.outcome == Outcome::deny);
  CHECK(d.reason == "no rule allows connections from user dave (groups [dev])");
  CHECK_FALSE(p->decide_peer(nullptr).allowed());
}

TEST_CASE("explain names the closest rules and each failed condition") {
  RuleSpec a = http_rule("writers", from_spiffe({frontend}), {"POST"}, {"/api/**"});
  RuleSpec b = http_rule("readers", {}, {"GET"}, {"/api/**"});
  b.http.headers = {{"x-tenant", {"blue"}}};
  RuleSpec c = http_rule("admins", FromSpec{false, {}, {"root"}, {}}, {"DELETE"}, {"/admin"});
  auto p = compile({a, b, c});
  auto peer = spiffe_peer("spiffe://cluster.local/ns/x/sa/y");

  Explanation e = p->explain(req(&peer, "GET", "/api/items"));
  CHECK(e.decision.outcome == Outcome::deny);
  REQUIRE(e.closest.size() == 3);
  CHECK(e.closest[0].rule == "readers");
  CHECK(e.closest[0].failed == std::vector<std::string>{"header x-tenant missing (wanted one of [blue])"});
  CHECK(e.closest[1].rule == "writers");
  CHECK(e.closest[1].failed ==
        std::vector<std::string>{"peer spiffe://cluster.local/ns/x/sa/y not in from [spiffe " + frontend + "]",
                                 "method GET not in [POST]"});
  CHECK(e.closest[2].rule == "admins");
  CHECK(e.closest[2].failed.size() == 3);

  Explanation none = p->explain(req(nullptr, "GET", "/api/items"));
  REQUIRE_FALSE(none.closest.empty());
  CHECK(none.closest[0].failed.front() == "no verified client certificate (the rule needs one)");

  const std::vector<Header> blue = {{"x-tenant", "blue"}};
  Explanation ok = p->explain(req(&peer, "GET", "/api/items", "h", blue));
  CHECK(ok.decision.rule == "readers");
  CHECK(ok.closest.empty());
}

TEST_CASE("rules that cannot be compiled are refused with the rule named") {
  auto fails = [](RuleSpec r) {
    try {
      compile({http_rule("fine", {}, {}, {}), r});
    } catch (const CompileError& e) {
      CHECK(e.rule_index == 1);
      return std::string(e.what());
    }
    return std::string("compiled");
  };
  CHECK(fails(http_rule("m", {}, {"GE T"}, {})) == "rule \"m\": method \"GE T\" is not an HTTP token");
  CHECK(fails(http_rule("p", {}, {}, {"api"})) == "rule \"p\": path \"api\" must start with /");
  CHECK(fails(http_rule("p", {}, {}, {"/a/**/b"})) ==
        "rule \"p\": path \"/a/**/b\": `**` is only allowed as the last segment");
  CHECK(fails(http_rule("p", {}, {}, {"/a*"})) == "rule \"p\": path \"/a*\": `*` must be a whole segment (got \"a*\")");
  CHECK(fails(http_rule("p", {}, {}, {"/a/../b"})) ==
        "rule \"p\": path \"/a/../b\" is not in normal form (requests are matched as \"/b\"); write it that way");
  CHECK(fails(http_rule("p", {}, {}, {"/%7Euser"})) ==
        "rule \"p\": path \"/%7Euser\" is not in normal form (requests are matched as \"/~user\"); write it that way");
  CHECK(fails(http_rule("p", {}, {}, {"/a;b"})) ==
        "rule \"p\": path \"/a;b\" is not a valid path: ';' (path parameter) in path");
  CHECK(fails(http_rule("s", from_spiffe({"cluster.local/x"}), {}, {})) ==
        "rule \"s\": spiffe pattern \"cluster.local/x\" must start with spiffe://");
  CHECK(fails(http_rule("s", from_spiffe({"spiffe:///x"}), {}, {})) ==
        "rule \"s\": spiffe pattern \"spiffe:///x\" has no trust domain");
  CHECK(fails(http_rule("fine", {}, {}, {})) == "rule \"fine\": duplicate rule name");
  RuleSpec h = http_rule("h", {}, {}, {});
  h.http.hosts = {"bad host"};
  CHECK(fails(h) == "rule \"h\": host \"bad host\" is not a host name or \"*.\" + a host name");
}

TEST_CASE("kubernetes rules delegate to the Kubernetes matcher, and only on kubernetes listeners") {
  RuleSpec k;
  k.name = "ci-reads-prod";
  k.from.groups = {"ci"};
  k.has_kubernetes = true;
  k.kubernetes.verbs = {"get", "list"};
  k.kubernetes.resources = {"pods"};
  k.kubernetes.namespaces = {"prod"};
  auto p = compile({k});
  auto ci = user_peer("robot", {"ci"});

  const KubeAttributes get = resolve_kube("GET", "/api/v1/namespaces/prod/pods/web-0", "");
  const KubeAttributes del = resolve_kube("DELETE", "/api/v1/namespaces/prod/pods/web-0", "");
  Request r = req(&ci, "GET", "/api/v1/namespaces/prod/pods/web-0");
  CHECK(p->decide(r).outcome == Outcome::deny);  // not a kubernetes listener: no attributes
  r.kube = &get;
  CHECK(p->decide(r).rule == "ci-reads-prod");
  r.kube = &del;
  r.method = "DELETE";
  Explanation e = p->explain(r);
  CHECK(e.decision.outcome == Outcome::deny);
  CHECK(e.decision.reason == "no rule allows " + describe(del) + " for user robot (groups [ci])");
  REQUIRE(e.closest.size() == 1);
  REQUIRE(e.closest[0].failed.size() == 1);
  CHECK(e.closest[0].failed[0].find("delete") != std::string::npos);
}

TEST_CASE("a request the Kubernetes resolver could not read matches no rule, not even a from-only one") {
  RuleSpec admin;
  admin.name = "admins-anything";
  admin.from.groups = {"system:masters"};
  auto p = compile({admin});
  auto root = user_peer("root", {"system:masters"});
  KubeAttributes broken;
  broken.error = "watch with nothing to watch";
  Request r = req(&root, "GET", "/api/v1/watch");
  r.kube = &broken;
  Decision d = p->decide(r);
  CHECK(d.outcome == Outcome::deny);
  CHECK(d.reason == "unresolvable Kubernetes request: watch with nothing to watch");
}

TEST_CASE("a bad kubernetes rule is a compile error") {
  RuleSpec k;
  k.name = "bad";
  k.has_kubernetes = true;
  k.kubernetes.verbs = {"explode"};
  CHECK_THROWS_AS(compile({k}), CompileError);
}

TEST_CASE("docker rules delegate to the Docker matcher, and Docker refusals bind every rule") {
  RuleSpec reads;
  reads.name = "ops-reads";
  reads.from.groups = {"ops"};
  reads.has_docker = true;
  reads.docker.actions = {"read"};
  RuleSpec admin;
  admin.name = "root-anything";
  admin.from.users = {"root"};
  auto p = compile({reads, admin});
  auto ops = user_peer("olga", {"ops"});
  auto root = user_peer("root");

  const DockerAttributes list = resolve_docker("GET", "/v1.47/containers/json", "");
  const DockerAttributes kill = resolve_docker("POST", "/v1.47/containers/abc/kill", "");
  const DockerAttributes unknown = resolve_docker("POST", "/v1.47/no/such/endpoint", "");
  Request r = req(&ops, "GET", "/v1.47/containers/json");
  CHECK_FALSE(p->decide(r).allowed());  // not a docker listener
  r.docker = &list;
  CHECK(p->decide(r).rule == "ops-reads");
  r.docker = &kill;
  r.method = "POST";
  r.path = "/v1.47/containers/abc/kill";
  Decision d = p->decide(r);
  CHECK_FALSE(d.allowed());
  CHECK(d.reason ==
        "no rule allows docker " + kill.action + " (POST /v1.47/containers/abc/kill) for user olga (groups [ops])");
  r.peer = &root;
  CHECK(p->decide(r).rule == "root-anything");
  r.docker = &unknown;
  r.path = "/v1.47/no/such/endpoint";
  d = p->decide(r);
  CHECK_FALSE(d.allowed());
  CHECK(d.reason == docker_refusal(unknown).value_or("(no refusal)"));
}

TEST_CASE("a bad docker rule is a compile error") {
  RuleSpec k;
  k.name = "bad";
  k.has_docker = true;
  k.docker.actions = {"container.explode"};
  CHECK_THROWS_AS(compile({k}), CompileError);
}

// The indexes must agree with a plain reading of the rules: random rule sets and requests,
// checked against explain(), which evaluates every rule in full without the indexes.
TEST_CASE("indexed decisions agree with evaluating every rule") {
  std::mt19937 rng(7);
  const std::vector<std::string> segs = {"a", "b", "c"};
  const std::vector<std::string> methods = {"GET", "POST", "PUT"};
  const std::vector<std::string> ids = {"spiffe://td/ns/a/sa/b", "spiffe://td/ns/b/sa/a", "spiffe://other/x"};
  const std::vector<std::string> id_patterns = {"spiffe://td/ns/a/sa/b", "spiffe://td/ns/*/sa/a", "spiffe://td/**",
                                                "spiffe://*/x"};
  auto pick = [&](const auto& v) { return v[rng() % v.size()]; };
  auto random_path = [&](bool pattern) {
    std::string p;
    const int n = static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) {
      const unsigned k = rng() % 6;
      p += "/" + (pattern && k == 4                 ? std::string("*")
                  : pattern && k == 5 && i == n - 1 ? std::string("**")
                                                    : pick(segs));
    }
    return p.empty() ? std::string("/") : p;
  };
  for (int round = 0; round < 50; ++round) {
    std::vector<RuleSpec> rules;
    for (int i = 0; i < 12; ++i) {
      RuleSpec r = http_rule("r" + std::to_string(i), {}, {}, {});
      switch (rng() % 4) {
        case 0:
          r.from.spiffe = {pick(id_patterns)};
          break;
        case 1:
          r.from.users = {pick(segs)};
          break;
        case 2:
          r.from.any = true;
          break;
        default:
          break;
      }
      if (rng() % 2) r.http.methods = {pick(methods)};
      for (unsigned k = rng() % 3; k > 0; --k) r.http.paths.push_back(random_path(true));
      rules.push_back(r);
    }
    auto p = compile(rules);
    for (int q = 0; q < 40; ++q) {
      certs::Identity peer = spiffe_peer(pick(ids));
      peer.user = pick(segs);
      const std::string path = random_path(false);
      const std::string method = pick(methods);
      const Request r = req(rng() % 5 ? &peer : nullptr, method, path);
      const Explanation e = p->explain(r);
      // explain() returns the fully evaluated closest rules for a deny: none may have zero failures.
      if (e.decision.allowed()) {
        const auto& rule = rules[static_cast<std::size_t>(std::stoi(e.decision.rule.substr(1)))];
        INFO(path << " " << method << " rule " << e.decision.rule);
        CHECK(rule.name == e.decision.rule);
      } else {
        INFO(path << " " << method);
        for (const auto& m : e.closest) CHECK_FALSE(m.failed.empty());
      }
      // Every rule ahead of the deciding one must fail in full evaluation; checked by compiling
      // just that prefix of rules and asking explain() again.
      if (e.decision.allowed()) {
        const auto idx = static_cast<std::size_t>(std::stoi(e.decision.rule.substr(1)));
        std::vector<RuleSpec> prefix(rules.begin(), rules.begin() + static_cast<std::ptrdiff_t>(idx));
        auto before = compile(prefix);
        const Explanation pe = before->explain(r);
        CHECK_FALSE(pe.decision.allowed());
        for (const auto& m : pe.closest) CHECK_FALSE(m.failed.empty());
        // And the deciding rule alone, evaluated in full, allows.
        auto alone = compile({rules[idx]});
        CHECK(alone->explain(r).decision.allowed());
      }
    }
  }
}
