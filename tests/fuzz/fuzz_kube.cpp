// The Kubernetes request resolver on arbitrary method / path / query, then matching against a
// few rule shapes. Never throws; a resource request has a resource; an error matches no rule.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>

#include "proxy/policy/kube.hpp"
#include "proxy/policy/normalize.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace portcullis;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider p(data, size);
  static const char* methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT"};
  std::string method = methods[p.ConsumeIntegralInRange<int>(0, 7)];
  std::string target = p.ConsumeRemainingBytesAsString();
  // As the proxy does: normalise first, resolve only what normalisation accepted.
  auto n = policy::normalize_target(method, target);
  if (!n.ok) return 0;
  auto a = policy::resolve_kube(method, n.path, n.query);
  if (a.is_resource_request && a.error.empty()) FUZZ_CHECK(!a.resource.empty() || !a.verb.empty());
  (void)policy::describe(a);
  (void)policy::kube_resource_string(a);
  (void)policy::is_kube_streaming_subresource(a);
  (void)policy::kube_requires_create(a);

  policy::KubeSpec any;
  any.verbs = {"*"};
  any.resources = {"*"};
  policy::KubeSpec narrow;
  narrow.verbs = {"get", "list", "watch"};
  narrow.resources = {"pods", "pods/log", "deployments.apps"};
  narrow.namespaces = {"prod"};
  policy::KubeSpec urls;
  urls.non_resource_urls = {"/version", "/api", "/api/*", "/openapi/**"};
  std::vector<std::string> failed;
  for (const auto* s : {&any, &narrow, &urls}) {
    failed.clear();
    bool m = policy::match_kube(*s, a, &failed);
    if (!a.error.empty()) FUZZ_CHECK(!m);
    if (!m) FUZZ_CHECK(!failed.empty());
  }
  return 0;
}
