// The `docker:` rule form: actions, images, allow names, bind sources (with real symlinks).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <tuple>

#include "proxy/policy/docker.hpp"

using namespace portcullis::policy;
namespace fs = std::filesystem;

namespace {

struct Result {
  bool allowed;
  std::vector<std::string> failed;
  bool says(std::string_view text) const {
    for (const auto& f : failed)
      if (f.find(text) != std::string::npos) return true;
    return false;
  }
};

DockerHostPaths identity_host() {
  DockerHostPaths host;
  host.realpath = [](std::string_view p) -> std::optional<std::string> { return std::string(p); };
  return host;
}

Result judge(const DockerSpec& spec, std::string_view method, std::string_view path, std::string_view query = "",
             std::string_view body = "", const DockerHostPaths& host = identity_host()) {
  DockerAttributes a = resolve_docker(method, path, query);
  if (a.body != DockerBody::none) inspect_docker_body("application/json", body, a, host);
  Result r{};
  r.allowed = match_docker(spec, a, &r.failed);
  return r;
}

Result run(const DockerSpec& spec, std::string_view host_config, std::string_view image = "nginx",
           const DockerHostPaths& host = identity_host()) {
  std::string body = R"({"Image":")" + std::string(image) + R"(","HostConfig":)" + std::string(host_config) + "}";
  return judge(spec, "POST", "/containers/create", "", body, host);
}

DockerSpec ops() {
  DockerSpec s;
  s.actions = {"read", "container.create", "container.start", "image.pull"};
  s.images = {"docker.io/library/*"};
  s.bind_sources = {"/srv/data/**"};
  return s;
}

// A temporary directory removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "portcullis-docker-XXXXXX").string();
    path = fs::path(::mkdtemp(templ.data()));
    path = fs::canonical(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

}  // namespace

TEST_CASE("actions: names, families, *, and unknown") {
  DockerSpec s;
  s.actions = {"read"};
  CHECK(judge(s, "GET", "/containers/json").allowed);
  Result r = judge(s, "POST", "/containers/abc/start");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("action container.start not in [read]"));
  s.actions = {"container.*"};
  CHECK(judge(s, "POST", "/containers/abc/kill").allowed);
  CHECK_FALSE(judge(s, "GET", "/info").allowed);
  s.actions = {"*"};
  CHECK(judge(s, "POST", "/swarm/leave").allowed);
  r = judge(s, "GET", "/nope");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("unknown Docker endpoint /nope"));
  s.actions = {};  // empty = every known action
  CHECK(judge(s, "POST", "/networks/n1/connect").allowed);
  CHECK_FALSE(judge(s, "GET", "/nope").allowed);
}

TEST_CASE("an official image runs, and others, IDs and invalid names do not") {
  CHECK(run(ops(), "{}").allowed);
  CHECK(run(ops(), "{}", "nginx:1.25").allowed);
  Result r = run(ops(), "{}", "evil/x");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("image docker.io/evil/x:latest does not match [docker.io/library/*]"));
  r = run(ops(), "{}", std::string(64, 'a'));
  CHECK_FALSE(r.allowed);
  CHECK(r.says("add \"image_ids\" to allow"));
  r = run(ops(), "{}", "Nginx");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("not a valid reference"));
  DockerSpec ids = ops();
  ids.allow = {"image_ids"};
  CHECK(run(ids, "{}", "sha256:" + std::string(64, 'a')).allowed);
  DockerSpec any = ops();
  any.images = {};
  CHECK(run(any, "{}", "evil/x").allowed);
  CHECK_FALSE(run(any, "{}", "abc123").allowed);  // IDs need image_ids even without images
}

TEST_CASE("pulls are checked against images") {
  CHECK(judge(ops(), "POST", "/images/create", "fromImage=docker.io%2Flibrary%2Fnginx&tag=latest").allowed);
  Result r = judge(ops(), "POST", "/images/create", "fromImage=evil%2Fx&tag=latest");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("docker.io/evil/x:latest does not match"));
  // The tag parameter replaces fromImage's own tag: evil/x:ok + tag is still evil/x.
  CHECK_FALSE(judge(ops(), "POST", "/images/create", "fromImage=evil/x&tag=1").allowed);
  CHECK(judge(ops(), "POST", "/images/create", "fromImage=nginx&tag=sha256:" + std::string(64, 'c')).allowed);
  DockerSpec pinned = ops();
  pinned.images = {"docker.io/library/nginx:1.25"};
  CHECK(judge(pinned, "POST", "/images/create", "fromImage=nginx&tag=1.25").allowed);
  CHECK_FALSE(judge(pinned, "POST", "/images/create", "fromImage=nginx").allowed);  // every tag
}

TEST_CASE("each dangerous feature is denied unless allowed, with its name in the reason") {
  struct Case {
    const char* host_config;
    const char* allow;
  };
  const Case cases[] = {
      {R"({"Privileged":true})", "privileged"},
      {R"({"CapAdd":["SYS_ADMIN"]})", "cap_add"},
      {R"({"NetworkMode":"host"})", "host_network"},
      {R"({"NetworkMode":"container:abc"})", "host_network"},
      {R"({"PidMode":"host"})", "host_pid"},
      {R"({"IpcMode":"host"})", "host_ipc"},
      {R"({"UTSMode":"host"})", "host_uts"},
      {R"({"UsernsMode":"host"})", "host_userns"},
      {R"({"CgroupnsMode":"host"})", "host_cgroupns"},
      {R"({"Devices":[{"PathOnHost":"/dev/mem"}]})", "devices"},
      {R"({"DeviceRequests":[{"Driver":"nvidia"}]})", "devices"},
      {R"({"DeviceCgroupRules":["a *:* rwm"]})", "devices"},
      {R"({"Sysctls":{"kernel.core_pattern":"|/x"}})", "sysctls"},
      {R"({"SecurityOpt":["seccomp=unconfined"]})", "seccomp_unconfined"},
      {R"({"SecurityOpt":["seccomp:unconfined"]})", "seccomp_unconfined"},
      {R"({"SecurityOpt":["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]})", "seccomp_unconfined"},
      {R"({"SecurityOpt":["apparmor=unconfined"]})", "apparmor_unconfined"},
      {R"({"SecurityOpt":["apparmor:unconfined"]})", "apparmor_unconfined"},
      {R"({"SecurityOpt":["label=disable"]})", "label_disable"},
      {R"({"SecurityOpt":["label:disable"]})", "label_disable"},
      {R"({"SecurityOpt":["disable"]})", "label_disable"},
      {R"({"SecurityOpt":["label=type:spc_t"]})", "label_disable"},
      // Third red-team round: a host profile or domain that does not confine.
      {R"({"SecurityOpt":["apparmor=chrome"]})", "apparmor_unconfined"},
      {R"({"SecurityOpt":["apparmor:lxc-container-default-with-nesting"]})", "apparmor_unconfined"},
      {R"({"SecurityOpt":["label=type:container_runtime_t"]})", "label_disable"},
      {R"({"SecurityOpt":["label:type:kernel_t"]})", "label_disable"},
      {R"({"SecurityOpt":["apparmor=Docker-Default"]})", "apparmor_unconfined"},
      {R"({"SecurityOpt":["label=type:Container_t"]})", "label_disable"},
      {R"({"SecurityOpt":["systempaths=unconfined"]})", "systempaths_unconfined"},
      {R"({"MaskedPaths":[]})", "systempaths_unconfined"},
      {R"({"CgroupParent":"/"})", "cgroup_parent"},
      {R"({"PortBindings":{"22/tcp":[{"HostPort":"22"}]}})", "low_host_ports"},
      {R"({"VolumesFrom":["db"]})", "volumes_from"},
      // Red-team findings (session 13, second round).
      {R"({"VolumeDriver":"rexray"})", "volume_plugins"},
      {R"({"Mounts":[{"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{"DriverConfig":{"Name":"sshfs"}}}]})",
       "volume_plugins"},
      {R"({"LogConfig":{"Type":"gelf","Config":{"gelf-address":"udp://127.0.0.1:12201"}}})", "log_drivers"},
      {R"({"LogConfig":{"Type":"splunk"}})", "log_drivers"},
      {R"({"Mounts":[{"Type":"volume","Source":"v","Target":"/v","VolumeOptions":{"DriverConfig":{"Name":"local",
          "Options":{"type":"ext4","device":"/srv/data/disk"}}}}]})", "devices"},
  };
  for (const Case& c : cases) {
    INFO(c.host_config);
    Result r = run(ops(), c.host_config);
    CHECK_FALSE(r.allowed);
    CHECK(r.says("(add \"" + std::string(c.allow) + "\" to allow)"));
    DockerSpec allowed = ops();
    allowed.allow = {c.allow};
    CHECK(run(allowed, c.host_config).allowed);
  }
  Result r = run(ops(), R"({"Privileged":true})");
  REQUIRE(r.failed.size() == 1);
  CHECK(r.failed[0] == "privileged containers are not allowed (add \"privileged\" to allow)");
}

TEST_CASE("harmless security options pass, and unknown ones never do") {
  CHECK(run(ops(), R"({"SecurityOpt":["no-new-privileges","no-new-privileges:true","apparmor=docker-default",
                                      "label=level:s0:c100,c200","seccomp=builtin","label=type:container_t"]})")
            .allowed);
  DockerSpec everything = ops();
  everything.allow = docker_allow_names();
  Result r = run(everything, R"({"SecurityOpt":["writable-cgroups=true"]})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("never allowed"));
}

TEST_CASE("exec create with Privileged") {
  DockerSpec s = ops();
  s.actions = {"container.exec"};
  CHECK(judge(s, "POST", "/containers/abc/exec", "", R"({"Cmd":["sh"]})").allowed);
  Result r = judge(s, "POST", "/containers/abc/exec", "", R"({"Cmd":["sh"],"Privileged":true})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("privileged"));
}

TEST_CASE("refused and uninspected bodies fail the rule") {
  DockerSpec s = ops();
  s.actions = {"*"};
  s.allow = docker_allow_names();
  s.images = {};
  Result r = judge(s, "POST", "/containers/create", "", R"({"Image":"nginx","privileged":true,"Privileged":false})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("duplicate key"));
  CHECK_FALSE(judge(s, "POST", "/containers/create", "", "").allowed);
  DockerAttributes never_inspected = resolve_docker("POST", "/containers/create", "");
  std::vector<std::string> failed;
  CHECK_FALSE(match_docker(s, never_inspected, &failed));
  CHECK(failed == std::vector<std::string>{"the request body was not inspected"});
}

TEST_CASE("docker_refusal: what no rule can allow") {
  auto refusal = [](std::string_view method, std::string_view path, std::string_view body = "") {
    DockerAttributes a = resolve_docker(method, path, "");
    if (a.body != DockerBody::none) inspect_docker_body("application/json", body, a, identity_host());
    return docker_refusal(a);
  };
  CHECK_FALSE(refusal("GET", "/containers/json"));
  CHECK_FALSE(refusal("POST", "/containers/create", R"({"Image":"evil/x","HostConfig":{"Privileged":true}})"));
  CHECK(refusal("GET", "/nope"));
  CHECK(refusal("POST", "/containers/create", ""));
  CHECK(refusal("POST", "/containers/create", R"({"Image":"nginx","HostConfig":{"Binds":["/run:/r"]}})"));
  CHECK(refusal("POST", "/containers/create", R"({"Image":"nginx","HostConfig":{"SecurityOpt":["x=y"]}})"));
  CHECK(refusal("POST", "/containers/create", R"({"Image":"NGINX"})"));
  CHECK(refusal("POST", "/services/create", R"({"TaskTemplate":{"PluginSpec":{}}})"));
  DockerAttributes uninspected = resolve_docker("POST", "/volumes/create", "");
  CHECK(docker_refusal(uninspected) == std::optional<std::string>("the request body was not inspected"));
}

TEST_CASE("service create with privileges is denied, and volume create binding / is never allowed") {
  DockerSpec s = ops();
  s.actions = {"service.create", "volume.create"};
  Result r = judge(s, "POST", "/services/create", "",
                   R"({"TaskTemplate":{"ContainerSpec":{"Image":"nginx","Privileges":{"Seccomp":{"Mode":"unconfined"}}}}})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("seccomp_unconfined"));
  CHECK(judge(s, "POST", "/services/create", "", R"({"TaskTemplate":{"ContainerSpec":{"Image":"nginx"}}})").allowed);
  s.bind_sources = {"/**"};
  r = judge(s, "POST", "/volumes/create", "", R"({"Name":"v","DriverOpts":{"type":"none","o":"bind","device":"/"}})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("reaches the Docker socket"));
}

TEST_CASE("bind sources: inside, outside, the socket, and paths that cannot be checked") {
  CHECK(run(ops(), R"({"Binds":["/srv/data/app:/data"]})").allowed);
  CHECK(run(ops(), R"({"Binds":["/srv/data:/data"]})").allowed);  // ** matches no segment too
  Result r = run(ops(), R"({"Binds":["/etc:/host-etc:ro"]})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("bind mount source /etc is outside bind_sources [/srv/data/**]"));
  r = run(ops(), R"({"Binds":["/srv/data/../../etc:/x"]})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("resolves to /etc"));
  DockerSpec everywhere = ops();
  everywhere.bind_sources = {"/**"};
  for (const char* src : {"/var/run/docker.sock", "/run/docker.sock", "/run", "/var/run", "/", "/custom/dockerd.sock"}) {
    INFO(src);
    DockerHostPaths host = identity_host();
    host.docker_sockets = {"/custom/dockerd.sock"};
    r = run(everywhere, std::string(R"({"Binds":[")") + src + R"(:/s"]})", "nginx", host);
    CHECK_FALSE(r.allowed);
    CHECK(r.says("reaches the Docker socket"));
  }
  CHECK(run(everywhere, R"({"Binds":["/var/lib/x:/x"]})").allowed);
  r = run(everywhere, R"({"Mounts":[{"Type":"bind","Source":"relative/path","Target":"/x"}]})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("not an absolute path"));
}

TEST_CASE("bind sources through real symlinks, with the real realpath") {
  TempDir tmp;
  fs::path allowed = tmp.path / "allowed";
  fs::path secret = tmp.path / "secret";
  fs::create_directories(allowed / "sub");
  fs::create_directories(secret);
  fs::create_symlink(secret, allowed / "escape");             // allowed/escape -> secret
  fs::create_symlink(tmp.path / "run", allowed / "sockdir");  // allowed/sockdir -> run (holds the socket)
  fs::create_directories(tmp.path / "run");
  std::ofstream(tmp.path / "run" / "docker.sock") << "";
  fs::create_symlink(allowed / "sub", allowed / "loop");

  DockerSpec s = ops();
  s.bind_sources = {(allowed / "**").string()};
  DockerHostPaths host;  // system_realpath
  host.docker_sockets = {(tmp.path / "run" / "docker.sock").string()};
  auto binds = [&](const fs::path& p) {
    return std::string(R"({"Binds":[")") + p.string() + R"(:/x"]})";
  };

  CHECK(run(s, binds(allowed / "sub"), "nginx", host).allowed);
  CHECK(run(s, binds(allowed / "loop"), "nginx", host).allowed);
  CHECK(run(s, binds(allowed / "not-yet" / "created"), "nginx", host).allowed);  // dockerd creates it

  Result r = run(s, binds(allowed / "escape"), "nginx", host);
  CHECK_FALSE(r.allowed);
  CHECK(r.says("resolves to " + secret.string()));
  r = run(s, binds(allowed / "escape" / "deeper"), "nginx", host);
  CHECK_FALSE(r.allowed);
  // `..` after a symlink: the kernel goes up from the target, a cleaner from the link.
  r = run(s, binds(allowed / "escape" / ".." / "allowed" / "sub"), "nginx", host);
  CHECK(r.allowed);  // both readings land in allowed/sub
  r = run(s, binds(allowed / "sub" / ".." / ".." / "secret"), "nginx", host);
  CHECK_FALSE(r.allowed);
  r = run(s, binds(allowed / "missing" / ".." / ".." / "secret"), "nginx", host);
  CHECK_FALSE(r.allowed);
  r = run(s, binds(allowed / "sockdir"), "nginx", host);
  CHECK_FALSE(r.allowed);
  CHECK(r.says("reaches the Docker socket"));
  r = run(s, binds(allowed / "sockdir" / "docker.sock"), "nginx", host);
  CHECK_FALSE(r.allowed);
  CHECK(r.says("reaches the Docker socket"));
}

TEST_CASE("validate_docker_spec names the bad entry") {
  auto error = [](DockerSpec s) -> std::string {
    try {
      validate_docker_spec(s);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  DockerSpec good = ops();
  good.actions = {"*", "read", "container.*", "network.create", "image.import"};
  good.allow = docker_allow_names();
  good.images = {"*", "docker.io/library/*", "localhost:5000/**", "ghcr.io/org/app:1.*",
                 "docker.io/library/nginx@sha256:" + std::string(64, 'a')};
  good.bind_sources = {"/srv/data/**", "/home/*/projects", "/opt/x"};
  CHECK(error(good).empty());

  DockerSpec s;
  s.actions = {"containr.create"};
  CHECK(error(s).find("unknown docker action \"containr.create\"") != std::string::npos);
  s.actions = {"bogus.*"};
  CHECK_FALSE(error(s).empty());
  s = {};
  s.allow = {"privilegd"};
  CHECK(error(s).find("unknown docker allow name \"privilegd\"") != std::string::npos);
  for (const char* bad : {"nginx", "library/*", "docker.io/Library/x", "docker.io//x", "", "docker.io/**/x",
                          "**/x", "docker.io/a**"}) {
    s = {};
    s.images = {bad};
    INFO(bad);
    CHECK(error(s).find("docker image pattern") != std::string::npos);
  }
  for (const char* bad : {"srv/data", "/srv/../etc", "/srv/./x", "/srv//x", "/srv/", "/", "/a**", "/**/x"}) {
    s = {};
    s.bind_sources = {bad};
    INFO(bad);
    CHECK(error(s).find("docker bind_sources pattern") != std::string::npos);
  }
}

TEST_CASE("a volume driver named by a path is never allowed, and local log drivers need nothing") {
  DockerSpec everything = ops();
  everything.allow = docker_allow_names();
  for (const char* hc : {R"({"VolumeDriver":"../../../../var/lib/docker/overlay2/x/diff/p"})",
                         R"({"VolumeDriver":"/etc/docker/plugins/x"})", R"({"VolumeDriver":"a/./b"})"}) {
    INFO(hc);
    Result r = run(everything, hc);
    CHECK_FALSE(r.allowed);
    CHECK(r.says("which names a path, is never allowed"));
  }
  CHECK(run(everything, R"({"VolumeDriver":"vieux/sshfs:latest"})").allowed);
  for (const char* hc : {R"({"LogConfig":{"Type":"json-file","Config":{"max-size":"10m"}}})",
                         R"({"LogConfig":{"Type":"local"}})", R"({"LogConfig":{"Type":"none"}})", R"({"VolumeDriver":"local"})"}) {
    INFO(hc);
    CHECK(run(ops(), hc).allowed);
  }
  // A service's log driver.
  std::string svc = R"({"Name":"s","TaskTemplate":{"ContainerSpec":{"Image":"nginx"},"LogDriver":{"Name":"syslog"}}})";
  DockerSpec services = ops();
  services.actions.push_back("service.create");
  Result r = judge(services, "POST", "/services/create", "", svc);
  CHECK_FALSE(r.allowed);
  CHECK(r.says("(add \"log_drivers\" to allow)"));
}

TEST_CASE("a managed plugin runs as root with what its config asks for: installing, configuring or enabling one needs plugins") {
  // Third red-team round: POST /plugins/create with a tarball whose config.json binds the host's /
  // (or asks for CAP_SYS_ADMIN, every device, the host network), then /plugins/NAME/enable, ran
  // the plugin's entrypoint as root on the host under a rule with `actions: ["*"]` and no allow.
  DockerSpec s = ops();
  s.actions = {"*"};
  s.images = {};
  for (auto [method, path, query] : {std::tuple{"POST", "/plugins/create", "name=evil"},
                                     std::tuple{"POST", "/plugins/pull", "remote=evil.example/plug"},
                                     std::tuple{"POST", "/v1.41/plugins/evil:latest/enable", "timeout=5"},
                                     std::tuple{"POST", "/plugins/evil/upgrade", "remote=evil.example/plug"},
                                     std::tuple{"POST", "/plugins/evil/set", ""}}) {
    INFO(path);
    DockerAttributes a = resolve_docker(method, path, query);
    std::vector<std::string> failed;
    CHECK_FALSE(match_docker(s, a, &failed));
    REQUIRE(failed.size() == 1);
    CHECK(failed[0].find("(add \"plugins\" to allow)") != std::string::npos);
    DockerSpec allowed = s;
    allowed.allow = {"plugins"};
    CHECK(match_docker(allowed, a, nullptr));
  }
  for (auto path : {"/plugins/evil/disable", "/plugins/evil/push"}) {
    INFO(path);
    CHECK(match_docker(s, resolve_docker("POST", path, ""), nullptr));
  }
  CHECK(match_docker(s, resolve_docker("DELETE", "/plugins/evil", ""), nullptr));
}

TEST_CASE("a network on the host's own interfaces needs host_network, a network plugin network_plugins") {
  // Third red-team round: network.create was not inspected, so a macvlan network with
  // parent=eth0 put containers on the host's physical network, past its nftables, under a rule
  // without host_network.
  DockerSpec s = ops();
  s.actions = {"network.create"};
  s.images = {};
  struct Case {
    const char* body;
    const char* allow;
  };
  const Case cases[] = {
      {R"({"Name":"n","Driver":"macvlan","Options":{"parent":"eth0"}})", "host_network"},
      {R"({"Name":"n","Driver":"ipvlan","Options":{"parent":"eth0","ipvlan_mode":"l2"}})", "host_network"},
      {R"({"Name":"n","Options":{"com.docker.network.bridge.name":"br0"}})", "host_network"},
      {R"({"Name":"n","Driver":"bridge","options":{"COM.docker.network.bridge.name":"cni0"}})", "host_network"},
      {R"({"Name":"n","Driver":"weave"})", "network_plugins"},
      {R"({"Name":"n","Driver":"MACVLAN"})", "network_plugins"},
      {R"({"Name":"n","IPAM":{"Driver":"infoblox"}})", "network_plugins"},
  };
  for (const Case& c : cases) {
    INFO(c.body);
    Result r = judge(s, "POST", "/v1.41/networks/create", "", c.body);
    CHECK_FALSE(r.allowed);
    CHECK(r.says("(add \"" + std::string(c.allow) + "\" to allow)"));
    DockerSpec allowed = s;
    allowed.allow = {c.allow};
    CHECK(judge(allowed, "POST", "/v1.41/networks/create", "", c.body).allowed);
  }
  for (const char* body : {R"({"Name":"n"})", R"({"Name":"n","Driver":"bridge","Internal":true})",
                           R"({"Name":"n","Driver":"overlay","Attachable":true,"IPAM":{"Driver":"default"}})",
                           R"({"Name":"n","Driver":"null"})"}) {
    INFO(body);
    CHECK(judge(s, "POST", "/networks/create", "", body).allowed);
  }
  DockerSpec everything = s;
  everything.allow = docker_allow_names();
  Result r = judge(everything, "POST", "/networks/create", "", R"({"Name":"n","Driver":"../../../tmp/evil"})");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("names a path, is never allowed"));
  CHECK_FALSE(judge(everything, "POST", "/networks/create", "", "").allowed);
}

TEST_CASE("a distribution inspect asks the name's registry, so it is an image.pull of that name") {
  // Third red-team round: as `read` it had dockerd send HTTP requests to any port of 127.0.0.1
  // (an insecure registry by default) and echo the answer in its error message.
  DockerSpec s = ops();
  s.actions = {"read", "image.pull"};
  CHECK(judge(s, "GET", "/v1.41/distribution/nginx:1.25/json").allowed);
  Result r = judge(s, "GET", "/v1.41/distribution/127.0.0.1:18080/foo/json");
  CHECK_FALSE(r.allowed);
  CHECK(r.says("image 127.0.0.1:18080/foo:latest does not match"));
  s.actions = {"read"};
  CHECK_FALSE(judge(s, "GET", "/distribution/nginx/json").allowed);
}
