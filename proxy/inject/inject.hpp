#pragma once
// Sidecar injection (`portcullis inject`, `portcullis webhook`): pure
// transformations of Kubernetes objects held as JSON values. No I/O here.
//
// What a pod template gets (docs/deploy.md): an init container
// `portcullis-init` running `portcullis firewall apply` with only NET_ADMIN and
// NET_RAW, then the native sidecar `portcullis-proxy` (an init container with
// restartPolicy: Always) running `portcullis run --no-firewall` as UID 1337,
// both placed before the pod's own init containers; the app's httpGet probes
// rewritten to the sidecar's probes listener; the config (ConfigMap) and
// certificates (Secret, cert-manager layout) mounted read-only.
#include <boost/json/value.hpp>
#include <stdexcept>
#include <string>

#include "proxy/inject/yaml_json.hpp"

namespace portcullis::inject {

inline constexpr const char* kInitName = "portcullis-init";
inline constexpr const char* kProxyName = "portcullis-proxy";
inline constexpr const char* kConfigVolume = "portcullis-config";
inline constexpr const char* kCertsVolume = "portcullis-certs";
inline constexpr const char* kConfigDir = "/etc/portcullis/config";
inline constexpr const char* kCertsDir = "/etc/portcullis/certs";
inline constexpr const char* kBinary = "/usr/local/bin/portcullis";
inline constexpr int kProbePort = 15021;
inline constexpr int kProxyUid = 1337;
// Where the sidecar finds the rewritten probes' original targets (JSON, as
// Istio's ISTIO_KUBE_APP_PROBERS): {"/app-health/app/livez": {"httpGet": {...},
// "timeoutSeconds": 1}}.
inline constexpr const char* kProbesEnv = "PORTCULLIS_APP_PROBES";

inline constexpr const char* kAnnotationInject = "portcullis.io/inject";
inline constexpr const char* kAnnotationInboundPorts = "portcullis.io/inbound-ports";
inline constexpr const char* kAnnotationExcludeOutbound = "portcullis.io/exclude-outbound-ports";

struct Options {
  std::string image = "portcullis:dev";
  std::string config_map = "portcullis-config";  // holds the sidecar config under `config_key`
  std::string config_key = "config.yaml";
  std::string secret = "portcullis-certs";  // tls.crt, tls.key, ca.crt (cert-manager layout)
};

// A manifest the injector cannot handle; `path` locates the offending value.
struct InjectError : std::runtime_error {
  InjectError(JsonPath p, const std::string& message) : std::runtime_error(message), path(std::move(p)) {}
  JsonPath path;
};

enum class Outcome { injected, already_injected, opted_out, host_network };

// Injects into one pod: `metadata` (may be null) and `spec` of a Pod or a pod
// template. `owner_annotations` are the enclosing workload's (null for a Pod);
// the template's own win. `path` locates `spec` for errors. Throws InjectError.
Outcome inject_pod_spec(const boost::json::value& metadata, boost::json::object& spec,
                        const boost::json::value& owner_annotations, const Options& options, const JsonPath& path);

// One Kubernetes object of any kind: the pod template of a Pod, Deployment,
// StatefulSet, DaemonSet, ReplicaSet, Job or CronJob is injected, a List's
// items are visited, anything else is unchanged. Returns how many pod templates
// were injected. Throws InjectError.
int inject_object(boost::json::value& object, const Options& options, const JsonPath& path = {});

// A manifest file's text (multi-document YAML) in, the injected YAML out.
// Throws std::runtime_error with "FILE:LINE:COL: message" for malformed YAML or
// an object the injector cannot handle.
std::string inject_manifests(const std::string& text, const std::string& filename, const Options& options);

}  // namespace portcullis::inject
