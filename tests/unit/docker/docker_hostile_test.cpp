// Hostile input: resolve / inspect / match never throw, and a body is either refused or inspected.
#include <catch2/catch.hpp>

#include <random>

#include "proxy/policy/docker.hpp"

using namespace portcullis::policy;

TEST_CASE("mutated paths, queries and bodies never throw and always end refused or inspected") {
  const std::string seeds[] = {
      R"({"Image":"nginx","HostConfig":{"Privileged":true,"Binds":["/etc:/x"],"SecurityOpt":["seccomp=unconfined"],
          "PortBindings":{"80/tcp":[{"HostPort":"80"}]},"Mounts":[{"Type":"volume","VolumeOptions":{"DriverConfig":
          {"Options":{"o":"bind","device":"/srv/x"}}}}]}})",
      R"({"TaskTemplate":{"ContainerSpec":{"Image":"a/b:c","Privileges":{"Seccomp":{"Mode":"custom"}},
          "Mounts":[{"Type":"bind","Source":"/../x"}]},"Networks":[{"Target":"host"}]},
          "EndpointSpec":{"Ports":[{"PublishedPort":1.5}]}})",
      R"({"Driver":"local","DriverOpts":{"type":"overlay","o":"lowerdir=/a:/b,upperdir=/c","device":"/dev/x"}})",
  };
  const char* paths[] = {"/containers/create", "/services/create", "/volumes/create", "/v1.47/containers/x/exec",
                         "/containers/x/update", "/services/y/update"};
  DockerHostPaths host;
  host.realpath = [](std::string_view p) -> std::optional<std::string> {
    if (p.find("missing") != std::string_view::npos) return std::nullopt;
    return std::string(p);
  };
  std::mt19937 rng(12345);
  static const char kAlphabet[] = "{}[]\":,\\/.0123456789aAeEnNtTfFlLsSuU -_+%@;=?&\x00\xff\xc5\xbf";
  const std::string alphabet(kAlphabet, sizeof kAlphabet - 1);  // with its NUL
  DockerSpec spec;
  spec.images = {"docker.io/library/*"};
  spec.bind_sources = {"/srv/**"};
  for (int i = 0; i < 20000; ++i) {
    std::string body = seeds[rng() % 3];
    for (int m = rng() % 6; m >= 0; --m) {
      std::size_t at = rng() % (body.size() + 1);
      switch (rng() % 3) {
        case 0: body.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
        case 1: if (at < body.size()) body.erase(at, 1); break;
        default: if (at < body.size()) body[at] = alphabet[rng() % alphabet.size()]; break;
      }
    }
    std::string path = paths[rng() % 6];
    if (rng() % 4 == 0) path.insert(rng() % path.size(), 1, alphabet[rng() % alphabet.size()]);
    std::string query = rng() % 2 ? "fromImage=" + body.substr(0, rng() % 20) : "";
    DockerAttributes a;
    REQUIRE_NOTHROW(a = resolve_docker(rng() % 2 ? "POST" : "GET", path, query));
    std::optional<std::string> refusal;
    REQUIRE_NOTHROW(refusal = inspect_docker_body("application/json", body, a, host));
    if (a.body != DockerBody::none) CHECK((refusal.has_value() != a.body_inspected));
    std::vector<std::string> failed;
    bool allowed = false;
    REQUIRE_NOTHROW(allowed = match_docker(spec, a, &failed));
    CHECK(allowed == failed.empty());
    if (refusal) CHECK_FALSE(allowed);
  }
}
