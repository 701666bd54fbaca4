// Body inspection: every dangerous field, and every fail-closed case.
#include <catch2/catch.hpp>

#include <algorithm>

#include "proxy/policy/docker.hpp"

using namespace portcullis::policy;

namespace {

// A host where every path exists as written (no symlinks).
DockerHostPaths identity_host() {
  DockerHostPaths host;
  host.realpath = [](std::string_view p) -> std::optional<std::string> { return std::string(p); };
  return host;
}

struct Inspected {
  DockerAttributes attrs;
  std::optional<std::string> refusal;
};

Inspected inspect(std::string_view method, std::string_view path, std::string_view body,
                  std::string_view content_type = "application/json") {
  Inspected r{resolve_docker(method, path, ""), std::nullopt};
  r.refusal = inspect_docker_body(content_type, body, r.attrs, identity_host());
  return r;
}

Inspected create(std::string_view body) { return inspect("POST", "/containers/create", body); }

}  // namespace

TEST_CASE("a plain create body is accepted and its image normalised") {
  auto r = create(R"({"Image":"nginx","Cmd":["echo","hi"],"HostConfig":{"AutoRemove":true}})");
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.body_inspected);
  REQUIRE(r.attrs.images.size() == 1);
  CHECK(r.attrs.images[0].name == "docker.io/library/nginx:latest");
  CHECK_FALSE(r.attrs.privileged);
  CHECK(r.attrs.binds.empty());
}

TEST_CASE("Content-Type is parsed with its parameters") {
  const char* body = R"({"Image":"nginx"})";
  CHECK_FALSE(inspect("POST", "/containers/create", body, "application/json; charset=utf-8").refusal);
  CHECK_FALSE(inspect("POST", "/containers/create", body, "Application/JSON;charset=\"UTF-8\"").refusal);
  CHECK(inspect("POST", "/containers/create", body, "").refusal);
  CHECK(inspect("POST", "/containers/create", body, "text/plain").refusal);
  CHECK(inspect("POST", "/containers/create", body, "application/json; charset=utf-16").refusal);
  CHECK(inspect("POST", "/containers/create", body, "application/jsonx").refusal);
  CHECK(inspect("POST", "/containers/create", body, "application/json; bogus").refusal);
}

TEST_CASE("bodies that cannot be inspected exactly are refused") {
  for (const char* body : {"", "   \r\n", "not json", "{\"Image\":\"nginx\"", "[]", "\"x\"", "null",
                           R"({"Image":"nginx"} {"HostConfig":{"Privileged":true}})",
                           R"({"Image":"nginx",})", R"({"Image":"nginx"/*c*/})", "{\"Image\":\"\xff\"}"}) {
    INFO(body);
    auto r = create(body);
    CHECK(r.refusal);
    CHECK_FALSE(r.attrs.body_inspected);
    CHECK_FALSE(r.attrs.refusal.empty());
  }
}

TEST_CASE("duplicate keys at any depth, compared as Go compares them, are refused") {
  for (const char* body : {
           R"({"Image":"nginx","Image":"evil/x"})",
           R"({"Image":"nginx","HostConfig":{"Privileged":false,"Privileged":true}})",
           R"({"Image":"nginx","HostConfig":{"Privileged":false,"privileged":true}})",
           R"({"Image":"nginx","HostConfig":{"PRIVILEGED":true,"privileged":false}})",
           R"({"Image":"nginx","hostconfig":{},"HostConfig":{"Privileged":true}})",
           R"({"Image":"nginx","Labels":{"a":{"b":1,"b":2}}})",
           R"({"Image":"nginx","HostConfig":{"Binds":[],"Bind\u017f":["/:/host"]}})",  // long s folds to s
           "{\"Image\":\"nginx\",\"HostConfig\":{\"NetworkMode\":\"none\",\"Networ\xe2\x84\xaaMode\":\"host\"}}",
       }) {
    INFO(body);
    auto r = create(body);
    REQUIRE(r.refusal);
    CHECK(r.refusal->find("duplicate key") != std::string::npos);
  }
}

TEST_CASE("keys are matched case-insensitively, as dockerd matches them") {
  auto r = create(R"({"image":"nginx","hostconfig":{"privileged":true,"binds":["/etc:/x"]}})");
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.privileged);
  REQUIRE(r.attrs.binds.size() == 1);
  CHECK(r.attrs.binds[0].source == "/etc");
  r = create("{\"Image\":\"nginx\",\"HostConfig\":{\"Networ\xe2\x84\xaaMode\":\"host\"}}");  // Kelvin sign
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.network_mode == "host");
}

TEST_CASE("each dangerous HostConfig field is extracted") {
  auto r = create(R"({"Image":"nginx","HostConfig":{
      "Privileged":true,"CapAdd":["SYS_ADMIN"],"Capabilities":["CAP_NET_RAW"],
      "NetworkMode":"host","PidMode":"container:abc","IpcMode":"host","UTSMode":"host",
      "UsernsMode":"host","CgroupnsMode":"host",
      "Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda","CgroupPermissions":"rwm"}],
      "DeviceRequests":[{"Driver":"nvidia","Count":-1}],"DeviceCgroupRules":["c 1:3 mr"],
      "Sysctls":{"kernel.shm_rmid_forced":"1"},"VolumesFrom":["other:ro"],
      "Binds":["/etc:/host-etc:ro","named:/data","/srv/data/x:/x"],
      "Mounts":[{"Type":"bind","Source":"/var/lib","Target":"/y"},{"Type":"volume","Source":"v","Target":"/v"},
                {"Type":"tmpfs","Target":"/t"}],
      "SecurityOpt":["seccomp=unconfined","apparmor:unconfined","label=disable","systempaths=unconfined"],
      "CgroupParent":"/system.slice","PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"80"}],
      "8080/tcp":[{"HostPort":""}],"9000/tcp":[{"HostPort":"0"}],"53/udp":[{"HostPort":"1000-1100"}]},
      "MaskedPaths":[]}})");
  REQUIRE_FALSE(r.refusal);
  const DockerAttributes& a = r.attrs;
  CHECK(a.privileged);
  CHECK(a.cap_add == std::vector<std::string>{"SYS_ADMIN", "CAP_NET_RAW"});
  CHECK(a.network_mode == "host");
  CHECK(a.pid_mode == "container:abc");
  CHECK(a.ipc_mode == "host");
  CHECK(a.uts_mode == "host");
  CHECK(a.userns_mode == "host");
  CHECK(a.cgroupns_mode == "host");
  CHECK(a.devices.size() == 3);
  CHECK(a.devices[0] == "/dev/sda");
  CHECK(a.sysctls == std::vector<std::string>{"kernel.shm_rmid_forced"});
  CHECK(a.volumes_from == std::vector<std::string>{"other:ro"});
  REQUIRE(a.binds.size() == 3);  // the named volume and the tmpfs are not binds
  CHECK(a.binds[0].source == "/etc");
  CHECK(a.binds[1].source == "/srv/data/x");
  CHECK(a.binds[2].source == "/var/lib");
  CHECK(a.binds[2].where == "HostConfig.Mounts[0]");
  CHECK(a.security_opts.size() == 4);
  CHECK(a.cgroup_parent == "/system.slice");
  CHECK(a.low_host_ports.size() == 2);  // 80 and the range starting at 1000
  CHECK(a.masked_paths_overridden);
}

TEST_CASE("harmless settings are not recorded") {
  auto r = create(R"({"Image":"nginx","HostConfig":{"NetworkMode":"bridge","PidMode":"","IpcMode":"shareable",
      "CapAdd":null,"Devices":[],"Sysctls":{},"Binds":["vol:/data","/anon"],
      "PortBindings":{"80/tcp":[{"HostPort":"8080"}]},"SecurityOpt":["no-new-privileges"]}})");
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.network_mode.empty());
  CHECK(r.attrs.ipc_mode.empty());
  CHECK(r.attrs.cap_add.empty());
  CHECK(r.attrs.devices.empty());
  CHECK(r.attrs.sysctls.empty());
  CHECK(r.attrs.binds.empty());
  CHECK(r.attrs.low_host_ports.empty());
}

TEST_CASE("an endpoint on the host network is host networking") {
  auto r = create(R"({"Image":"nginx","NetworkingConfig":{"EndpointsConfig":{"host":{}}}})");
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.network_mode == "host");
}

TEST_CASE("many keys are checked for duplicates in linear time") {
  std::string body = R"({"Image":"nginx","Labels":{)";
  for (int i = 0; i < 50000; ++i) body += (i ? "," : "") + std::string("\"k") + std::to_string(i) + "\":\"v\"";
  body += "}}";
  auto r = create(body);
  CHECK_FALSE(r.refusal);
  body.insert(body.size() - 2, R"(,"K49999":"x")");
  r = create(body);
  REQUIRE(r.refusal);
  CHECK(r.refusal->find("duplicate key \"K49999\" in Labels") != std::string::npos);
}

TEST_CASE("old-API top-level HostConfig fields are read too") {
  auto r = create(R"({"Image":"nginx","Privileged":true,"Binds":["/:/host"]})");
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.privileged);
  CHECK(r.attrs.binds.size() == 1);
}

TEST_CASE("wrong types are refused rather than guessed") {
  for (const char* body : {R"({"Image":"nginx","HostConfig":{"Privileged":"true"}})",
                           R"({"Image":"nginx","HostConfig":{"Privileged":1}})",
                           R"({"Image":"nginx","HostConfig":"x"})", R"({"Image":7})",
                           R"({"Image":"nginx","HostConfig":{"Binds":"/:/x"}})",
                           R"({"Image":"nginx","HostConfig":{"Binds":[1]}})",
                           R"({"Image":"nginx","HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":80}]}}})",
                           R"({"Image":"nginx","HostConfig":{"Sysctls":{"a":1}}})",
                           R"({"Image":"nginx","HostConfig":{"Mounts":["/:/x"]}})"}) {
    INFO(body);
    CHECK(create(body).refusal);
  }
}

TEST_CASE("mounts: unknown types are binds, image mounts are images, volume options can bind") {
  auto r = create(R"({"Image":"nginx","HostConfig":{"Mounts":[
      {"Type":"Bind","Source":"/etc","Target":"/a"},
      {"Type":"image","Source":"evil/x","Target":"/b"},
      {"Type":"volume","Source":"v","Target":"/c","VolumeOptions":{"DriverConfig":{"Name":"local",
         "Options":{"type":"none","o":"bind","device":"/"}}}}]}})");
  REQUIRE_FALSE(r.refusal);
  REQUIRE(r.attrs.binds.size() == 2);
  CHECK(r.attrs.binds[0].source == "/etc");
  CHECK(r.attrs.binds[1].source == "/");
  CHECK(r.attrs.binds[1].docker_socket);  // "/" holds the socket
  REQUIRE(r.attrs.images.size() == 2);
  CHECK(r.attrs.images[1].name == "docker.io/evil/x:latest");
}

TEST_CASE("exec create: Privileged") {
  auto r = inspect("POST", "/containers/abc/exec", R"({"Cmd":["sh"],"Privileged":true})");
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.privileged);
  r = inspect("POST", "/containers/abc/exec", R"({"Cmd":["sh"],"privileged":false})");
  REQUIRE_FALSE(r.refusal);
  CHECK_FALSE(r.attrs.privileged);
  CHECK(inspect("POST", "/containers/abc/exec", "").refusal);
}

TEST_CASE("container update: Resources fields") {
  auto r = inspect("POST", "/containers/abc/update",
                   R"({"Memory":1000000,"Devices":[{"PathOnHost":"/dev/mem"}],"CgroupParent":"/x"})");
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.devices == std::vector<std::string>{"/dev/mem"});
  CHECK(r.attrs.cgroup_parent == "/x");
}

TEST_CASE("service create with privileges, mounts, caps, sysctls, host network, low ports") {
  auto r = inspect("POST", "/services/create", R"({"Name":"s","TaskTemplate":{
      "ContainerSpec":{"Image":"nginx:1.25@sha256:)" + std::string(64, 'b') + R"(",
        "Privileges":{"Seccomp":{"Mode":"unconfined"},"AppArmor":{"Mode":"disabled"},
                      "SELinuxContext":{"Disable":true}},
        "Mounts":[{"Type":"bind","Source":"/var/run/docker.sock","Target":"/s"}],
        "CapabilityAdd":["CAP_SYS_ADMIN"],"Sysctls":{"net.ipv4.ip_forward":"1"}},
      "Networks":[{"Target":"host"}],
      "Resources":{"Reservations":{"GenericResources":[{"DiscreteResourceSpec":{"Kind":"gpu","Value":1}}]}}},
    "EndpointSpec":{"Ports":[{"TargetPort":80,"PublishedPort":80},{"TargetPort":81,"PublishedPort":8081}]}})");
  REQUIRE_FALSE(r.refusal);
  const DockerAttributes& a = r.attrs;
  REQUIRE(a.images.size() == 1);
  CHECK(a.images[0].name == "docker.io/library/nginx:1.25@sha256:" + std::string(64, 'b'));
  CHECK(a.security_opts == std::vector<std::string>{"seccomp=unconfined", "apparmor=unconfined", "label=disable"});
  REQUIRE(a.binds.size() == 1);
  CHECK(a.binds[0].docker_socket);
  CHECK(a.cap_add == std::vector<std::string>{"CAP_SYS_ADMIN"});
  CHECK(a.sysctls.size() == 1);
  CHECK(a.network_mode == "host");
  CHECK(a.devices.size() == 1);
  CHECK(a.low_host_ports.size() == 1);
}

TEST_CASE("service update is inspected like create, and a spec without an image is invalid") {
  auto r = inspect("POST", "/services/abc/update", R"({"Name":"s","TaskTemplate":{"PluginSpec":{"Name":"p"}}})");
  REQUIRE_FALSE(r.refusal);
  CHECK(r.attrs.never_allowed.size() == 1);
  REQUIRE(r.attrs.images.size() == 1);
  CHECK_FALSE(r.attrs.images[0].error.empty());
}

TEST_CASE("volume create binding a host path") {
  auto r = inspect("POST", "/volumes/create",
                   R"({"Name":"v","Driver":"local","DriverOpts":{"type":"none","o":"bind","device":"/"}})");
  REQUIRE_FALSE(r.refusal);
  REQUIRE(r.attrs.binds.size() == 1);
  CHECK(r.attrs.binds[0].source == "/");
  CHECK(r.attrs.binds[0].docker_socket);

  r = inspect("POST", "/volumes/create", R"({"Name":"v","DriverOpts":{"type":"ext4","device":"/dev/sda1"}})");
  REQUIRE(r.attrs.binds.size() == 1);  // no driver = local; an absolute device is a host path
  CHECK(r.attrs.binds[0].source == "/dev/sda1");

  r = inspect("POST", "/volumes/create",
              R"({"DriverOpts":{"type":"overlay","device":"overlay","o":"lowerdir=/etc:/usr,upperdir=/u,workdir=/w"}})");
  CHECK(r.attrs.binds.size() == 4);

  r = inspect("POST", "/volumes/create", R"({"DriverOpts":{"type":"tmpfs","o":"rbind","device":"/etc"}})");
  REQUIRE(r.attrs.binds.size() == 1);  // MS_BIND ignores the type
  CHECK(r.attrs.binds[0].source == "/etc");

  r = inspect("POST", "/volumes/create", R"({"Name":"v","DriverOpts":{"type":"none","o":"bind","device":"rel"}})");
  REQUIRE(r.attrs.binds.size() == 1);
  CHECK_FALSE(r.attrs.binds[0].error.empty());  // relative: cannot be checked

  for (const char* ok : {R"({"Name":"v"})", R"({"Name":"v","DriverOpts":{"type":"tmpfs","device":"tmpfs","o":"size=100m"}})",
                         R"({"Name":"v","Driver":"rexray","DriverOpts":{"device":"/"}})",
                         R"({"Name":"v","DriverOpts":{"type":"nfs","o":"addr=10.0.0.1","device":":/export"}})",
                         R"({"Name":"v","DriverOpts":{"type":"cifs","o":"username=u","device":"//server/share"}})"}) {
    INFO(ok);
    auto v = inspect("POST", "/volumes/create", ok);
    REQUIRE_FALSE(v.refusal);
    CHECK(v.attrs.binds.empty());
  }
}

// Red-team finding (session 13): the local driver mounts in dockerd's mount namespace, where a
// relative path is resolved from dockerd's working directory (`/` under systemd): "dev/vda"
// mounted the host's root disk, "lowerdir=etc:root" showed the host's /etc. And a kernel
// filesystem type (proc, sysfs) would mount the host's own. All refused.
TEST_CASE("volume options with relative host paths or a kernel filesystem are refused") {
  for (const char* body : {R"({"Name":"v","DriverOpts":{"type":"ext4","device":"dev/vda"}})",
                           R"({"Name":"v","DriverOpts":{"type":"xfs","device":"vda"}})",
                           R"({"Name":"v","DriverOpts":{"type":"overlay","device":"overlay","o":"lowerdir=etc:root"}})",
                           R"({"Name":"v","DriverOpts":{"type":"overlay","device":"overlay","o":"lowerdir=/srv/a,upperdir=u,workdir=/w"}})",
                           R"({"Name":"v","DriverOpts":{"type":"ext4","device":"/srv/img","o":"journal_path=dev/sdb"}})"}) {
    INFO(body);
    auto r = inspect("POST", "/volumes/create", body);
    REQUIRE_FALSE(r.refusal);  // recorded as a bind that cannot be checked: docker_refusal() denies it
    CHECK(std::any_of(r.attrs.binds.begin(), r.attrs.binds.end(), [](const DockerBind& b) {
      return b.error == "it is not an absolute path";
    }));
    CHECK(docker_refusal(r.attrs));
  }
  for (const char* body : {R"({"Name":"v","DriverOpts":{"type":"proc","device":"proc"}})",
                           R"({"Name":"v","DriverOpts":{"type":"sysfs","device":"sysfs"}})",
                           R"({"Name":"v","DriverOpts":{"type":"cgroup2","device":"x"}})",
                           R"({"Name":"v","DriverOpts":{"device":"/srv/x"}})"}) {
    INFO(body);
    auto r = inspect("POST", "/volumes/create", body);
    REQUIRE(r.refusal);
    CHECK(r.refusal->find("DriverOpts.type") != std::string::npos);
  }
  // The same through a container's Mounts[].VolumeOptions (container.create alone suffices).
  auto c = create(R"({"Image":"nginx","HostConfig":{"Mounts":[{"Type":"volume","Source":"d","Target":"/h",
      "VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"ext4","device":"dev/vda"}}}}]}})");
  CHECK(docker_refusal(c.attrs));
  c = create(R"({"Image":"nginx","HostConfig":{"Mounts":[{"Type":"volume","Source":"d","Target":"/h",
      "VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"proc","device":"proc"}}}}]}})");
  CHECK(c.refusal);
}

TEST_CASE("inspection of a request without a body check is a no-op") {
  DockerAttributes a = resolve_docker("POST", "/containers/abc/start", "");
  CHECK_FALSE(inspect_docker_body("", "", a, identity_host()));
  CHECK(a.refusal.empty());
}

TEST_CASE("deeply nested bodies are refused, not recursed into without bound") {
  std::string deep = R"({"Image":"nginx","Labels":)" + std::string(200, '[') + std::string(200, ']') + "}";
  CHECK(create(deep).refusal);
}
