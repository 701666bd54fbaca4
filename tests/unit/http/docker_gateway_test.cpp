// proxy/http/docker_gateway: the `portcullis check` warnings for docker listeners and the reason
// a docker client is shown for a denial.
#include "proxy/http/docker_gateway.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

using namespace portcullis;

namespace {

std::string docker_yaml(const std::string& socket_path, const std::string& actions, const std::string& images) {
  return "upstreams:\n"
         "  docker: { address: unix://" + socket_path + " }\n"
         "listeners:\n"
         "  - name: docker\n"
         "    address: 127.0.0.1:0\n"
         "    protocol: docker\n"
         "    upstream: docker\n"
         "    policy: docker\n"
         "policies:\n"
         "  docker:\n"
         "    rules:\n"
         "      - name: builders\n"
         "        from: { groups: [ci] }\n"
         "        docker: { actions: " + actions + (images.empty() ? "" : ", images: " + images) + " }\n";
}

std::string joined(const std::vector<config::Diagnostic>& ds) {
  std::string out;
  for (const auto& d : ds) out += d.str() + "\n";
  return out;
}

// A bound unix socket with `mode`, removed with its directory at the end of the scope.
struct TempSocket {
  std::string dir, path;
  int fd = -1;
  explicit TempSocket(mode_t mode) {
    char tmpl[] = "/tmp/pc-gw-XXXXXX";
    dir = mkdtemp(tmpl);
    path = dir + "/docker.sock";
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::chmod(path.c_str(), mode) == 0);
  }
  ~TempSocket() {
    ::close(fd);
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
  }
};

}  // namespace

TEST_CASE("check warns when a renaming action is granted with an images restriction") {
  auto warned = [](const std::string& actions, const std::string& images) {
    auto cfg = config::load_string(docker_yaml("/nonexistent/docker.sock", actions, images), "gw.yaml");
    return joined(http::docker_config_warnings(cfg));
  };
  for (std::string action : {"image.tag", "image.build", "image.load", "image.import", "container.commit", "\"*\""}) {
    auto text = warned("[read, " + action + "]", "[\"docker.io/library/*\"]");
    INFO(action);
    CHECK(text.find("gw.yaml:") == 0);
    CHECK(text.find("warning: policy 'docker' rule 'builders' grants") != std::string::npos);
  }
  CHECK(warned("[read, image.build]", "").empty());                          // no images restriction
  CHECK(warned("[read, container.create]", "[\"docker.io/library/*\"]").empty());  // nothing renames
}

TEST_CASE("check warns when the upstream docker socket is writable by a group or others") {
  {
    TempSocket open_socket(0666);
    auto cfg = config::load_string(docker_yaml(open_socket.path, "[read]", ""), "gw.yaml");
    auto text = joined(http::docker_config_warnings(cfg));
    CHECK(text.find("socket " + open_socket.path + " is mode 0666: every local user") != std::string::npos);
  }
  {
    TempSocket group_socket(0660);
    auto cfg = config::load_string(docker_yaml(group_socket.path, "[read]", ""), "gw.yaml");
    CHECK(joined(http::docker_config_warnings(cfg)).find("is mode 0660: members of group") != std::string::npos);
  }
  {
    TempSocket private_socket(0600);
    auto cfg = config::load_string(docker_yaml(private_socket.path, "[read]", ""), "gw.yaml");
    CHECK(http::docker_config_warnings(cfg).empty());
  }
}

TEST_CASE("a docker denial names what the caller's nearest rule lacks, and only the caller's rules") {
  policy::PolicySpec spec;
  spec.name = "docker";
  policy::RuleSpec ops;
  ops.name = "ops-run";
  ops.from.groups = {"ops"};
  ops.has_docker = true;
  ops.docker.actions = {"read", "container.create"};
  ops.docker.images = {"docker.io/library/*"};
  spec.rules.push_back(ops);
  policy::RuleSpec secret = ops;
  secret.name = "secret-admins";
  secret.from.groups = {"admins"};
  secret.docker.allow = {"privileged"};
  spec.rules.push_back(secret);
  auto pol = policy::Policy::compile(spec);

  auto attrs = policy::resolve_docker("POST", "/v1.41/containers/create", "");
  REQUIRE_FALSE(policy::inspect_docker_body("application/json", R"({"Image":"busybox","HostConfig":{"Privileged":true}})",
                                            attrs, {}));
  certs::Identity alice{"", "alice", {"ops"}, {}, "00", {}};
  policy::Request req;
  req.peer = &alice;
  req.method = "POST";
  req.path = "/v1.41/containers/create";
  req.docker = &attrs;
  auto decision = pol->decide(req);
  REQUIRE_FALSE(decision.allowed());
  auto reason = http::docker_denial_reason(*pol, req, decision);
  CHECK(reason.starts_with(decision.reason));
  CHECK(reason.find("rule ops-run would, but privileged containers are not allowed") != std::string::npos);
  CHECK(reason.find("secret-admins") == std::string::npos);

  certs::Identity mallory{"", "mallory", {"visitors"}, {}, "01", {}};
  req.peer = &mallory;
  decision = pol->decide(req);
  CHECK(http::docker_denial_reason(*pol, req, decision) == decision.reason);  // no rule described to a stranger

  // A refusal (a body that cannot be inspected) is its own reason.
  auto refused = policy::resolve_docker("POST", "/containers/create", "");
  policy::inspect_docker_body("application/json", "", refused, {});
  req.peer = &alice;
  req.docker = &refused;
  decision = pol->decide(req);
  CHECK(http::docker_denial_reason(*pol, req, decision) == decision.reason);
  CHECK(decision.reason.find("empty") != std::string::npos);
}
