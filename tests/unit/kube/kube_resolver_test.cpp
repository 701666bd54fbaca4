// resolve_kube() against the apiserver's RequestInfo (k8s.io/apiserver
// pkg/endpoints/request/requestinfo.go). Each row names the rule of that resolver it checks;
// the expected values are what the apiserver reports for the same method, path and query.
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "proxy/policy/kube.hpp"

using portcullis::policy::KubeAttributes;
using portcullis::policy::resolve_kube;

namespace {

struct Case {
  const char* method;
  const char* path;
  const char* query;
  bool resource;  // is_resource_request
  const char* verb;
  const char* group;
  const char* version;
  const char* ns;
  const char* res;
  const char* sub;
  const char* name;
  const char* rule;  // which requestinfo.go rule this row exercises
};

// clang-format off
const Case cases[] = {
  // Non-resource: fewer than 3 segments, or not under api/apis; the verb is the lowercased method.
  {"GET", "/", "", false, "get", "", "", "", "", "", "", "non-resource: no segments"},
  {"GET", "/api", "", false, "get", "", "", "", "", "", "", "non-resource: discovery /api (< 3 parts)"},
  {"GET", "/api/v1", "", false, "get", "", "", "", "", "", "", "non-resource: /api/{v} (< 3 parts)"},
  {"GET", "/api/v1/", "", false, "get", "", "", "", "", "", "", "non-resource: trailing slash trimmed before counting"},
  {"GET", "/apis", "", false, "get", "", "", "", "", "", "", "non-resource: /apis"},
  {"GET", "/apis/apps", "", false, "get", "", "", "", "", "", "", "non-resource: /apis/{group}"},
  {"GET", "/apis/apps/v1", "", false, "get", "", "", "", "", "", "", "non-resource: grouped prefix needs 4 parts"},
  {"GET", "/version", "", false, "get", "", "", "", "", "", "", "non-resource: /version"},
  {"GET", "/healthz", "", false, "get", "", "", "", "", "", "", "non-resource: /healthz"},
  {"POST", "/healthz", "", false, "post", "", "", "", "", "", "", "non-resource: verb = lowercased method"},
  {"HEAD", "/livez", "", false, "head", "", "", "", "", "", "", "non-resource: HEAD stays head (no get mapping)"},
  {"GET", "/openapi/v3", "", false, "get", "", "", "", "", "", "", "non-resource: /openapi/v3"},
  {"GET", "/openapi/v3/apis/apps/v1", "", false, "get", "", "", "", "", "", "", "non-resource: first part not an API prefix"},
  {"GET", "/metrics", "", false, "get", "", "", "", "", "", "", "non-resource: /metrics"},
  {"OPTIONS", "/version", "", false, "options", "", "", "", "", "", "", "non-resource: any method lowercased"},
  // Core group /api/{v}, method verbs.
  {"GET", "/api/v1/pods", "", true, "list", "", "v1", "", "pods", "", "", "get without name -> list; no namespaces/ -> cluster-wide"},
  {"GET", "/api/v1/namespaces/prod/pods", "", true, "list", "", "v1", "prod", "pods", "", "", "namespaces/{ns}/{resource}"},
  {"GET", "/api/v1/namespaces/prod/pods/web-0", "", true, "get", "", "v1", "prod", "pods", "", "web-0", "GET with name -> get"},
  {"HEAD", "/api/v1/namespaces/prod/pods/web-0", "", true, "get", "", "v1", "prod", "pods", "", "web-0", "HEAD -> get"},
  {"HEAD", "/api/v1/namespaces/prod/pods", "", true, "list", "", "v1", "prod", "pods", "", "", "HEAD without name -> list"},
  {"POST", "/api/v1/namespaces/prod/pods", "", true, "create", "", "v1", "prod", "pods", "", "", "POST -> create"},
  {"PUT", "/api/v1/namespaces/prod/pods/web-0", "", true, "update", "", "v1", "prod", "pods", "", "web-0", "PUT -> update"},
  {"PATCH", "/api/v1/namespaces/prod/pods/web-0", "", true, "patch", "", "v1", "prod", "pods", "", "web-0", "PATCH -> patch"},
  {"DELETE", "/api/v1/namespaces/prod/pods/web-0", "", true, "delete", "", "v1", "prod", "pods", "", "web-0", "DELETE with name -> delete"},
  {"DELETE", "/api/v1/namespaces/prod/pods", "", true, "deletecollection", "", "v1", "prod", "pods", "", "", "DELETE without name -> deletecollection"},
  {"OPTIONS", "/api/v1/pods", "", true, "", "", "v1", "", "pods", "", "", "other methods -> empty verb"},
  {"get", "/api/v1/pods", "", true, "", "", "v1", "", "pods", "", "", "methods are matched case-sensitively"},
  {"GET", "/api/v1/namespaces/prod/pods/", "", true, "list", "", "v1", "prod", "pods", "", "", "trailing slash trimmed (splitPath)"},
  // Named groups /apis/{g}/{v}.
  {"GET", "/apis/apps/v1/namespaces/prod/deployments", "", true, "list", "apps", "v1", "prod", "deployments", "", "", "/apis/{group}/{v} prefix"},
  {"GET", "/apis/apps/v1/deployments", "", true, "list", "apps", "v1", "", "deployments", "", "", "grouped, cluster-wide list"},
  {"GET", "/apis/apps/v1/namespaces/prod/deployments/web/scale", "", true, "get", "apps", "v1", "prod", "deployments", "scale", "web", "{resource}/{name}/{subresource}"},
  {"PUT", "/apis/apps/v1/namespaces/prod/deployments/web/status", "", true, "update", "apps", "v1", "prod", "deployments", "status", "web", "status subresource"},
  {"GET", "/apis/apps/v1/namespaces/prod/deployments/web/scale/extra", "", true, "get", "apps", "v1", "prod", "deployments", "scale", "web", "parts after the subresource are not interpreted"},
  {"GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/system:node", "", true, "get", "rbac.authorization.k8s.io", "v1", "", "clusterroles", "", "system:node", "cluster-scoped named get"},
  {"GET", "/apis/custom.example.com/v1alpha1/widgets", "", true, "list", "custom.example.com", "v1alpha1", "", "widgets", "", "", "CRD group"},
  {"POST", "/api/v1/namespaces/prod/serviceaccounts/default/token", "", true, "create", "", "v1", "prod", "serviceaccounts", "token", "default", "POST on a subresource -> create"},
  // Namespaces themselves.
  {"GET", "/api/v1/namespaces", "", true, "list", "", "v1", "", "namespaces", "", "", "namespaces alone: resource namespaces, no namespace"},
  {"GET", "/api/v1/namespaces/prod", "", true, "get", "", "v1", "prod", "namespaces", "", "prod", "namespaces/{ns}: namespace = name = ns"},
  {"DELETE", "/api/v1/namespaces/prod", "", true, "delete", "", "v1", "prod", "namespaces", "", "prod", "delete a namespace"},
  {"PUT", "/api/v1/namespaces/prod/status", "", true, "update", "", "v1", "prod", "namespaces", "status", "prod", "namespace subresource status"},
  {"PUT", "/api/v1/namespaces/prod/finalize", "", true, "update", "", "v1", "prod", "namespaces", "finalize", "prod", "namespace subresource finalize"},
  {"GET", "/api/v1/namespaces/prod/status", "", true, "get", "", "v1", "prod", "namespaces", "status", "prod", "GET of a namespace subresource"},
  {"GET", "/api/v1/namespaces/status", "", true, "get", "", "v1", "status", "namespaces", "", "status", "a namespace named status"},
  {"GET", "/api/v1/nodes/n1", "", true, "get", "", "v1", "", "nodes", "", "n1", "cluster-scoped resource"},
  {"GET", "/api/v1/nodes/n1/proxy/metrics", "", true, "get", "", "v1", "", "nodes", "proxy", "n1", "proxy subresource by method"},
  {"GET", "/api/v1/namespaces/prod/services/web:http/proxy/a/b", "", true, "get", "", "v1", "prod", "services", "proxy", "web:http", "service proxy subresource"},
  // Streaming subresources: the verb follows the method (WebSocket GET, SPDY POST).
  {"GET", "/api/v1/namespaces/prod/pods/web-0/exec", "command=sh&stdin=true", true, "get", "", "v1", "prod", "pods", "exec", "web-0", "exec over WebSocket (GET) -> get"},
  {"POST", "/api/v1/namespaces/prod/pods/web-0/exec", "command=sh", true, "create", "", "v1", "prod", "pods", "exec", "web-0", "exec over SPDY (POST) -> create"},
  {"GET", "/api/v1/namespaces/prod/pods/web-0/attach", "", true, "get", "", "v1", "prod", "pods", "attach", "web-0", "attach (GET) -> get"},
  {"POST", "/api/v1/namespaces/prod/pods/web-0/portforward", "", true, "create", "", "v1", "prod", "pods", "portforward", "web-0", "portforward (POST) -> create"},
  {"GET", "/api/v1/namespaces/prod/pods/web-0/log", "follow=true", true, "get", "", "v1", "prod", "pods", "log", "web-0", "logs -f: a named get, watch param irrelevant"},
  // Deprecated path verbs.
  {"GET", "/api/v1/watch/pods", "", true, "watch", "", "v1", "", "pods", "", "", "/watch/{resource}"},
  {"GET", "/api/v1/watch/namespaces/prod/pods", "", true, "watch", "", "v1", "prod", "pods", "", "", "/watch/namespaces/{ns}/{resource}"},
  {"GET", "/api/v1/watch/namespaces/prod/pods/web-0", "", true, "watch", "", "v1", "prod", "pods", "", "web-0", "/watch/ with a name"},
  {"POST", "/api/v1/watch/pods", "", true, "watch", "", "v1", "", "pods", "", "", "path verb wins over the method"},
  {"GET", "/apis/apps/v1/watch/namespaces/prod/deployments", "", true, "watch", "apps", "v1", "prod", "deployments", "", "", "/watch/ under a group"},
  {"GET", "/api/v1/watch/pods", "fieldSelector=metadata.name%3Dx", true, "watch", "", "v1", "", "pods", "", "", "fieldSelector read only when the method verb was get"},
  {"GET", "/api/v1/proxy/nodes/n1/stats", "", true, "proxy", "", "v1", "", "nodes", "", "n1", "/proxy/: no subresource"},
  {"GET", "/api/v1/proxy/namespaces/prod/services/web/some/path", "", true, "proxy", "", "v1", "prod", "services", "", "web", "/proxy/namespaces/{ns}/..."},
  {"DELETE", "/api/v1/proxy/namespaces/prod/pods", "", true, "proxy", "", "v1", "prod", "pods", "", "", "/proxy/ without name stays proxy"},
  // watch query parameter on a get without name.
  {"GET", "/api/v1/namespaces/prod/pods", "watch=true", true, "watch", "", "v1", "prod", "pods", "", "", "watch=true -> watch"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=1", true, "watch", "", "v1", "prod", "pods", "", "", "watch=1 -> watch"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=0", true, "list", "", "v1", "prod", "pods", "", "", "watch=0 -> list"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=false", true, "list", "", "v1", "prod", "pods", "", "", "watch=false -> list"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=FaLsE", true, "list", "", "v1", "prod", "pods", "", "", "false is case-insensitive"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=", true, "watch", "", "v1", "prod", "pods", "", "", "empty value is true"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch", true, "watch", "", "v1", "prod", "pods", "", "", "key without '=' is present with value \"\""},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=no", true, "watch", "", "v1", "prod", "pods", "", "", "anything but 0/false is true"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=false&watch=true", true, "list", "", "v1", "prod", "pods", "", "", "first value wins"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=0&watch=1", true, "list", "", "v1", "prod", "pods", "", "", "first value wins (0)"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=%zz", true, "list", "", "v1", "prod", "pods", "", "", "url.ParseQuery drops a pair that fails to unescape"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=true;x=1", true, "list", "", "v1", "prod", "pods", "", "", "url.ParseQuery drops a pair with ';'"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=%74rue", true, "watch", "", "v1", "prod", "pods", "", "", "values are percent-decoded"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=f%61lse", true, "list", "", "v1", "prod", "pods", "", "", "decoded false"},
  {"GET", "/api/v1/namespaces/prod/pods", "Watch=true", true, "list", "", "v1", "prod", "pods", "", "", "parameter names are case-sensitive"},
  {"GET", "/api/v1/namespaces/prod/pods", "&&watch=1&", true, "watch", "", "v1", "prod", "pods", "", "", "empty pairs skipped"},
  {"GET", "/api/v1/namespaces/prod/pods/web-0", "watch=true", true, "get", "", "v1", "prod", "pods", "", "web-0", "a named get never becomes watch"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=fal%C5%BFe", true, "list", "", "v1", "prod", "pods", "", "", "decoded: strings.EqualFold folds U+017F to s"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=fal%C5%BFe&limit=x", true, "watch", "", "v1", "prod", "pods", "", "", "decode failed: strings.ToLower fallback does not fold U+017F"},
  {"GET", "/api/v1/namespaces/prod/pods", "watch=true&limit=abc", true, "watch", "", "v1", "prod", "pods", "", "", "decode failure still reports watch"},
  {"GET", "/api/v1/namespaces/prod/pods", "limit=abc", true, "list", "", "v1", "prod", "pods", "", "", "decode failure leaves a list"},
  // fieldSelector=metadata.name=X names a list/watch.
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dweb-0", true, "list", "", "v1", "prod", "pods", "", "web-0", "fieldSelector metadata.name= sets the name"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name=web-0", true, "list", "", "v1", "prod", "pods", "", "web-0", "raw '=' inside the value"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dweb-0&watch=1", true, "watch", "", "v1", "prod", "pods", "", "web-0", "kubectl get pod x -w"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3D%3Dweb-0", true, "list", "", "v1", "prod", "pods", "", "web-0", "== operator"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%21%3Dweb-0", true, "list", "", "v1", "prod", "pods", "", "", "!= is not an exact match"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.namespace%3Dprod", true, "list", "", "v1", "prod", "pods", "", "", "other fields do not name"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=status.phase%3DRunning,metadata.name%3Db", true, "list", "", "v1", "prod", "pods", "", "b", "exact match inside an AND"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Db,metadata.name%3Da", true, "list", "", "v1", "prod", "pods", "", "a", "terms are sorted; the first exact match wins"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Da/b", true, "list", "", "v1", "prod", "pods", "", "", "name must be a valid path segment (no '/')"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3D..", true, "list", "", "v1", "prod", "pods", "", "", "name must be a valid path segment (not ..)"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Da%5C,b", true, "list", "", "v1", "prod", "pods", "", "a,b", "backslash-escaped comma in the value"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx,bogus", true, "list", "", "v1", "prod", "pods", "", "", "unparsable term: decode fails, no name"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Da%3Db", true, "list", "", "v1", "prod", "pods", "", "", "unescaped '=' in the value: decode fails"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx&limit=abc", true, "list", "", "v1", "prod", "pods", "", "", "limit not an integer: decode fails, no name"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx&limit=99999999999999999999", true, "list", "", "v1", "prod", "pods", "", "", "limit overflows int64: decode fails"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx&limit=%2B5&timeoutSeconds=-1", true, "list", "", "v1", "prod", "pods", "", "x", "signed integers decode"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx&labelSelector=app%20in%20(a", true, "list", "", "v1", "prod", "pods", "", "", "bad labelSelector: decode fails"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx&labelSelector=app%3Dweb,tier%20notin%20(db)", true, "list", "", "v1", "prod", "pods", "", "x", "good labelSelector"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx&labelSelector=Bad_Key_%3Dv", true, "list", "", "v1", "prod", "pods", "", "", "label key must be a qualified name"},
  {"GET", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx&labelSelector=n%3Ex", true, "list", "", "v1", "prod", "pods", "", "", "'>' needs an integer"},
  {"DELETE", "/api/v1/namespaces/prod/pods", "fieldSelector=metadata.name%3Dx", true, "deletecollection", "", "v1", "prod", "pods", "", "", "fieldSelector does not name a deletecollection"},
};
// clang-format on

}  // namespace

TEST_CASE("resolve_kube follows the apiserver's RequestInfo", "[kube][resolver]") {
  STATIC_REQUIRE(sizeof(cases) / sizeof(cases[0]) >= 60);
  for (const Case& c : cases) {
    INFO(c.method << " " << c.path << (c.query[0] ? "?" : "") << c.query << "  -- " << c.rule);
    const KubeAttributes a = resolve_kube(c.method, c.path, c.query);
    CHECK(a.error.empty());
    CHECK(a.is_resource_request == c.resource);
    CHECK(a.verb == c.verb);
    CHECK(a.api_group == c.group);
    CHECK(a.api_version == c.version);
    CHECK(a.namespace_ == c.ns);
    CHECK(a.resource == c.res);
    CHECK(a.subresource == c.sub);
    CHECK(a.name == c.name);
    CHECK(a.path == c.path);
  }
}

TEST_CASE("a path verb with nothing after it cannot be resolved", "[kube][resolver]") {
  for (const char* path : {"/api/v1/watch", "/api/v1/proxy", "/apis/apps/v1/watch/"}) {
    INFO(path);
    const KubeAttributes a = resolve_kube("GET", path, "");
    CHECK(a.is_resource_request);
    CHECK_FALSE(a.error.empty());
  }
}

TEST_CASE("api_prefix and parts are reported as the apiserver does", "[kube][resolver]") {
  KubeAttributes a = resolve_kube("GET", "/api/v1/nodes/n1/proxy/metrics/cadvisor", "");
  CHECK(a.api_prefix == "api");
  CHECK(a.parts == std::vector<std::string>{"nodes", "n1", "proxy", "metrics", "cadvisor"});
  // /apis/{g}/{v} is non-resource, but the prefix was already consumed when that was decided.
  a = resolve_kube("GET", "/apis/apps/v1", "");
  CHECK_FALSE(a.is_resource_request);
  CHECK(a.api_prefix == "apis");
  a = resolve_kube("GET", "/api/v1/namespaces/prod/status", "");
  CHECK(a.parts == std::vector<std::string>{"namespaces", "prod", "status"});
}

TEST_CASE("raw selectors are kept for list, watch and deletecollection", "[kube][resolver]") {
  KubeAttributes a = resolve_kube("GET", "/api/v1/pods", "labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1");
  CHECK(a.label_selector == "app=web");
  CHECK(a.field_selector == "spec.nodeName=n1");
  a = resolve_kube("DELETE", "/api/v1/namespaces/prod/pods", "labelSelector=app%3Dweb");
  CHECK(a.label_selector == "app=web");
  a = resolve_kube("GET", "/api/v1/namespaces/prod/pods/web-0", "labelSelector=app%3Dweb");
  CHECK(a.label_selector.empty());  // a named get does not use selectors
  a = resolve_kube("GET", "/api/v1/watch/pods", "labelSelector=app%3Dweb");
  CHECK(a.label_selector.empty());  // not for the deprecated path verb
}

TEST_CASE("hostile input never throws", "[kube][resolver]") {
  const std::string junk[] = {"", "%", "%%", "%4", "=", "&", ";", "watch=%", std::string("watch=\0", 7),
                              "fieldSelector=\\", "fieldSelector=%5C", "labelSelector=(((", "labelSelector=!",
                              "labelSelector=a%20in%20(", "labelSelector=a%00b", "limit=-", "limit=+"};
  for (const std::string& q : junk) {
    for (const char* path : {"/api/v1/pods", "/apis/a/v1/namespaces/x/y", "/api/v1/watch", "/"}) {
      CHECK_NOTHROW(resolve_kube("GET", path, q));
      CHECK_NOTHROW(resolve_kube("\x01", path, q));
    }
  }
}

TEST_CASE("NUL bytes in a labelSelector are read as the apiserver's lexer reads them", "[kube][resolver]") {
  // "a\0b": the NUL ends the identifier `a` and is consumed, `b` follows: "a b" does not parse.
  CHECK(resolve_kube("GET", "/api/v1/pods", "fieldSelector=metadata.name%3Dx&labelSelector=a%00b").name.empty());
  // "a,\0x": the NUL right after the comma is consumed with it: "a,x" parses.
  CHECK(resolve_kube("GET", "/api/v1/pods", "fieldSelector=metadata.name%3Dx&labelSelector=a,%00x").name == "x");
  // "a, \0x": after whitespace the NUL starts a token, which ends the input: "a," does not parse.
  CHECK(resolve_kube("GET", "/api/v1/pods", "fieldSelector=metadata.name%3Dx&labelSelector=a,%20%00x").name.empty());
  // "a=b\0": the trailing NUL is consumed with `b`.
  CHECK(resolve_kube("GET", "/api/v1/pods", "fieldSelector=metadata.name%3Dx&labelSelector=a%3Db%00").name == "x");
  // "a \0=b": the NUL starts a token after whitespace, so the selector is just "a" (exists).
  CHECK(resolve_kube("GET", "/api/v1/pods", "fieldSelector=metadata.name%3Dx&labelSelector=a%20%00%3Db").name == "x");
}

TEST_CASE("more than 10000 query parameters is refused, not guessed", "[kube][resolver]") {
  std::string q = "watch=1";
  for (int i = 0; i < 9999; ++i) q += "&";
  CHECK(resolve_kube("GET", "/api/v1/pods", q).error.empty());  // 10000 parameters
  CHECK(resolve_kube("GET", "/api/v1/pods", q).verb == "watch");
  q += "&";
  CHECK_FALSE(resolve_kube("GET", "/api/v1/pods", q).error.empty());
  CHECK(resolve_kube("GET", "/version", q).error.empty());  // non-resource requests ignore the query
}

TEST_CASE("random requests resolve and match without throwing", "[kube][resolver]") {
  // Deterministic junk built from the pieces the parsers care about.
  const char* atoms[] = {"/", "api", "apis", "v1", "watch", "proxy", "namespaces", "status", "finalize", "pods",
                         "x", "", "=", "==", "!=", "&", ";", "%", "%2", "%3D", "%00", "%5C", "\\", ",", "(", ")",
                         "!", " ", "in", "notin", "<", ">", "-1", "metadata.name", "fieldSelector", "labelSelector",
                         "limit", "watch=", "false", "\xC5\xBF", "*"};
  const std::size_t n = sizeof(atoms) / sizeof(atoms[0]);
  std::uint32_t seed = 12345;
  auto next = [&] {
    seed = seed * 1664525u + 1013904223u;
    return seed >> 8;
  };
  portcullis::policy::KubeSpec spec;
  spec.resources = {"*"};
  for (int i = 0; i < 20000; ++i) {
    std::string path = "/", query;
    for (std::uint32_t k = next() % 8; k > 0; --k) path += atoms[next() % n];
    for (std::uint32_t k = next() % 12; k > 0; --k) query += atoms[next() % n];
    const char* method = (next() % 2) ? "GET" : "DELETE";
    KubeAttributes a;
    REQUIRE_NOTHROW(a = resolve_kube(method, path, query));
    REQUIRE_NOTHROW(portcullis::policy::match_kube(spec, a, nullptr));
    REQUIRE_NOTHROW(portcullis::policy::describe(a));
  }
}
