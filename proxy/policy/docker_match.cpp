// The `docker:` rule form: actions, images, bind_sources and the `allow` list of dangerous
// features. match_docker() is pure: every host lookup happened in inspect_docker_body().
#include <algorithm>
#include <cctype>
#include <iterator>
#include <stdexcept>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/docker_internal.hpp"

namespace portcullis::policy {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string quoted_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) out += (i ? ", " : "") + items[i];
  return out + "]";
}

std::string family_of(std::string_view action) {
  auto dot = action.find('.');
  return dot == std::string_view::npos ? std::string() : std::string(action.substr(0, dot));
}


// What a SecurityOpt entry relaxes: an `allow` name, "" when harmless, "never" when unknown.
// Split as dockerd does: at the first '=', else (except no-new-privileges) at the first ':'.
std::string security_opt_allow_name(std::string_view opt) {
  std::string_view key = opt, value;
  if (auto eq = opt.find('='); eq != std::string_view::npos) {
    key = opt.substr(0, eq);
    value = opt.substr(eq + 1);
  } else if (opt != "no-new-privileges") {
    if (auto colon = opt.find(':'); colon != std::string_view::npos) {
      key = opt.substr(0, colon);
      value = opt.substr(colon + 1);
    }
  }
  std::string k = lower(key), v = lower(value);
  if (k == "disable" && value.empty()) return "label_disable";  // dockerd reads a bare "disable" as label=disable
  if (k == "no-new-privileges") return "";
  // Any profile other than the built-in one can allow every syscall.
  if (k == "seccomp") return v == "builtin" ? "" : "seccomp_unconfined";
  // Any profile loaded on the host can be named, and many are no confinement at all (Ubuntu 23.10+
  // ships dozens with flags=(unconfined) so that applications may create user namespaces; a
  // profile in complain mode only logs). Only Docker's own profile is known to confine.
  // Profile and type names are case-sensitive: compare them as sent.
  if (k == "apparmor") return value == "docker-default" ? "" : "apparmor_unconfined";
  if (k == "label") {
    // Likewise an SELinux type: spc_t and unconfined_t are unconfined by name, but so is every
    // domain the host's policy marks unconfined (container_runtime_t, kernel_t, ...). Only the
    // container types are known to confine.
    if (v == "disable") return "label_disable";
    if (v.starts_with("type:"))
      return value == "type:container_t" || value == "type:container_init_t" || value == "type:svirt_lxc_net_t"
                 ? ""
                 : "label_disable";
    return v.starts_with("user:") || v.starts_with("role:") || v.starts_with("type:") || v.starts_with("level:") ||
                   v.starts_with("filetype:") || v == "nested"
               ? ""
               : "never";
  }
  if (k == "systempaths") return v == "unconfined" ? "systempaths_unconfined" : "never";
  return "never";
}

struct Checker {
  const DockerSpec& spec;
  std::vector<std::string>* failed;
  bool ok = true;

  void fail(std::string why) {
    ok = false;
    if (failed != nullptr) failed->push_back(std::move(why));
  }
  // A dangerous feature: fine only when the rule names it in `allow`.
  void feature(bool present, std::string_view allow, const std::string& what) {
    if (present && !contains(spec.allow, allow))
      fail(what + " not allowed (add \"" + std::string(allow) + "\" to allow)");
  }
  void mode(const std::string& value, std::string_view field, std::string_view allow) {
    feature(!value.empty(), allow, std::string(field) + " " + value + " is");
  }
};

}  // namespace

namespace docker_detail {

bool is_shared_namespace(std::string_view mode) {
  std::string m = lower(mode);
  return m == "host" || m.starts_with("container:");
}

const char* const kDocsNotes = R"(
## What common CLI commands need

- `docker version`, `info`, `ps`, `images`, `inspect`, `events`: `read` (the CLI's `HEAD /_ping` too).
- `docker run IMAGE` in the foreground: `container.create`, `container.attach`, `container.start`,
  `container.wait` (and `container.resize` with `-t`, `image.pull` when the image is missing;
  `--rm` is `AutoRemove` in the create body, no extra call).
- `docker exec`: `container.exec`. `docker logs`: `container.logs`. `docker cp`:
  `container.archive`. `docker pull`: `image.pull`. `docker login`: `system.auth`.

## How requests are judged

- **Actions.** `actions: []` (or omitted) grants every known action, like `*`; `container.*` grants a
  family. `unknown` is never granted.
- **Bodies.** `POST /containers/create`, `/containers/{id}/update`, `/containers/{id}/exec`,
  `/services/create`, `/services/{id}/update`, `/volumes/create` and `/networks/create` are buffered (up to
  `inspect_body_bytes`) and inspected before anything is forwarded. Refused: a missing or empty
  body, a Content-Type other than `application/json` (parameters allowed; a `charset` must be
  UTF-8), invalid JSON or UTF-8, data after the JSON value, a key given twice at any depth
  (compared as dockerd's Go decoder compares them: case-insensitively, so `Privileged` and
  `privileged` are the same key; inside maps such as `Labels` too, where Go would keep both),
  a field of the wrong type. Field names are matched
  case-insensitively too. A create body's HostConfig fields are also read at the top level, where
  old API versions took them.
- **API versions.** A `/v1.NN/` prefix below 1.24 is refused (compared as dockerd compares
  versions): below it dockerd still gives requests meanings we do not judge, such as a start body
  that replaces the container's HostConfig. Every docker CLI since 1.12 speaks 1.24 or later.
- **Form bodies.** On every Docker request, `application/x-www-form-urlencoded` is refused (dockerd
  would read `fromImage` and the like from it ahead of the query), and so is `multipart/*` (a
  `multipart/form-data` body fills in `/build` options the query leaves out, `networkmode=host`).
  A Content-Type with bytes outside printable ASCII is refused as well: dockerd's Go code trims
  and lowercases it with Unicode's rules (`U+00A0` is a space, `İ` lowercases to `i`).
- **Namespaces.** `host` and `container:<id>` (joining another container) both need the
  `host_*` name. An endpoint on the `host` network (`NetworkingConfig.EndpointsConfig`, a
  service's `Networks`) and `docker build --network host` need `host_network`. **Known gap:**
  a service's network `Target` is judged by its name only, while dockerd also finds a network by
  its ID or an ID prefix, so a `Target` holding the host network's ID (which `read` lists) runs
  the service's tasks on the host's network. Until the gateway resolves targets with dockerd,
  grant `service.create` and `service.update` only to those you would give `host_network`.
- **Security options.** `seccomp=` anything but `builtin` (a custom profile can allow every
  syscall) needs `seccomp_unconfined`; `apparmor=` anything but `docker-default` (any profile
  loaded on the host can be named, and many confine nothing: `flags=(unconfined)`, complain mode)
  needs `apparmor_unconfined`; `label=disable` and `label=type:` anything but `container_t`,
  `container_init_t`, `svirt_lxc_net_t` (`spc_t`, `unconfined_t`, `container_runtime_t`, ...) need
  `label_disable`; `systempaths=unconfined` needs its name; `MaskedPaths` or
  `ReadonlyPaths` given explicitly count as `systempaths_unconfined`; unknown options are never
  allowed. Services: `Privileges.Seccomp.Mode` other than `default`, `AppArmor.Mode` other than
  `default` and `SELinuxContext.Disable` are the same features.
- **Devices.** `Devices`, `DeviceRequests`, `DeviceCgroupRules` and a service's
  `GenericResources` need `devices`. `CapAdd`, `Capabilities` and `CapabilityAdd` need `cap_add`.
- **BuildKit.** `docker buildx` builds talk gRPC over `/session` and `/grpc` (`image.build`), which
  Portcullis does not inspect: a BuildKit client can ask for the `network.host` entitlement
  itself, so `image.build` grants host-network builds unless dockerd's `daemon.json` sets
  `"builder": {"entitlements": {"network-host": false}}`. The `networkmode` and `cgroupparent`
  checks apply to the classic builder's `POST /build`.
- **Volume plugins and log drivers.** A volume driver other than `local` (`Driver` of
  `/volumes/create`, `HostConfig.VolumeDriver`, a mount's `VolumeOptions.DriverConfig.Name`) is a
  plugin whose options Portcullis cannot judge: it needs `volume_plugins`, and a driver name
  that is a path (`../x`: dockerd looks legacy plugins up as files) is never allowed. A log
  driver other than `json-file`, `local`, `journald` and `none` (`HostConfig.LogConfig.Type`, a
  service's `TaskTemplate.LogDriver.Name`, the swarm's default for every task,
  `TaskDefaults.LogDriver.Name` in `/swarm/init`'s `Spec` and in `/swarm/update`) has dockerd send
  the container's output from the host's network to an address the caller chose: it needs
  `log_drivers`.
- **Networks.** A `/networks/create` body is inspected too: `macvlan` and `ipvlan` (containers on
  one of the host's own interfaces, past the host's nftables) and a bridge named in
  `com.docker.network.bridge.name` (dockerd adopts an existing host bridge of that name) need
  `host_network`; a network or IPAM driver that is a plugin (not `bridge`, `overlay`, `null`;
  IPAM `default`, `null`) needs `network_plugins`, and one whose name is a path is never allowed.
- **Service rollbacks.** `POST /services/{id}/update?rollback=previous` (`docker service rollback`,
  `docker service update --rollback`) has dockerd ignore the body and apply the service's previous
  spec, which Portcullis does not see (and which another rule may have allowed): it is never
  allowed. Send the spec you want back as an ordinary update.
- **Plugins.** A managed plugin runs as root with the mounts (the host's `/`), devices,
  capabilities and host network that its own `config.json` asks for, which Portcullis does not
  read: `plugin.install`, `plugin.create`, `plugin.upgrade`, `plugin.enable` and
  `plugin.configure` (`docker plugin set` re-points a settable mount or device) need `plugins`
  in `allow`, whatever `actions` grants. Give it only to those who may do anything on the host.
- **Swarm.** `GET /swarm` is `swarm.inspect`, not `read`: its answer holds the swarm's worker
  and manager join tokens (`docker swarm join-token`, and the CLI's `docker swarm update` and
  `docker swarm ca` read it first). A manager token lets any host that reaches the swarm port join
  as a manager and run services here, and a worker token lets one receive tasks and their
  secrets, neither passing through Portcullis. `swarm.join` puts this host under another swarm's managers, which then run
  services here that never pass through Portcullis: grant it only to those who may do anything
  on the host. Of a swarm's spec (`swarm.init`, `swarm.update`) Portcullis judges the default log
  driver only; the rest, the swarm's CA among it (`CAConfig`: its signing key, external CAs the
  managers call), is the swarm administrator's.
- **Checkpoints.** `container.checkpoint` names a directory on the host where dockerd writes or
  reads CRIU images (a start with `checkpoint` or `checkpoint-dir` in its query is a
  `container.checkpoint` too); only an `--experimental` dockerd serves them. Portcullis does not judge that directory: grant `container.checkpoint` only to those who
  may write anywhere on the host.
- **Ports.** A host port below 1024 (`PortBindings` `HostPort`, or a range starting there; `""`
  and `"0"` are ephemeral) or a service `PublishedPort` below 1024 needs `low_host_ports`.

## Bind mounts

`Binds` sources that are absolute paths (a name is a volume), `Mounts` of type `bind` (and of any
type dockerd does not know), and local-driver volumes that reach a host path, in
`/volumes/create` and in `Mounts` of type `volume` with `DriverConfig`, are bind sources. The
local driver has dockerd mount the volume in the host's mount namespace, where a relative path is
resolved from dockerd's working directory, so its options are judged by `type`: none at all (a
plain named volume), `tmpfs` and the network filesystems (`nfs`, `nfs4`, `cifs`, `smb3`) are not
host paths; with `o=bind` or a disk filesystem (`ext4`, `xfs`, `btrfs`, `none`, ...) `device` is
a host path, and a disk filesystem also needs `devices` (it mounts whatever device node is at that
path when the volume is used, and a container that may write under `bind_sources` can create the
host disk's node there); `overlay`'s `lowerdir=`, `upperdir=` and `workdir=` layers, device-valued options
(`journal_path=`, `logdev=`, `rtdev=`) and every absolute path in `o` are host paths; any other
type (`proc`, `sysfs`, `cgroup2`, ...: the host's kernel filesystems) is refused. A host path must
be absolute. Each is resolved on the gateway
host: symlinks followed, `..` removed (read both as the kernel reads it and as a path cleaner
would: both must pass); a missing path is resolved up to its deepest existing directory.
`bind_sources` patterns (`*` within one segment, a last `**` any depth, including none) are matched against the
resolved paths, so write them as canonical paths. Empty `bind_sources` allows no bind mount. The
Docker socket (`/var/run/docker.sock`, `/run/docker.sock`, the upstream socket, and every
directory above them, `/` included) is never allowed.

Sources are checked when the container (or volume) is created. dockerd mounts them again at every
start, following the symlinks it finds then, so a directory under `bind_sources` that a container
can write to can be replaced by a symlink to `/` between the create and a later start. Give
`bind_sources` only directories the containers of the same users cannot rewrite (bind them
read-only, or keep what is writable below a directory that is not itself mounted).

## Image patterns

Images are normalised as Docker does: `nginx` is `docker.io/library/nginx:latest`, `user/app` is
`docker.io/user/app:latest`, `localhost:5000/x` keeps its registry, digests are kept
(`name@sha256:...`, `name:tag@sha256:...`). Uppercase repository names are invalid and denied.
A pattern is `registry/path[:tag][@digest]` and must name its registry (`docker.io/library/*`,
not `library/*`). In the name part, `*` matches within one segment and a last `**` segment any
number of segments; `*` or `**` alone matches every image. A pattern without a tag or digest matches every
tag and digest of the names it matches; `:tag` (which may use `*`) requires a matching tag; and
`@digest` the exact digest. Images are checked for `container.create` (`Image`, `image` mounts),
`service.create` / `service.update` (`ContainerSpec.Image`) and `image.pull`
(`fromImage` + `tag`; a pull without a tag fetches every tag and matches only tagless
patterns; `GET /distribution/{name}/json`, where dockerd asks the name's registry for its
manifest as a pull would, is an `image.pull` of that name too).
An image given by ID (`sha256:...`, 64 hex digits, or any all-hex string, which dockerd
may resolve as an ID prefix) needs `image_ids`, and then skips the `images` patterns.
`image.tag`, `image.build`, `image.load`, `image.import` and `container.commit` can give any
content an allowed name: `portcullis check` warns when they are granted with `images`, by name,
by family (`container.*`), by `*` or by an empty `actions`.
)";

}  // namespace docker_detail

const std::vector<std::string>& docker_allow_names() {
  static const std::vector<std::string> names{
      "privileged",    "cap_add",        "host_network",       "host_pid",
      "host_ipc",      "host_uts",       "host_userns",        "host_cgroupns",
      "devices",       "sysctls",        "seccomp_unconfined", "apparmor_unconfined",
      "label_disable", "systempaths_unconfined", "cgroup_parent", "low_host_ports",
      "volumes_from",  "image_ids",      "volume_plugins",     "log_drivers",
      "plugins",       "network_plugins"};
  return names;
}

namespace {

// What no rule can allow, whatever its conditions (also a rule without `docker:`).
void never_allowed_failures(const DockerAttributes& a, std::vector<std::string>& out) {
  if (!a.refusal.empty()) out.push_back(a.refusal);
  if (a.action == "unknown") out.push_back("unknown Docker endpoint " + a.endpoint + " is never allowed");
  if (a.body != DockerBody::none && !a.body_inspected && a.refusal.empty())
    out.push_back("the request body was not inspected");
  for (const std::string& what : a.never_allowed) out.push_back(what + " is never allowed");
  for (const std::string& opt : a.security_opts)
    if (security_opt_allow_name(opt) == "never")
      out.push_back("security option \"" + opt + "\" is not understood by Portcullis and never allowed");
  for (const DockerImage& img : a.images)
    if (!img.error.empty())
      out.push_back("image \"" + img.given + "\" (" + img.where + ") is not a valid reference: " + img.error);
  for (const DockerBind& b : a.binds) {
    if (!b.error.empty())
      out.push_back("bind mount source " + b.source + " (" + b.where + ") cannot be checked: " + b.error);
    else if (b.docker_socket)
      out.push_back("bind mount source " + b.source + " reaches the Docker socket and is never allowed");
  }
}

}  // namespace

std::optional<std::string> docker_refusal(const DockerAttributes& attrs) {
  std::vector<std::string> failures;
  never_allowed_failures(attrs, failures);
  if (failures.empty()) return std::nullopt;
  return failures.front();
}

bool docker_action_granted(const std::vector<std::string>& granted, std::string_view action) {
  if (granted.empty()) return true;  // as elsewhere in the config: empty = any (known) action
  for (const std::string& g : granted) {
    if (g == "*" || g == action) return true;
    if (g.ends_with(".*") && g.substr(0, g.size() - 2) == family_of(action)) return true;
  }
  return false;
}

bool match_docker(const DockerSpec& spec, const DockerAttributes& a, std::vector<std::string>* failed) {
  Checker c{spec, failed};
  std::vector<std::string> never;
  never_allowed_failures(a, never);
  for (std::string& why : never) c.fail(std::move(why));
  if (a.action != "unknown" && !docker_action_granted(spec.actions, a.action))
    c.fail("action " + a.action + " not in " + quoted_list(spec.actions));

  for (const DockerImage& img : a.images) {
    if (!img.error.empty()) continue;  // reported above
    if (img.is_id) {
      c.feature(true, "image_ids", "image " + img.given + " is given by ID, which is");
    } else if (!spec.images.empty()) {
      ImageReference ref = parse_image_reference(img.name, false);
      bool matched = std::any_of(spec.images.begin(), spec.images.end(),
                                 [&](const std::string& p) { return image_pattern_matches(p, ref); });
      if (!matched) c.fail("image " + img.name + " does not match " + quoted_list(spec.images));
    }
  }

  // A managed plugin's config.json asks for its own mounts (the host's /), devices, capabilities
  // and host network, and dockerd runs it as root when it is enabled: no body of ours says so.
  static constexpr std::string_view plugin_actions[] = {"plugin.install", "plugin.create", "plugin.upgrade",
                                                        "plugin.enable", "plugin.configure"};
  c.feature(std::find(std::begin(plugin_actions), std::end(plugin_actions), a.action) != std::end(plugin_actions),
            "plugins",
            "action " + a.action + " (a plugin runs as root with the mounts, devices and capabilities its own config "
            "asks for) is");
  c.feature(a.privileged, "privileged", "privileged containers are");
  c.feature(!a.cap_add.empty(), "cap_add", "adding capabilities " + quoted_list(a.cap_add) + " is");
  c.mode(a.network_mode, "network mode", "host_network");
  c.mode(a.pid_mode, "PID mode", "host_pid");
  c.mode(a.ipc_mode, "IPC mode", "host_ipc");
  c.mode(a.uts_mode, "UTS mode", "host_uts");
  c.mode(a.userns_mode, "user namespace mode", "host_userns");
  c.mode(a.cgroupns_mode, "cgroup namespace mode", "host_cgroupns");
  c.feature(!a.devices.empty(), "devices", "devices " + quoted_list(a.devices) + " are");
  c.feature(!a.sysctls.empty(), "sysctls", "sysctls " + quoted_list(a.sysctls) + " are");
  c.feature(!a.volumes_from.empty(), "volumes_from", "volumes from " + quoted_list(a.volumes_from) + " are");
  c.feature(!a.cgroup_parent.empty(), "cgroup_parent", "cgroup parent " + a.cgroup_parent + " is");
  c.feature(!a.low_host_ports.empty(), "low_host_ports",
            "host ports below 1024 " + quoted_list(a.low_host_ports) + " are");
  c.feature(a.masked_paths_overridden, "systempaths_unconfined", "replacing the masked /proc and /sys paths is");
  c.feature(!a.volume_plugins.empty(), "volume_plugins", "volume plugins " + quoted_list(a.volume_plugins) + " are");
  c.feature(!a.network_plugins.empty(), "network_plugins",
            "network plugins " + quoted_list(a.network_plugins) + " are");
  c.feature(!a.log_drivers.empty(), "log_drivers",
            "log drivers that send from the host's network " + quoted_list(a.log_drivers) + " are");
  for (const std::string& opt : a.security_opts) {
    std::string allow = security_opt_allow_name(opt);
    if (!allow.empty() && allow != "never") c.feature(true, allow, "security option " + opt + " is");
  }

  for (const DockerBind& b : a.binds) {
    if (!b.error.empty() || b.docker_socket) continue;  // reported above
    for (const std::string& resolved : b.resolved) {
      bool inside = std::any_of(spec.bind_sources.begin(), spec.bind_sources.end(),
                                [&](const std::string& p) { return docker_detail::glob_segments(p, resolved); });
      if (inside) continue;
      std::string head = "bind mount source " + b.source;
      if (resolved != b.source) head += " (resolves to " + resolved + ")";
      c.fail(head + " is outside bind_sources " + quoted_list(spec.bind_sources));
      break;
    }
  }
  return c.ok;
}

void validate_docker_spec(const DockerSpec& spec) {
  const auto& actions = docker_actions();
  for (const std::string& action : spec.actions) {
    if (action == "*" || contains(actions, action)) continue;
    if (action.ends_with(".*")) {
      std::string family = action.substr(0, action.size() - 2);
      if (std::any_of(actions.begin(), actions.end(), [&](const std::string& a) { return family_of(a) == family; }))
        continue;
    }
    throw std::invalid_argument("unknown docker action \"" + action +
                                "\" (actions are listed in docs/docker-actions.md; families as container.*)");
  }
  for (const std::string& name : spec.allow)
    if (!contains(docker_allow_names(), name))
      throw std::invalid_argument("unknown docker allow name \"" + name + "\" (known: " +
                                  quoted_list(docker_allow_names()) + ")");
  for (const std::string& pattern : spec.images) {
    auto bad = [&](const std::string& why) {
      throw std::invalid_argument("docker image pattern \"" + pattern + "\": " + why);
    };
    if (pattern == "*" || pattern == "**") continue;
    if (pattern.empty()) bad("empty");
    std::string_view name = pattern;
    if (auto at = name.find('@'); at != std::string_view::npos) {
      std::string_view digest = name.substr(at + 1);
      name = name.substr(0, at);
      if (digest.find(':') == std::string_view::npos || digest.find('*') != std::string_view::npos)
        bad("the digest must be written out, as sha256:<64 hex digits>");
    }
    if (auto colon = name.rfind(':'); colon != std::string_view::npos && name.find('/', colon) == std::string_view::npos)
      name = name.substr(0, colon);
    std::string_view first = name.substr(0, name.find('/'));
    bool registry = first.find_first_of(".:") != std::string_view::npos || first == "localhost" || first == "*" ||
                    first == "**";
    if (!registry || name.find('/') == std::string_view::npos)
      bad("name the registry, e.g. docker.io/library/nginx or docker.io/library/*");
    if (name.find("//") != std::string_view::npos || name.ends_with('/')) bad("empty path segment");
    if (auto stars = name.find("**"); stars != std::string_view::npos && (stars == 0 || stars + 2 != name.size() || name[stars - 1] != '/'))
      bad("\"**\" may only be the last segment");
    if (std::any_of(name.begin() + static_cast<long>(first.size()), name.end(),
                    [](char c) { return std::isupper(static_cast<unsigned char>(c)); }))
      bad("repository names are lowercase");
  }
  for (const std::string& pattern : spec.bind_sources) {
    auto bad = [&](const std::string& why) {
      throw std::invalid_argument("docker bind_sources pattern \"" + pattern + "\": " + why);
    };
    if (pattern.empty() || pattern.front() != '/') bad("must be an absolute path");
    std::string_view rest = std::string_view(pattern).substr(1);
    if (rest.empty()) bad("\"/\" holds the Docker socket and is never allowed; name directories below it");
    while (true) {
      auto slash = rest.find('/');
      std::string_view seg = rest.substr(0, slash);
      if (seg.empty()) bad("empty path segment (\"//\" or a trailing \"/\")");
      if (seg == "." || seg == "..") bad("\".\" and \"..\" are not allowed; write the canonical path");
      if (seg.find("**") != std::string_view::npos && (seg != "**" || slash != std::string_view::npos))
        bad("\"**\" may only be the last segment");
      if (slash == std::string_view::npos) break;
      rest.remove_prefix(slash + 1);
    }
  }
}

}  // namespace portcullis::policy
