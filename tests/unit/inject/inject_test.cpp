#include "proxy/inject/inject.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>

#include "tests/unit/inject/test_support.hpp"

using namespace portcullis::inject;
using portcullis::inject::test::kGoldenDir;
using portcullis::inject::test::read_text;
namespace json = boost::json;

namespace {

std::string inject_text(const std::string& text, const Options& o = {}) { return inject_manifests(text, "m.yaml", o); }

// Compares `portcullis inject` of golden/NAME.in.yaml with
// golden/NAME.out.yaml.
void check_golden(const std::string& name) {
  const std::string in = kGoldenDir + name + ".in.yaml";
  const std::string out = kGoldenDir + name + ".out.yaml";
  const std::string got = inject_manifests(read_text(in), in, Options{});
  if (std::getenv("PORTCULLIS_UPDATE_GOLDEN")) {
    std::ofstream(out, std::ios::binary) << got;
  }
  INFO("golden file " << out << " (PORTCULLIS_UPDATE_GOLDEN=1 rewrites it)");
  CHECK(got == read_text(out));
  // Idempotence: injecting the output again changes nothing.
  CHECK(inject_manifests(got, out, Options{}) == got);
}

json::value first_doc(const std::string& yaml) { return yaml_to_json(YAML::LoadAll(yaml).at(0)); }

json::array names(const json::value& list) {
  json::array n;
  for (const auto& c : list.as_array()) n.push_back(c.at("name"));
  return n;
}

const json::value& container(const json::value& spec, const char* list, const char* name) {
  for (const auto& c : spec.at(list).as_array())
    if (c.at("name") == name) return c;
  FAIL("no container " << name);
  throw std::logic_error("unreachable");
}

const std::string kPod = R"(apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
    - name: app
      image: app:1
      ports:
        - containerPort: 8080
)";

}  // namespace

TEST_CASE("golden: Pod with its own init containers and probes") { check_golden("pod"); }
TEST_CASE("golden: Deployment") { check_golden("deployment"); }
TEST_CASE("golden: StatefulSet with an inbound-ports annotation") { check_golden("statefulset"); }
TEST_CASE("golden: DaemonSet with an exclude-outbound-ports annotation") { check_golden("daemonset"); }
TEST_CASE("golden: ReplicaSet with an HTTPS probe") { check_golden("replicaset"); }
TEST_CASE("golden: Job") { check_golden("job"); }
TEST_CASE("golden: CronJob (jobTemplate.spec.template)") { check_golden("cronjob"); }
TEST_CASE(
    "golden: multi-document file with other kinds and an opted-out "
    "Deployment") {
  check_golden("multi");
}
TEST_CASE("golden: List") { check_golden("list"); }

TEST_CASE("ours come first, the pod's init containers keep their order after them") {
  auto pod = first_doc(inject_text(read_text(kGoldenDir + "pod.in.yaml")));
  CHECK(names(pod.at("spec").at("initContainers")) ==
        json::array{"portcullis-init", "portcullis-proxy", "migrate", "warm-cache"});
  CHECK(names(pod.at("spec").at("containers")) == json::array{"app"});
}

TEST_CASE(
    "the init container has only NET_ADMIN and NET_RAW, the sidecar is a "
    "locked-down native sidecar") {
  auto spec = first_doc(inject_text(kPod)).at("spec");
  const auto& init = container(spec, "initContainers", "portcullis-init");
  CHECK(init.at("securityContext").at("capabilities") ==
        json::parse(R"({"add":["NET_ADMIN","NET_RAW"],"drop":["ALL"]})"));
  CHECK(init.at("securityContext").at("privileged") == false);
  CHECK(init.at("securityContext").at("allowPrivilegeEscalation") == false);
  CHECK(init.at("args") == json::parse(
                               R"(["firewall","apply","-c","/etc/portcullis/config/config.yaml",
                                          "--inbound-ports","8080"])"));
  CHECK_FALSE(init.as_object().contains("restartPolicy"));

  const auto& proxy = container(spec, "initContainers", "portcullis-proxy");
  CHECK(proxy.at("restartPolicy") == "Always");
  CHECK(proxy.at("args") == json::parse(R"(["run","-c","/etc/portcullis/config/config.yaml","--no-firewall"])"));
  const auto& sc = proxy.at("securityContext");
  CHECK(sc.at("runAsUser") == 1337);
  CHECK(sc.at("runAsNonRoot") == true);
  CHECK(sc.at("readOnlyRootFilesystem") == true);
  CHECK(sc.at("capabilities") == json::parse(R"({"drop":["ALL"]})"));
  CHECK(proxy.at("startupProbe").at("httpGet") ==
        json::parse(R"({"path":"/healthz/ready","port":15021,"scheme":"HTTP"})"));
  CHECK(proxy.at("readinessProbe").at("httpGet").at("port") == 15021);
  CHECK(proxy.at("resources").at("requests").as_object().contains("memory"));
  for (const auto& m : proxy.at("volumeMounts").as_array()) CHECK(m.at("readOnly") == true);
}

TEST_CASE("ConfigMap, Secret and image names come from the options") {
  Options o;
  o.image = "registry.example/portcullis:1.2.3";
  o.config_map = "mesh-config";
  o.config_key = "sidecar.yaml";
  o.secret = "mesh-tls";
  auto spec = first_doc(inject_text(kPod, o)).at("spec");
  CHECK(spec.at("volumes") == json::parse(
                                  R"([{"name":"portcullis-config","configMap":{"name":"mesh-config"}},
                                             {"name":"portcullis-certs","secret":{"secretName":"mesh-tls"}}])"));
  const auto& proxy = container(spec, "initContainers", "portcullis-proxy");
  CHECK(proxy.at("image") == "registry.example/portcullis:1.2.3");
  CHECK(proxy.at("args").at(2) == "/etc/portcullis/config/sidecar.yaml");
}

TEST_CASE(
    "httpGet probes go through the sidecar's probes listener, the "
    "original target is recorded") {
  auto spec = first_doc(inject_text(read_text(kGoldenDir + "pod.in.yaml"))).at("spec");
  const auto& app = container(spec, "containers", "app");
  CHECK(app.at("livenessProbe").at("httpGet") ==
        json::parse(R"({"path":"/app-health/app/livez","port":15021,"scheme":"HTTP"})"));
  CHECK(app.at("livenessProbe").at("periodSeconds") == 10);  // timing is the app's
  CHECK(app.at("readinessProbe").at("httpGet").at("path") == "/app-health/app/readyz");
  CHECK(app.at("startupProbe").at("tcpSocket").at("port") == 8080);  // not HTTP: unchanged
  const auto& proxy = container(spec, "initContainers", "portcullis-proxy");
  const auto& env = proxy.at("env").at(0);
  CHECK(env.at("name") == "PORTCULLIS_APP_PROBES");
  auto recorded = json::parse(env.at("value").as_string());
  // The named port is resolved to its number, headers are kept for the sidecar
  // to send.
  CHECK(recorded.at("/app-health/app/livez") == json::parse(R"({"httpGet":{"path":"/healthz","port":8080,
      "httpHeaders":[{"name":"X-Probe","value":"liveness"}]},"timeoutSeconds":2})"));
  CHECK(recorded.at("/app-health/app/readyz") == json::parse(R"({"httpGet":{"path":"/ready","port":8080}})"));
}

TEST_CASE("inbound ports: the TCP container ports, or the annotation") {
  auto spec = first_doc(inject_text(read_text(kGoldenDir + "pod.in.yaml"))).at("spec");
  // 7946 is UDP: not intercepted.
  CHECK(container(spec, "initContainers", "portcullis-init").at("args").at(5) == "8080,9090");
  spec = first_doc(inject_text(read_text(kGoldenDir + "statefulset.in.yaml"))).at("spec").at("template").at("spec");
  CHECK(container(spec, "initContainers", "portcullis-init").at("args").at(5) == "5432");
  spec = first_doc(inject_text(read_text(kGoldenDir + "daemonset.in.yaml"))).at("spec").at("template").at("spec");
  auto args = container(spec, "initContainers", "portcullis-init").at("args").as_array();
  REQUIRE(args.size() == 8);
  CHECK(args.at(6) == "--exclude-outbound-ports");
  CHECK(args.at(7) == "53,9200");
}

TEST_CASE(
    "opt-out on the pod template or on the workload leaves the object "
    "unchanged") {
  const std::string pod_opt_out = R"(apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations:
    portcullis.io/inject: "false"
spec:
  containers:
    - name: app
      image: app:1
)";
  CHECK(inject_text(pod_opt_out) == pod_opt_out);
  const std::string deploy_opt_out = R"(apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
spec:
  template:
    metadata:
      annotations:
        portcullis.io/inject: "false"
    spec:
      containers:
        - name: app
          image: app:1
)";
  CHECK(inject_text(deploy_opt_out) == deploy_opt_out);
  // "true" (the template's own annotation wins over the workload's) injects.
  const std::string opt_in = R"(apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
  annotations:
    portcullis.io/inject: "false"
spec:
  template:
    metadata:
      annotations:
        portcullis.io/inject: "true"
    spec:
      containers:
        - name: app
          image: app:1
)";
  CHECK(inject_text(opt_in).find("portcullis-proxy") != std::string::npos);
}

TEST_CASE("host-network pods and kinds without a pod template are left alone") {
  const std::string host = R"(apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  hostNetwork: true
  containers:
    - name: app
      image: app:1
)";
  CHECK(inject_text(host) == host);
  const std::string svc = R"(apiVersion: v1
kind: Service
metadata:
  name: s
spec:
  ports:
    - port: 80
)";
  CHECK(inject_text(svc) == svc);
}

TEST_CASE("malformed YAML is FILE:LINE:COL: message") {
  auto error_of = [](const std::string& text) {
    try {
      inject_manifests(text, "bad.yaml", Options{});
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(error_of("kind: Pod\nspec:\n  containers: [a\n") == "bad.yaml:4:1: end of sequence flow not found");
  CHECK(error_of("kind: Pod\nmetadata: {}\nmetadata: {}\n") == "bad.yaml:3:1: duplicate key 'metadata'");
  CHECK(error_of("kind: Pod\nspec:\n  containers: web\n") == "bad.yaml:3:15: spec.containers must be a list");
  CHECK(error_of("kind: Pod\nspec:\n  containers: []\n") == "bad.yaml:3:15: spec.containers: a pod needs containers");
  CHECK(error_of("kind: Deployment\nspec:\n  replicas: 1\n") == "bad.yaml:3:3: spec: no template");
  CHECK(error_of("---\nkind: Pod\nmetadata:\n  annotations:\n    "
                 "portcullis.io/inject: nope\nspec:\n"
                 "  containers:\n  - name: a\n") ==
        "bad.yaml:5:27: annotation portcullis.io/inject must be \"true\" or "
        "\"false\", not 'nope'");
  CHECK(error_of("kind: Pod\nmetadata:\n  annotations:\n    "
                 "portcullis.io/inbound-ports: \"80,http\"\nspec:\n"
                 "  containers:\n  - name: a\n") ==
        "bad.yaml:4:34: annotation portcullis.io/inbound-ports: 'http' is not "
        "a port number (1-65535)");
  CHECK(error_of("kind: Pod\nspec:\n  containers:\n  - name: portcullis-proxy\n") ==
        "bad.yaml:4:11: container name 'portcullis-proxy' is reserved for the "
        "sidecar");
  CHECK(error_of("kind: Pod\nspec:\n  containers:\n  - name: a\n    "
                 "livenessProbe:\n      httpGet:\n"
                 "        port: web\n") ==
        "bad.yaml:7:15: spec.containers[0].livenessProbe.httpGet.port: no "
        "container port is named 'web'");
}
