// The `kubernetes:` rule form: match_kube(), validate_kube_spec(), describe().
#include <catch2/catch.hpp>

#include <stdexcept>

#include "proxy/policy/kube.hpp"

using namespace portcullis::policy;

namespace {

KubeAttributes req(const char* method, const char* path, const char* query = "") {
  return resolve_kube(method, path, query);
}

bool matches(const KubeSpec& spec, const KubeAttributes& a) { return match_kube(spec, a, nullptr); }

std::vector<std::string> why(const KubeSpec& spec, const KubeAttributes& a) {
  std::vector<std::string> failed;
  CHECK_FALSE(match_kube(spec, a, &failed));
  return failed;
}

KubeSpec ci_reads_prod() {
  KubeSpec s;
  s.verbs = {"get", "list", "watch"};
  s.resources = {"pods", "pods/log", "deployments.apps"};
  s.namespaces = {"prod"};
  return s;
}

}  // namespace

TEST_CASE("the CONFIG.md ci-reads-prod rule", "[kube][match]") {
  const KubeSpec s = ci_reads_prod();
  REQUIRE_NOTHROW(validate_kube_spec(s));
  CHECK(matches(s, req("GET", "/api/v1/namespaces/prod/pods")));
  CHECK(matches(s, req("GET", "/api/v1/namespaces/prod/pods", "watch=1")));
  CHECK(matches(s, req("GET", "/api/v1/namespaces/prod/pods/web-0/log", "follow=true")));
  CHECK(matches(s, req("GET", "/apis/apps/v1/namespaces/prod/deployments/web")));
  CHECK(matches(s, req("GET", "/api/v1/watch/namespaces/prod/pods")));

  CHECK(why(s, req("DELETE", "/api/v1/namespaces/prod/pods/x")) ==
        std::vector<std::string>{"verb delete not in [get, list, watch]"});
  CHECK(why(s, req("GET", "/api/v1/namespaces/prod/secrets")) ==
        std::vector<std::string>{"resource secrets not in [pods, pods/log, deployments.apps]"});
  CHECK(why(s, req("GET", "/api/v1/namespaces/dev/pods")) == std::vector<std::string>{"namespace dev not in [prod]"});
  CHECK(why(s, req("GET", "/api/v1/pods")) == std::vector<std::string>{"cluster scope not in [prod]"});
  // Every failed condition is reported, not only the first.
  CHECK(why(s, req("DELETE", "/api/v1/namespaces/dev/secrets/x")).size() == 3);
  // A non-resource request never matches a resource rule.
  CHECK(why(s, req("GET", "/version")) ==
        std::vector<std::string>{"rule is for resources, request is for non-resource path /version"});
}

TEST_CASE("resources: a bare name is the core group only", "[kube][match]") {
  KubeSpec s;
  s.resources = {"deployments"};
  CHECK_FALSE(matches(s, req("GET", "/apis/apps/v1/namespaces/prod/deployments")));
  s.resources = {"deployments.apps"};
  CHECK(matches(s, req("GET", "/apis/apps/v1/namespaces/prod/deployments")));
  CHECK_FALSE(matches(s, req("GET", "/apis/extensions/v1beta1/namespaces/prod/deployments")));
  s.resources = {"deployments.*"};
  CHECK(matches(s, req("GET", "/apis/extensions/v1beta1/namespaces/prod/deployments")));
  CHECK_FALSE(matches(s, req("GET", "/apis/apps/v1/namespaces/prod/deployments/web/scale")));
  s.resources = {"pods"};
  CHECK(matches(s, req("GET", "/api/v1/pods")));
  CHECK_FALSE(matches(s, req("GET", "/apis/metrics.k8s.io/v1beta1/pods")));
}

TEST_CASE("resources: wildcards and subresources", "[kube][match]") {
  KubeSpec s;
  s.resources = {"*"};
  CHECK(matches(s, req("GET", "/api/v1/pods")));
  CHECK(matches(s, req("GET", "/apis/apps/v1/namespaces/p/deployments/w/scale")));
  s.resources = {"*.apps"};
  CHECK(matches(s, req("GET", "/apis/apps/v1/namespaces/p/statefulsets")));
  CHECK_FALSE(matches(s, req("GET", "/apis/apps/v1/namespaces/p/deployments/w/scale")));
  CHECK_FALSE(matches(s, req("GET", "/api/v1/pods")));
  s.resources = {"*/*.apps"};
  CHECK(matches(s, req("GET", "/apis/apps/v1/namespaces/p/deployments/w/scale")));
  s.resources = {"pods/*"};
  CHECK(matches(s, req("GET", "/api/v1/namespaces/p/pods/x/log")));
  CHECK(matches(s, req("POST", "/api/v1/namespaces/p/pods/x/exec")));
  CHECK_FALSE(matches(s, req("GET", "/api/v1/namespaces/p/pods/x")));
  s.resources = {"pods"};
  CHECK_FALSE(matches(s, req("GET", "/api/v1/namespaces/p/pods/x/log")));  // as in RBAC
  s.resources = {"*/status"};
  CHECK(matches(s, req("PUT", "/api/v1/namespaces/p/pods/x/status")));
  CHECK(matches(s, req("PUT", "/api/v1/namespaces/p/status")));
  CHECK_FALSE(matches(s, req("PUT", "/apis/apps/v1/namespaces/p/deployments/w/status")));
  s.resources = {"deployments/scale.apps"};
  CHECK(matches(s, req("PATCH", "/apis/apps/v1/namespaces/p/deployments/w/scale")));
  std::vector<std::string> failed;
  CHECK_FALSE(match_kube(s, req("PATCH", "/apis/apps/v1/namespaces/p/deployments/w/status"), &failed));
  CHECK(failed == std::vector<std::string>{"resource deployments/status.apps not in [deployments/scale.apps]"});
}

TEST_CASE("verbs", "[kube][match]") {
  KubeSpec s;
  s.resources = {"pods"};
  s.verbs = {"*"};
  CHECK(matches(s, req("DELETE", "/api/v1/namespaces/p/pods")));
  s.verbs = {"list"};
  CHECK(matches(s, req("GET", "/api/v1/namespaces/p/pods", "watch=false")));
  CHECK_FALSE(matches(s, req("GET", "/api/v1/namespaces/p/pods", "watch=true")));
  CHECK_FALSE(matches(s, req("HEAD", "/api/v1/namespaces/p/pods/x")));
  s.verbs = {"delete"};
  CHECK_FALSE(matches(s, req("DELETE", "/api/v1/namespaces/p/pods")));  // deletecollection
  s.verbs = {"get"};
  CHECK(why(s, req("OPTIONS", "/api/v1/namespaces/p/pods")) == std::vector<std::string>{"verb (none) not in [get]"});
}

TEST_CASE("exec, attach and portforward also need create", "[kube][match]") {
  KubeSpec s;
  s.resources = {"pods/exec", "pods/attach", "pods/portforward"};
  s.verbs = {"get"};
  const KubeAttributes ws = req("GET", "/api/v1/namespaces/p/pods/x/exec", "command=sh");
  const KubeAttributes spdy = req("POST", "/api/v1/namespaces/p/pods/x/exec", "command=sh");
  CHECK(is_kube_streaming_subresource(ws));
  CHECK(kube_requires_create(ws));
  CHECK(why(s, ws) == std::vector<std::string>{"verb create not in [get] (pods/exec requires create)"});
  CHECK_FALSE(matches(s, spdy));
  s.verbs = {"create"};
  CHECK(matches(s, spdy));
  CHECK_FALSE(matches(s, ws));  // the WebSocket form is a get: both verbs are needed
  s.verbs = {"get", "create"};
  CHECK(matches(s, ws));
  CHECK(matches(s, spdy));
  CHECK(matches(s, req("GET", "/api/v1/namespaces/p/pods/x/attach")));
  CHECK(matches(s, req("GET", "/api/v1/namespaces/p/pods/x/portforward")));
  s.verbs = {"*"};
  CHECK(matches(s, ws));
  // Other subresources and the proxy subresource keep their plain verb.
  KubeSpec logs;
  logs.resources = {"pods/log", "pods/proxy"};
  logs.verbs = {"get"};
  CHECK(matches(logs, req("GET", "/api/v1/namespaces/p/pods/x/log")));
  CHECK(matches(logs, req("GET", "/api/v1/namespaces/p/pods/x/proxy/metrics")));
  CHECK(is_kube_streaming_subresource(req("GET", "/api/v1/namespaces/p/services/s/proxy")));
  CHECK_FALSE(kube_requires_create(req("GET", "/api/v1/namespaces/p/pods/x/proxy")));
  CHECK_FALSE(is_kube_streaming_subresource(req("GET", "/api/v1/namespaces/p/pods/x/log")));
}

TEST_CASE("a server-side apply also needs create: the apiserver creates a missing object", "[kube][match]") {
  // handlers/patch.go: an apply patch sets forceAllowCreate and authorizes `create` itself when
  // the object does not exist; a rule that grants patch but not create must not let it through.
  KubeSpec s;
  s.resources = {"configmaps"};
  s.namespaces = {"dev"};
  s.verbs = {"get", "patch"};
  const char* path = "/api/v1/namespaces/dev/configmaps/new";
  const KubeAttributes apply = resolve_kube("PATCH", path, "fieldManager=kubectl", "application/apply-patch+yaml");
  CHECK(apply.verb == "patch");
  CHECK(apply.apply_patch);
  CHECK(kube_requires_create(apply));
  CHECK(why(s, apply) == std::vector<std::string>{"verb create not in [get, patch] (a server-side apply creates a "
                                                  "missing object)"});
  // The apiserver reads the type up to ';'; CBOR apply too; any spelling that might be one.
  CHECK_FALSE(matches(s, resolve_kube("PATCH", path, "", "application/apply-patch+yaml; charset=utf-8")));
  CHECK_FALSE(matches(s, resolve_kube("PATCH", path, "", "application/apply-patch+cbor")));
  CHECK_FALSE(matches(s, resolve_kube("PATCH", path, "", " Application/Apply-Patch+YAML")));
  // Other patch types never create: patch is enough.
  CHECK(matches(s, resolve_kube("PATCH", path, "", "application/merge-patch+json")));
  CHECK(matches(s, resolve_kube("PATCH", path, "", "application/strategic-merge-patch+json")));
  CHECK(matches(s, resolve_kube("PATCH", path, "", "application/json-patch+json")));
  CHECK(matches(s, resolve_kube("PATCH", path, "")));
  // Only a patch is an apply: the content type of a get or a create changes nothing.
  CHECK_FALSE(resolve_kube("GET", path, "", "application/apply-patch+yaml").apply_patch);
  CHECK_FALSE(resolve_kube("PUT", path, "", "application/apply-patch+yaml").apply_patch);
  s.verbs = {"patch", "create"};
  CHECK(matches(s, apply));
  s.verbs = {"*"};
  CHECK(matches(s, apply));
}

TEST_CASE("namespaces: empty is any, cluster scope needs \"\"", "[kube][match]") {
  KubeSpec s;
  s.resources = {"*"};
  CHECK(matches(s, req("GET", "/api/v1/nodes")));
  CHECK(matches(s, req("GET", "/api/v1/namespaces/a/pods")));
  s.namespaces = {"*"};
  CHECK(matches(s, req("GET", "/api/v1/namespaces/a/pods")));
  CHECK_FALSE(matches(s, req("GET", "/api/v1/nodes")));
  CHECK_FALSE(matches(s, req("GET", "/api/v1/pods")));  // across all namespaces = no namespace
  s.namespaces = {""};
  CHECK(matches(s, req("GET", "/api/v1/nodes")));
  CHECK_FALSE(matches(s, req("GET", "/api/v1/namespaces/a/pods")));
  s.namespaces = {"a"};
  CHECK(matches(s, req("GET", "/api/v1/namespaces/a")));  // the namespace object is in itself
}

TEST_CASE("names: empty is any, else the request must name one", "[kube][match]") {
  KubeSpec s;
  s.resources = {"configmaps"};
  s.names = {"app-config"};
  CHECK(matches(s, req("GET", "/api/v1/namespaces/p/configmaps/app-config")));
  CHECK(matches(s, req("GET", "/api/v1/namespaces/p/configmaps", "fieldSelector=metadata.name%3Dapp-config&watch=1")));
  CHECK(why(s, req("GET", "/api/v1/namespaces/p/configmaps")) ==
        std::vector<std::string>{"no name not in [app-config]"});
  CHECK_FALSE(matches(s, req("POST", "/api/v1/namespaces/p/configmaps")));
  CHECK_FALSE(matches(s, req("GET", "/api/v1/namespaces/p/configmaps/other")));
}

TEST_CASE("names: a create's name in the URL is not the object's", "[kube][match]") {
  // RequestInfo names a POST to /.../widgets/mine "mine", but a custom resource's handler creates
  // the object the body names (handlers/create.go ignores the URL's name).
  KubeSpec s;
  s.verbs = {"create", "get"};
  s.resources = {"widgets.example.com", "pods/eviction", "serviceaccounts/token", "pods/exec"};
  s.names = {"mine"};
  const KubeAttributes create = req("POST", "/apis/example.com/v1/namespaces/p/widgets/mine");
  CHECK(create.verb == "create");
  CHECK(create.name == "mine");  // as RequestInfo reports it
  CHECK(why(s, create) ==
        std::vector<std::string>{"name mine is not the object's (a create takes its name from the body)"});
  CHECK_FALSE(matches(s, req("POST", "/apis/example.com/v1/widgets/mine")));
  CHECK(matches(s, req("GET", "/apis/example.com/v1/namespaces/p/widgets/mine")));
  // A subresource's create acts on the object in the URL.
  CHECK(matches(s, req("POST", "/api/v1/namespaces/p/pods/mine/eviction")));
  CHECK(matches(s, req("POST", "/api/v1/namespaces/p/serviceaccounts/mine/token")));
  CHECK(matches(s, req("POST", "/api/v1/namespaces/p/pods/mine/exec", "command=sh")));
  CHECK_FALSE(matches(s, req("POST", "/api/v1/namespaces/p/pods/other/eviction")));
}

TEST_CASE("non_resource_urls", "[kube][match]") {
  KubeSpec s;
  s.non_resource_urls = {"/version", "/api", "/api/*", "/apis", "/apis/*", "/openapi/**", "/healthz*"};
  REQUIRE_NOTHROW(validate_kube_spec(s));
  for (const char* p : {"/version", "/api", "/api/v1", "/apis", "/apis/apps", "/openapi/v2", "/openapi/v3/apis/apps/v1",
                        "/openapi", "/healthz", "/healthz/etcd", "/healthzz"}) {
    INFO(p);
    CHECK(matches(s, req("GET", p)));
  }
  for (const char* p : {"/apis/apps/v1", "/version/x", "/metrics", "/", "/openapiv2"}) {
    INFO(p);
    CHECK_FALSE(matches(s, req("GET", p)));
  }
  // A non-resource rule never matches a resource request.
  CHECK(why(s, req("GET", "/api/v1/pods")) ==
        std::vector<std::string>{"rule is for non-resource URLs, request is for pods"});
  // Verbs with non_resource_urls are lowercased methods.
  s.verbs = {"get", "head"};
  CHECK(matches(s, req("HEAD", "/version")));
  CHECK(why(s, req("POST", "/version")) == std::vector<std::string>{"verb post not in [get, head]"});
  KubeSpec slash;
  slash.non_resource_urls = {"/version/"};
  CHECK(matches(slash, req("GET", "/version/")));
  CHECK_FALSE(matches(slash, req("GET", "/version")));
}

TEST_CASE("an unresolvable request matches nothing", "[kube][match]") {
  KubeSpec s;
  s.resources = {"*"};
  const KubeAttributes a = req("GET", "/api/v1/watch");
  CHECK_FALSE(matches(s, a));
  KubeSpec any;
  CHECK_FALSE(matches(any, a));
}

TEST_CASE("an empty kubernetes rule allows every resource request and no other", "[kube][match]") {
  const KubeSpec s;
  CHECK(matches(s, req("DELETE", "/api/v1/namespaces/p/pods/x")));
  CHECK_FALSE(matches(s, req("GET", "/version")));
}

TEST_CASE("validate_kube_spec rejects bad entries with a precise message", "[kube][validate]") {
  auto message = [](const KubeSpec& s) -> std::string {
    try {
      validate_kube_spec(s);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  KubeSpec s;
  s.verbs = {"gets"};
  CHECK_THAT(message(s), Catch::StartsWith("unknown verb \"gets\"; expected one of: get, list, watch"));
  s.verbs = {"GET"};
  CHECK_THAT(message(s), Catch::Contains("(verbs are lowercase)"));
  s.verbs = {"impersonate"};
  CHECK_THAT(message(s), Catch::StartsWith("unknown verb \"impersonate\""));
  s = {};
  s.non_resource_urls = {"/version"};
  s.verbs = {"list"};
  CHECK_THAT(message(s), Catch::Contains("with non_resource_urls"));
  s.verbs = {"post"};
  CHECK(message(s).empty());

  for (const char* bad : {"Pods", "pods/", "/log", "pods.", "pods..apps", "pods/log/x", "po*", "pods.Apps", ""}) {
    INFO(bad);
    KubeSpec r;
    r.resources = {bad};
    CHECK_THAT(message(r), Catch::StartsWith("bad resource \"" + std::string(bad) + "\""));
  }
  for (const char* good : {"*", "pods", "pods/log", "pods/*", "*/scale", "*.apps", "*.*", "deployments/scale.apps",
                           "widgets.custom.example.com", "deployments.*"}) {
    INFO(good);
    KubeSpec r;
    r.resources = {good};
    CHECK(message(r).empty());
  }
  s = {};
  s.namespaces = {"Prod"};
  CHECK_THAT(message(s), Catch::StartsWith("bad namespace \"Prod\""));
  s.namespaces = {"", "*", "kube-system"};
  CHECK(message(s).empty());
  s = {};
  s.names = {"a/b"};
  CHECK_THAT(message(s), Catch::StartsWith("bad name \"a/b\""));
  s.names = {""};
  CHECK_THAT(message(s), Catch::StartsWith("bad name \"\""));
  for (const char* bad : {"version", "/a/**/b", "/a*/b", "/a/*x", "/a//b", "/*/b*"}) {
    INFO(bad);
    KubeSpec u;
    u.non_resource_urls = {bad};
    CHECK_THAT(message(u), Catch::StartsWith("bad non_resource_url"));
  }
  s = {};
  s.non_resource_urls = {"/version"};
  s.resources = {"pods"};
  CHECK_THAT(message(s), Catch::StartsWith("non_resource_urls cannot be combined"));
}

TEST_CASE("describe and kube_resource_string", "[kube][describe]") {
  CHECK(describe(req("DELETE", "/api/v1/namespaces/prod/pods/x")) == "delete pods \"x\" in namespace \"prod\"");
  CHECK(describe(req("GET", "/apis/apps/v1/namespaces/prod/deployments")) == "list deployments.apps in namespace \"prod\"");
  CHECK(describe(req("POST", "/api/v1/namespaces/prod/pods/web-0/exec")) ==
        "create pods/exec \"web-0\" in namespace \"prod\"");
  CHECK(describe(req("GET", "/api/v1/nodes")) == "list nodes at the cluster scope");
  CHECK(describe(req("GET", "/version")) == "get path \"/version\"");
  CHECK(kube_resource_string(req("PATCH", "/apis/apps/v1/namespaces/p/deployments/w/scale")) == "deployments/scale.apps");
  CHECK(kube_resource_string(req("GET", "/version")).empty());
}

TEST_CASE("validate_kube_spec says which entry is bad", "[kube][validate]") {
  KubeSpec s;
  s.verbs = {"get", "list"};
  s.resources = {"pods", "deployments.apps", "Secrets"};
  try {
    validate_kube_spec(s);
    FAIL("no error");
  } catch (const KubeSpecError& e) {
    CHECK(e.field == "resources");
    CHECK(e.index == 2);
  }
  s.resources = {"pods"};
  s.names = {"ok", "a/b"};
  CHECK_THROWS_MATCHES(validate_kube_spec(s), KubeSpecError,
                       Catch::Predicate<KubeSpecError>([](const KubeSpecError& e) {
                         return e.field == "names" && e.index == 1;
                       }));
}
