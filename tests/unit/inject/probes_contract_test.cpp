// The contract between `portcullis inject` (which records the app's probes) and the sidecar's
// probes listener (which reads them back from PORTCULLIS_APP_PROBES).
#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include "proxy/inject/inject.hpp"
#include "proxy/observe/probes.hpp"
#include "tests/unit/inject/test_support.hpp"

using namespace portcullis;

TEST_CASE("the probes inject records are the probes the sidecar serves") {
  const auto text = inject::inject_manifests(inject::test::read_text(inject::test::kGoldenDir + "pod.in.yaml"),
                                             "pod.in.yaml", inject::Options{});
  auto pod = inject::yaml_to_json(YAML::Load(text));
  const auto& proxy = pod.at("spec").at("initContainers").at(1);
  REQUIRE(proxy.at("name") == inject::kProxyName);
  const auto probes = observe::parse_app_probes(proxy.at("env").at(0).at("value").as_string());
  REQUIRE(probes.size() == 2);
  const auto& live = probes.at("/app-health/app/livez");
  CHECK(live.port == 8080);  // the named port "http", resolved
  CHECK(live.path == "/healthz");
  CHECK_FALSE(live.https);
  CHECK(live.timeout_seconds == 2);
  CHECK(live.headers == std::vector<std::pair<std::string, std::string>>{{"X-Probe", "liveness"}});
  CHECK(probes.at("/app-health/app/readyz").path == "/ready");
}

TEST_CASE("a probes environment that could smuggle a request is refused") {
  auto error_of = [](const char* text) {
    try {
      observe::parse_app_probes(text);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  CHECK(error_of("[]") == "PORTCULLIS_APP_PROBES is not a JSON object");
  CHECK(error_of(R"({"/other":{"httpGet":{"port":80}}})") ==
        "PORTCULLIS_APP_PROBES: /other: paths start with /app-health/");
  CHECK(error_of(R"({"/app-health/a/livez":{"httpGet":{"port":80,"path":"/x HTTP/1.1\r\nHost: evil"}}})") ==
        "PORTCULLIS_APP_PROBES: /app-health/a/livez: httpGet.path must be an absolute path");
  CHECK(
      error_of(R"({"/app-health/a/livez":{"httpGet":{"port":80,"httpHeaders":[{"name":"A","value":"b\r\nC: d"}]}}})") ==
      "PORTCULLIS_APP_PROBES: /app-health/a/livez: httpGet.httpHeaders entries need a name and a value on one line");
  CHECK(error_of(R"({"/app-health/a/livez":{"httpGet":{"port":80,"scheme":"FTP"}}})") ==
        "PORTCULLIS_APP_PROBES: /app-health/a/livez: httpGet.scheme must be HTTP or HTTPS");
}
