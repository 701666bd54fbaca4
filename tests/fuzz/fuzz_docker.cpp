// The Docker resolver and body inspector: random endpoint + Content-Type + body. Never throws;
// a refused body leaves a refusal that docker_refusal() reports and no rule can allow. Host
// paths resolve through a fake realpath (the fuzzer must not touch the file system).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <string>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/normalize.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace portcullis;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider p(data, size);
  static const char* targets[] = {"/v1.43/containers/create", "/containers/create?name=x", "/v1.41/services/create",
                                  "/services/x/update?version=1", "/exec/abc/start", "/containers/abc/exec",
                                  "/images/create?fromImage=alpine&tag=3", "/build?t=x", "/v1.43/containers/json"};
  static const char* types[] = {"application/json", "application/json; charset=utf-8", "text/plain",
                                "application/x-www-form-urlencoded", ""};
  std::string target = p.ConsumeBool() ? targets[p.ConsumeIntegralInRange<int>(0, 8)] : p.ConsumeRandomLengthString(64);
  std::string method = p.ConsumeBool() ? "POST" : "GET";
  std::string content_type = types[p.ConsumeIntegralInRange<int>(0, 4)];
  std::string body = p.ConsumeRemainingBytesAsString();

  auto n = policy::normalize_target(method, target);
  if (!n.ok) return 0;
  auto attrs = policy::resolve_docker(method, n.path, n.query);
  (void)policy::docker_content_type_refusal(content_type);
  policy::DockerHostPaths host;
  host.realpath = [](std::string_view path) -> std::optional<std::string> {
    if (path.empty() || path.front() != '/') return std::nullopt;
    return std::string(path);
  };
  bool refused = false;
  if (attrs.body != policy::DockerBody::none) refused = policy::inspect_docker_body(content_type, body, attrs, host).has_value();
  auto refusal = policy::docker_refusal(attrs);
  if (refused) FUZZ_CHECK(refusal.has_value());

  policy::DockerSpec everything;
  everything.actions = {"*"};
  everything.images = {"*"};
  everything.bind_sources = {"/**"};
  everything.allow = policy::docker_allow_names();
  std::vector<std::string> failed;
  bool m = policy::match_docker(everything, attrs, &failed);
  if (refusal) FUZZ_CHECK(!m);
  return 0;
}
