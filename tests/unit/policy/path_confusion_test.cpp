// Path confusion: every way of spelling a path differently must either be refused (400) or be
// normalised to the one path that BOTH the rules see and the upstream is sent. Each case states
// the outcome and that path.
#include <catch2/catch.hpp>

#include "proxy/policy/normalize.hpp"
#include "proxy/policy/policy.hpp"

using namespace portcullis;
using namespace portcullis::policy;

namespace {

enum class Expect { rejected, allow, deny };

struct Case {
  std::string_view method;
  std::string_view target;
  Expect expect;
  std::string_view upstream_path;  // path (+ '?' + query) the upstream receives; empty when rejected
};

// GET /public/** and GET /api/items/* and GET / are allowed for any verified peer; nothing else is.
std::shared_ptr<const Policy> make_policy() {
  PolicySpec spec;
  spec.name = "confusion";
  RuleSpec r;
  r.name = "public";
  r.has_http = true;
  r.http.methods = {"GET", "OPTIONS"};
  r.http.paths = {"/public/**", "/api/items/*", "/"};
  spec.rules.push_back(r);
  return Policy::compile(spec);
}

constexpr Case cases[] = {
    // plain
    {"GET", "/public/a", Expect::allow, "/public/a"},
    {"GET", "/admin", Expect::deny, "/admin"},
    {"GET", "/", Expect::allow, "/"},
    {"GET", "public/a", Expect::rejected, ""},
    // dot segments, raw and encoded
    {"GET", "/public/../admin", Expect::deny, "/admin"},
    {"GET", "/public/%2e%2e/admin", Expect::deny, "/admin"},
    {"GET", "/public/%2E%2E/admin", Expect::deny, "/admin"},
    {"GET", "/public/.%2e/admin", Expect::deny, "/admin"},
    {"GET", "/public/%2e/a", Expect::allow, "/public/a"},
    {"GET", "/public/./a", Expect::allow, "/public/a"},
    {"GET", "/public/a/..", Expect::allow, "/public/"},
    {"GET", "/api/items/1/../../admin", Expect::deny, "/api/admin"},
    {"GET", "/api/items/1/../../../admin", Expect::deny, "/admin"},
    {"GET", "/api/items/%2e", Expect::deny, "/api/items/"},
    // '..' that climbs above the root
    {"GET", "/..", Expect::rejected, ""},
    {"GET", "/../public/a", Expect::rejected, ""},
    {"GET", "/public/../../admin", Expect::rejected, ""},
    {"GET", "/public/.%2E/.%2E/admin", Expect::rejected, ""},
    {"GET", "/public/a/../../..", Expect::rejected, ""},
    // duplicate slashes
    {"GET", "/public//a", Expect::allow, "/public/a"},
    {"GET", "//public/a", Expect::allow, "/public/a"},
    {"GET", "///admin", Expect::deny, "/admin"},
    {"GET", "/public/a//", Expect::allow, "/public/a/"},
    // encoded slash and backslash, raw backslash
    {"GET", "/public/%2Fadmin", Expect::rejected, ""},
    {"GET", "/public/%2fadmin", Expect::rejected, ""},
    {"GET", "/public%2F..%2Fadmin", Expect::rejected, ""},
    {"GET", "/public/%2e%2e%2fadmin", Expect::rejected, ""},
    {"GET", "/api/items/..%2F", Expect::rejected, ""},
    {"GET", "/public/%5C..%5Cadmin", Expect::rejected, ""},
    {"GET", "/public/..\\admin", Expect::rejected, ""},
    // double encoding
    {"GET", "/public/%252F..%252Fadmin", Expect::rejected, ""},
    {"GET", "/public/%252e%252e/admin", Expect::rejected, ""},
    {"GET", "/public/%2541", Expect::rejected, ""},
    {"GET", "/public/%25%41a", Expect::rejected, ""},  // would become "%25Aa"
    {"GET", "/public/%25", Expect::allow, "/public/%25"},
    // UTF-8: overlong, surrogates, invalid bytes, raw non-ASCII; valid sequences kept encoded
    {"GET", "/public/%C0%AE%C0%AE/admin", Expect::rejected, ""},
    {"GET", "/public/%C0%AF", Expect::rejected, ""},
    {"GET", "/public/%E0%80%AE", Expect::rejected, ""},
    {"GET", "/public/%ED%A0%80", Expect::rejected, ""},
    {"GET", "/public/%FF", Expect::rejected, ""},
    {"GET", "/public/%C3", Expect::rejected, ""},
    {"GET", "/public/\xC3\xA9", Expect::rejected, ""},
    {"GET", "/public/%C3%A9", Expect::allow, "/public/%C3%A9"},
    {"GET", "/public/%c3%a9", Expect::allow, "/public/%C3%A9"},
    // ';' path parameters (Tomcat/Jetty strip them: "/admin;x" would reach "/admin")
    {"GET", "/admin;jsessionid=x", Expect::rejected, ""},
    {"GET", "/public/a;b", Expect::rejected, ""},
    {"GET", "/public;/../admin", Expect::rejected, ""},
    {"GET", "/public/..;/admin", Expect::rejected, ""},
    {"GET", "/admin%3Bx", Expect::deny, "/admin%3Bx"},
    {"GET", "/public/%3b", Expect::allow, "/public/%3B"},
    // case: paths are case-sensitive, never folded; decoded unreserved letters match
    {"GET", "/ADMIN", Expect::deny, "/ADMIN"},
    {"GET", "/Public/a", Expect::deny, "/Public/a"},
    {"GET", "/%61dmin", Expect::deny, "/admin"},
    {"GET", "/%70ublic/a", Expect::allow, "/public/a"},
    {"GET", "/public/%41%7e", Expect::allow, "/public/A~"},
    // control characters, raw and encoded; bad percent-encoding
    {"GET", "/public/%00", Expect::rejected, ""},
    {"GET", "/public/%0a", Expect::rejected, ""},
    {"GET", "/public/%0D%0AX-Injected:%201", Expect::rejected, ""},
    {"GET", "/public/%1F", Expect::rejected, ""},
    {"GET", "/public/%7F", Expect::rejected, ""},
    {"GET", "/public/\x01", Expect::rejected, ""},
    {"GET", "/public/a b", Expect::rejected, ""},
    {"GET", "/public/a%", Expect::rejected, ""},
    {"GET", "/public/%zz", Expect::rejected, ""},
    {"GET", "/public/%2", Expect::rejected, ""},
    {"GET", "/public/%u002e%u002e/admin", Expect::rejected, ""},
    // fragment and query
    {"GET", "/public/a#frag", Expect::rejected, ""},
    {"GET", "/public/a?x=1&y=%2F", Expect::allow, "/public/a?x=1&y=%2F"},
    {"GET", "/admin?/public/a", Expect::deny, "/admin?/public/a"},
    {"GET", "/public/a?x=%00", Expect::rejected, ""},
    // absolute-form
    {"GET", "http://svc.local/public/a", Expect::allow, "/public/a"},
    {"GET", "http://svc.local/admin", Expect::deny, "/admin"},
    {"GET", "HTTP://SVC.LOCAL:8080/public/../admin", Expect::deny, "/admin"},
    {"GET", "https://svc.local/public/%2e%2e/%2e%2e/admin", Expect::rejected, ""},
    {"GET", "http://svc.local", Expect::allow, "/"},
    {"GET", "http://user@svc.local/public/a", Expect::rejected, ""},
    {"GET", "ftp://svc.local/public/a", Expect::rejected, ""},
    {"GET", "http:/public/a", Expect::rejected, ""},
    // asterisk-form and authority-form
    {"OPTIONS", "*", Expect::deny, "*"},
    {"GET", "*", Expect::rejected, ""},
    {"CONNECT", "svc.local:443", Expect::rejected, ""},
};

const char* name(Expect e) {
  switch (e) {
    case Expect::rejected:
      return "rejected";
    case Expect::allow:
      return "allow";
    case Expect::deny:
      return "deny";
  }
  return "?";
}

}  // namespace

TEST_CASE("path confusion: outcome and upstream path for each spelling") {
  STATIC_REQUIRE(std::size(cases) >= 40);
  const auto policy = make_policy();
  const certs::Identity peer{"spiffe://cluster.local/ns/a/sa/b", "", {}, {}, "", {}};
  for (const Case& c : cases) {
    const NormalizedTarget n = normalize_target(c.method, c.target);
    Expect got = Expect::rejected;
    std::string upstream;
    if (n.ok) {
      Request r;
      r.peer = &peer;
      r.method = c.method;
      r.path = n.path;
      r.query = n.query;
      r.host = "svc.local";
      got = policy->decide(r).allowed() ? Expect::allow : Expect::deny;
      upstream = n.query.empty() ? n.path : n.path + "?" + n.query;
    }
    INFO(c.method << " " << c.target << " -> " << name(got) << " " << upstream << " " << n.error);
    CHECK(name(got) == std::string(name(c.expect)));
    CHECK(upstream == c.upstream_path);
    CHECK(n.ok == n.error.empty());
  }
}
