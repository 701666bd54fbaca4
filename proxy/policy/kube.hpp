#pragma once
// Kubernetes requests in the apiserver's own terms, and the `kubernetes:` rule form (CONFIG.md).
//
// resolve_kube() follows k8s.io/apiserver pkg/endpoints/request/requestinfo.go (RequestInfo):
// the verb, group, version, namespace, resource, subresource and name that the apiserver's
// authorizer would see for the same request, so that a rule written in RBAC terms means here
// what it would mean there. Pure code: no I/O, and nothing here throws on request data.
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/policy/spec.hpp"

namespace portcullis::policy {

struct KubeAttributes {
  // False for /version, /healthz, /openapi/v3, discovery (/api, /api/v1, /apis, /apis/{group},
  // /apis/{group}/{version}) and anything else outside /api/{v}/... and /apis/{g}/{v}/...
  bool is_resource_request = false;
  std::string path;  // the (normalised) request path, as given
  // Resource requests: get list watch create update patch delete deletecollection, or the
  // deprecated path verbs `watch` / `proxy`, or "" for a method the apiserver has no verb for.
  // Non-resource requests: the method, lowercased.
  std::string verb;
  std::string api_prefix;   // "api" or "apis" (also set for /apis/{g}/{v}, a non-resource request)
  std::string api_group;    // "" = the core group (/api)
  std::string api_version;
  std::string namespace_;   // "" = cluster-scoped (or a namespaced resource listed across all)
  std::string resource;     // e.g. "pods"
  std::string subresource;  // e.g. "exec", "log", "status"
  std::string name;         // from the path, or from fieldSelector=metadata.name=X on list/watch
  std::vector<std::string> parts;  // resource/name/subresource/... as the apiserver splits them
  // Raw selectors, set (as the apiserver does with AuthorizeWithSelectors) for list, watch and
  // deletecollection reached by method, not by the deprecated /watch/ path verb.
  std::string field_selector, label_selector;
  // A server-side apply (PATCH with Content-Type application/apply-patch+yaml or +cbor): the
  // apiserver creates the object when it does not exist, after authorizing `create` on it too
  // (handlers/patch.go: forceAllowCreate, withAuthorization).
  bool apply_patch = false;
  // Non-empty when the apiserver could not resolve the request (it answers 500, e.g.
  // "/api/v1/watch" with nothing after the path verb). Such a request matches no rule.
  std::string error;
};

// path: normalised (dot segments removed, duplicate slashes merged); raw_query: without '?';
// content_type: the request's first Content-Type value, if any (it tells a server-side apply).
KubeAttributes resolve_kube(std::string_view method, std::string_view path, std::string_view raw_query,
                            std::string_view content_type = {});

// pods/exec, pods/attach, pods/portforward, and the proxy subresources of pods, services and
// nodes: requests that upgrade to a raw bidirectional stream (or tunnel to a workload).
bool is_kube_streaming_subresource(const KubeAttributes& a);

// Since Kubernetes 1.35 the apiserver requires `create` on pods/exec, pods/attach and
// pods/portforward for the WebSocket (GET) upgrade too; and a server-side apply creates a missing
// object once the apiserver's own authorizer allows `create`, which a rule granting only `patch`
// never did. True when `a` is such a request; the matcher then also requires that the rule grant
// `create` on it (match_kube does this).
bool kube_requires_create(const KubeAttributes& a);

// Does one `kubernetes:` rule allow this request? `failed` (when non-null) receives each failed
// condition in words, e.g. "verb delete not in [get, list, watch]".
//   resources  resource[/subresource][.group]; a bare name is the core group only ("pods" is
//              never apps/pods); `.*` = any group; `*` as a whole segment = any one name;
//              `pods` does not match pods/log (as in RBAC), `pods/*` matches every subresource
//              of pods but not pods itself; the single entry `*` matches everything.
//   verbs      the resolved verb, or `*`; with non_resource_urls, the lowercased method.
//   namespaces empty = any, cluster-scoped included; otherwise the request's namespace must be
//              listed, and a cluster-scoped request (no namespace) needs "" in the list; `*` =
//              any namespace but not the cluster scope.
//   names      empty = any; otherwise the request must name one of them (so list/create, which
//              carry no name, do not match, as with RBAC resourceNames). A create of a resource
//              never matches, even with a name in its URL: the apiserver creates the body's name.
//              A subresource's create (pods/x/eviction) acts on the named object and does.
//   non_resource_urls  `*` = one segment, `**` as the last segment = any depth (zero or more),
//              a last segment ending in `*` (e.g. `/healthz*`) = a prefix, as in RBAC.
// A rule with non_resource_urls matches only non-resource requests; any other rule only
// resource requests. Never throws.
bool match_kube(const KubeSpec& spec, const KubeAttributes& a, std::vector<std::string>* failed);

// The first bad entry of a KubeSpec: which list (`verbs`, `resources`, `namespaces`, `names`,
// `non_resource_urls`) and which item of it, so that the loader can point at that item.
struct KubeSpecError : std::invalid_argument {
  KubeSpecError(const std::string& what, std::string field_, std::size_t index_)
      : std::invalid_argument(what), field(std::move(field_)), index(index_) {}
  std::string field;
  std::size_t index = 0;
};

// The `resources` entries of a rule that grants `update` but not `create` on a built-in resource
// whose storage creates a missing object on PUT (AllowCreateOnUpdate: services, endpoints,
// events, limitranges, roles and role bindings, leases, poddisruptionbudgets, runtimeclasses,
// admission policies; Kubernetes 1.32). The apiserver then authorizes `create` with its own RBAC,
// which the rule never sees, so `portcullis check` warns. Empty when none. spec: validated.
std::vector<std::string> kube_creates_on_update(const KubeSpec& spec);

// Throws KubeSpecError (a std::invalid_argument) naming the first bad entry (unknown verb,
// malformed resource or URL pattern, resources mixed with non_resource_urls, ...).
void validate_kube_spec(const KubeSpec& spec);

// For deny messages and logs, the parts that follow `user "bob" cannot `:
//   delete pods "x" in namespace "prod"        create pods/exec "web-0" in namespace "prod"
//   list deployments.apps in namespace "prod"  list nodes at the cluster scope
//   get path "/version"
std::string describe(const KubeAttributes& a);
// The resource as a rule names it: "pods", "pods/exec", "deployments.apps", "deployments/scale.apps"
// (empty for non-resource requests). For the access log's kubernetes.resource.
std::string kube_resource_string(const KubeAttributes& a);

}  // namespace portcullis::policy
