// Inspection of the Docker bodies that can ask for host access: container create / update, exec
// create, service create / update and volume create. Fail closed: what we cannot read exactly as
// dockerd will read it is refused.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <iterator>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/docker_internal.hpp"

namespace portcullis::policy {
namespace {

using docker_detail::JsonValue;
using Kind = JsonValue::Kind;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

template <class List>
bool one_of(const List& list, std::string_view v) {
  return std::find(std::begin(list), std::end(list), v) != std::end(list);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Reads typed fields out of the tree, recording the first type mismatch: dockerd refuses a body
// whose field has the wrong type, and so do we, rather than guess.
class BodyReader {
 public:
  BodyReader(DockerAttributes& a, const DockerHostPaths& host) : a_(a), host_(host) {}
  std::string error;

  const JsonValue* object(const JsonValue* v, std::string_view where) {
    if (v == nullptr || v->kind == Kind::null) return nullptr;
    if (v->kind != Kind::object) return wrong(where, "an object");
    return v;
  }
  const JsonValue* array(const JsonValue* v, std::string_view where) {
    if (v == nullptr || v->kind == Kind::null) return nullptr;
    if (v->kind != Kind::array) return wrong(where, "an array");
    return v;
  }
  std::string string(const JsonValue* v, std::string_view where) {
    if (v == nullptr || v->kind == Kind::null) return {};
    if (v->kind != Kind::string) return wrong(where, "a string"), std::string();
    return v->text;
  }
  bool boolean(const JsonValue* v, std::string_view where) {
    if (v == nullptr || v->kind == Kind::null) return false;
    if (v->kind != Kind::boolean) return wrong(where, "true or false"), true;
    return v->boolean;
  }
  std::vector<std::string> strings(const JsonValue* v, std::string_view where) {
    std::vector<std::string> out;
    if (const JsonValue* arr = array(v, where))
      for (std::size_t i = 0; i < arr->items.size(); ++i)
        out.push_back(string(&arr->items[i], std::string(where) + "[" + std::to_string(i) + "]"));
    return out;
  }
  // A map[string]string: its keys.
  std::vector<std::string> keys(const JsonValue* v, std::string_view where) {
    std::vector<std::string> out;
    if (const JsonValue* obj = object(v, where))
      for (const auto& m : obj->members) {
        string(&m.value, std::string(where) + "." + m.key);
        out.push_back(m.key);
      }
    return out;
  }

  // HostConfig (or, for old API versions, the same fields at the top of a create body; and the
  // Resources fields of an update body).
  void host_config(const JsonValue& hc, const std::string& at) {
    if (boolean(hc.find("Privileged"), at + "Privileged")) a_.privileged = true;
    for (const char* field : {"CapAdd", "Capabilities"})
      for (auto& cap : strings(hc.find(field), at + field)) a_.cap_add.push_back(cap);
    mode(hc, at, "NetworkMode", a_.network_mode);
    mode(hc, at, "PidMode", a_.pid_mode);
    mode(hc, at, "IpcMode", a_.ipc_mode);
    mode(hc, at, "UTSMode", a_.uts_mode);
    mode(hc, at, "UsernsMode", a_.userns_mode);
    mode(hc, at, "CgroupnsMode", a_.cgroupns_mode);
    mode(hc, at, "Cgroup", a_.cgroupns_mode);  // "container:<id>": that container's cgroup
    if (const JsonValue* devices = array(hc.find("Devices"), at + "Devices"))
      for (std::size_t i = 0; i < devices->items.size(); ++i) {
        std::string where = at + "Devices[" + std::to_string(i) + "]";
        const JsonValue* d = object(&devices->items[i], where);
        std::string path = d ? string(d->find("PathOnHost"), where + ".PathOnHost") : std::string();
        a_.devices.push_back(path.empty() ? where : path);
      }
    if (const JsonValue* requests = array(hc.find("DeviceRequests"), at + "DeviceRequests"))
      for (std::size_t i = 0; i < requests->items.size(); ++i)
        a_.devices.push_back(at + "DeviceRequests[" + std::to_string(i) + "]");
    for (auto& rule : strings(hc.find("DeviceCgroupRules"), at + "DeviceCgroupRules"))
      a_.devices.push_back("cgroup rule \"" + rule + "\"");
    for (auto& name : keys(hc.find("Sysctls"), at + "Sysctls")) a_.sysctls.push_back(name);
    for (auto& from : strings(hc.find("VolumesFrom"), at + "VolumesFrom")) a_.volumes_from.push_back(from);
    std::vector<std::string> binds = strings(hc.find("Binds"), at + "Binds");
    for (std::size_t i = 0; i < binds.size(); ++i) bind_spec(binds[i], at + "Binds[" + std::to_string(i) + "]");
    mounts(hc.find("Mounts"), at + "Mounts");
    for (auto& opt : strings(hc.find("SecurityOpt"), at + "SecurityOpt")) a_.security_opts.push_back(opt);
    // An explicit list replaces Docker's masked / read-only /proc and /sys paths; [] unmasks all.
    for (const char* field : {"MaskedPaths", "ReadonlyPaths"})
      if (array(hc.find(field), at + field) != nullptr) a_.masked_paths_overridden = true;
    if (std::string parent = string(hc.find("CgroupParent"), at + "CgroupParent"); !parent.empty())
      a_.cgroup_parent = parent;
    port_bindings(hc.find("PortBindings"), at + "PortBindings");
    if (std::string driver = string(hc.find("VolumeDriver"), at + "VolumeDriver"); !driver.empty())
      volume_driver(driver, nullptr, at + "VolumeDriver");
    log_config(hc.find("LogConfig"), at + "LogConfig", "Type");
  }

  void mode(const JsonValue& hc, const std::string& at, const char* field, std::string& out) {
    std::string value = string(hc.find(field), at + field);
    if (docker_detail::is_shared_namespace(value)) out = value;
  }

  // "src:dst[:opts]" as dockerd's Linux parser splits it; an absolute source is a bind mount,
  // anything else that is not a volume name is refused by dockerd and checked as a bind by us.
  void bind_spec(const std::string& spec, const std::string& where) {
    auto colon = spec.find(':');
    if (colon == std::string::npos) return;  // only a container path: an anonymous volume
    std::string source = spec.substr(0, colon);
    bool volume_name = source.size() >= 2 && std::isalnum(static_cast<unsigned char>(source[0])) &&
                       std::all_of(source.begin(), source.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '-';
                       });
    if (!volume_name) add_bind(source, where);
  }

  void add_bind(const std::string& source, const std::string& where) {
    DockerBind bind{where, source, {}, {}, false};
    docker_detail::resolve_bind(bind, host_);
    a_.binds.push_back(std::move(bind));
  }

  // api/types/mount.Mount, in HostConfig.Mounts and in a service's ContainerSpec.Mounts.
  void mounts(const JsonValue* v, const std::string& at) {
    const JsonValue* list = array(v, at);
    if (list == nullptr) return;
    for (std::size_t i = 0; i < list->items.size(); ++i) {
      std::string where = at + "[" + std::to_string(i) + "]";
      const JsonValue* m = object(&list->items[i], where);
      if (m == nullptr) continue;
      std::string type = string(m->find("Type"), where + ".Type");
      std::string source = string(m->find("Source"), where + ".Source");
      if (type == "volume") {
        const JsonValue* vo = object(m->find("VolumeOptions"), where + ".VolumeOptions");
        const JsonValue* dc = vo ? object(vo->find("DriverConfig"), where + ".VolumeOptions.DriverConfig") : nullptr;
        if (dc != nullptr)
          volume_driver(string(dc->find("Name"), where + ".VolumeOptions.DriverConfig.Name"), dc->find("Options"),
                        where + ".VolumeOptions.DriverConfig.Options");
      } else if (type == "image") {
        a_.images.push_back(docker_detail::run_image(where + ".Source", source));
      } else if (type != "tmpfs" && type != "npipe" && type != "cluster") {
        add_bind(source, where);  // "bind", and any type dockerd would refuse: fail closed
      }
    }
  }

  // The local driver has dockerd mount(2) `device` with `type` and the options `o`, in the host's
  // mount namespace; a relative path there is resolved from dockerd's working directory (`/`
  // under systemd). Judged by type, failing closed:
  //   none (no type, no device, no o)     a plain named volume
  //   tmpfs                               memory; `device` is only a name
  //   nfs, nfs4, cifs, smb3               remote; `device` names the share
  //   overlay                             every lowerdir/upperdir/workdir layer is a host path
  //   o=bind, or a disk filesystem        `device` is a host path (a directory, or a block device)
  //   anything else (proc, sysfs, ...)    refused: a kernel filesystem of the host
  // Host paths must be absolute and are judged as bind sources, and so is every absolute path in
  // any other option and every value of an option that names a device (journal_path=, logdev=).
  // Other drivers are plugins the operator installed.
  void volume_driver(const std::string& driver, const JsonValue* options, const std::string& at) {
    static constexpr std::string_view disk_types[] = {"ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "exfat",
                                                      "ntfs", "ntfs3", "f2fs", "iso9660", "squashfs", "udf", "none"};
    static constexpr std::string_view remote_types[] = {"nfs", "nfs4", "cifs", "smb3"};
    static constexpr std::string_view path_options[] = {"lowerdir", "lowerdir+", "upperdir", "workdir", "datadir+",
                                                        "journal_path", "logdev", "rtdev", "device"};
    if (!driver.empty() && lower(driver) != "local") {
      volume_plugin(driver, at);
      return;
    }
    const JsonValue* opts = object(options, at);
    if (opts == nullptr) return;
    for (const auto& m : opts->members) string(&m.value, at + "." + m.key);
    std::string type = lower(string(opts->find("type"), at + ".type"));
    std::string o = string(opts->find("o"), at + ".o");
    std::string device = string(opts->find("device"), at + ".device");
    bool bind = false;
    std::string_view rest = o;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string_view opt = trim(rest.substr(0, comma));
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
      std::string name = lower(opt.substr(0, opt.find('=')));
      if (name == "bind" || name == "rbind") bind = true;
      if (auto eq = opt.find('='); eq != std::string_view::npos) {
        std::string_view value = opt.substr(eq + 1);
        while (!value.empty()) {  // colon-separated path lists (lowerdir=/a:/b)
          auto c = value.find(':');
          std::string_view part = value.substr(0, c);
          if (part.starts_with('/') || (!part.empty() && one_of(path_options, name)))
            add_bind(std::string(part), at + ".o " + std::string(name));  // a relative one is refused there
          value = c == std::string_view::npos ? std::string_view{} : value.substr(c + 1);
        }
      }
    }
    // With MS_BIND the kernel ignores the type, so o=bind always binds `device`.
    if (bind) {
      add_bind(device, at + ".device");
      return;
    }
    // A disk filesystem mounts whatever device node is at `device` when the volume is first
    // used: a container that may write under bind_sources can mknod the host's disk there
    // (Docker's default capabilities include CAP_MKNOD). So it is a device, needing `devices`.
    if (one_of(disk_types, type)) {
      if (!device.empty()) add_bind(device, at + ".device");
      a_.devices.push_back(at + ".device " + device + " (a " + type + " filesystem mounted from a device)");
      return;
    }
    if (type.empty() && device.empty() && o.empty()) return;
    if (type == "tmpfs" || type == "overlay" || one_of(remote_types, type)) return;
    if (error.empty())
      error = at + ".type " + (type.empty() ? std::string("is missing") : "is " + type) +
              ": Portcullis judges local volumes of type tmpfs, overlay, nfs, nfs4, cifs, smb3, or a disk filesystem "
              "or o=bind on a device inside bind_sources; a kernel filesystem of the host (proc, sysfs, ...) is never "
              "mounted for a container";
  }

  // A volume driver other than local is a plugin, whose options Portcullis cannot judge: it needs
  // `volume_plugins`. dockerd looks a legacy plugin up by name as a file (/etc/docker/plugins/
  // NAME.spec), so a name with a path in it (../) is never allowed.
  void volume_plugin(const std::string& driver, const std::string& at) {
    if (plugin_name_is_path(driver)) a_.never_allowed.push_back("volume driver name \"" + driver + "\" (" + at + "), which names a path,");
    else a_.volume_plugins.push_back(driver + " (" + at + ")");
  }

  // Log drivers that write on the host only; the others (gelf, syslog, fluentd, splunk, awslogs,
  // ...) have dockerd connect from the host's network to an address the caller chose.
  void log_config(const JsonValue* v, const std::string& at, const char* type_key) {
    static constexpr std::string_view local_drivers[] = {"json-file", "local", "journald", "none"};
    const JsonValue* lc = object(v, at);
    if (lc == nullptr) return;
    std::string type = string(lc->find(type_key), at + "." + type_key);
    if (!type.empty() && !one_of(local_drivers, type))
      a_.log_drivers.push_back(type + " (" + at + ")");
  }

  // The swarm's defaults for every task: a service that names no log driver gets this one.
  void swarm_spec(const JsonValue& spec, const std::string& at) {
    const JsonValue* defaults = object(spec.find("TaskDefaults"), at + "TaskDefaults");
    if (defaults != nullptr) log_config(defaults->find("LogDriver"), at + "TaskDefaults.LogDriver", "Name");
  }

  void port_bindings(const JsonValue* v, const std::string& at) {
    const JsonValue* map = object(v, at);
    if (map == nullptr) return;
    for (const auto& m : map->members) {
      const JsonValue* list = array(&m.value, at + "." + m.key);
      if (list == nullptr) continue;
      for (std::size_t i = 0; i < list->items.size(); ++i) {
        std::string where = at + "." + m.key + "[" + std::to_string(i) + "]";
        const JsonValue* b = object(&list->items[i], where);
        if (b == nullptr) continue;
        std::string port = string(b->find("HostPort"), where + ".HostPort");
        if (low_port(port)) a_.low_host_ports.push_back(m.key + " -> " + port);
      }
    }
  }

  // "" and "0" are ephemeral; "N" or "N-M"; what does not parse counts as low (fail closed).
  static bool low_port(std::string_view port) {
    port = trim(port);
    if (port.empty() || port == "0") return false;
    std::string_view first = port.substr(0, port.find('-'));
    unsigned value = 0;
    auto [end, ec] = std::from_chars(first.data(), first.data() + first.size(), value);
    return ec != std::errc() || end != first.data() + first.size() || value < 1024;
  }

  void container_create(const JsonValue& root) {
    a_.images.push_back(docker_detail::run_image("Image", string(root.find("Image"), "Image")));
    host_config(root, "");
    if (const JsonValue* hc = object(root.find("HostConfig"), "HostConfig")) host_config(*hc, "HostConfig.");
    // An endpoint on the "host" network attaches the container to the host's network stack.
    const JsonValue* net = object(root.find("NetworkingConfig"), "NetworkingConfig");
    if (const JsonValue* eps = net ? object(net->find("EndpointsConfig"), "NetworkingConfig.EndpointsConfig") : nullptr)
      for (const auto& m : eps->members)
        if (lower(m.key) == "host") a_.network_mode = "host";
  }

  void service(const JsonValue& root) {
    const JsonValue* task = object(root.find("TaskTemplate"), "TaskTemplate");
    const JsonValue* spec = task ? object(task->find("ContainerSpec"), "TaskTemplate.ContainerSpec") : nullptr;
    const std::string at = "TaskTemplate.ContainerSpec.";
    if (task != nullptr && task->find("PluginSpec") != nullptr && task->find("PluginSpec")->kind != Kind::null)
      a_.never_allowed.push_back("a service running a plugin (TaskTemplate.PluginSpec); use the plugin actions");
    a_.images.push_back(docker_detail::run_image(at + "Image", spec ? string(spec->find("Image"), at + "Image") : ""));
    if (spec != nullptr) {
      for (auto& cap : strings(spec->find("CapabilityAdd"), at + "CapabilityAdd")) a_.cap_add.push_back(cap);
      for (auto& name : keys(spec->find("Sysctls"), at + "Sysctls")) a_.sysctls.push_back(name);
      mounts(spec->find("Mounts"), at + "Mounts");
      privileges(object(spec->find("Privileges"), at + "Privileges"), at + "Privileges.");
    }
    if (task != nullptr) {
      networks(task->find("Networks"), "TaskTemplate.Networks");
      log_config(task->find("LogDriver"), "TaskTemplate.LogDriver", "Name");
      const JsonValue* res = object(task->find("Resources"), "TaskTemplate.Resources");
      const JsonValue* reserve = res ? object(res->find("Reservations"), "TaskTemplate.Resources.Reservations") : nullptr;
      if (reserve != nullptr) {
        std::string where = "TaskTemplate.Resources.Reservations.GenericResources";
        if (const JsonValue* generic = array(reserve->find("GenericResources"), where))
          for (std::size_t i = 0; i < generic->items.size(); ++i)
            a_.devices.push_back(where + "[" + std::to_string(i) + "]");
      }
    }
    networks(root.find("Networks"), "Networks");
    const JsonValue* endpoint = object(root.find("EndpointSpec"), "EndpointSpec");
    if (const JsonValue* ports = endpoint ? array(endpoint->find("Ports"), "EndpointSpec.Ports") : nullptr)
      for (std::size_t i = 0; i < ports->items.size(); ++i) {
        std::string where = "EndpointSpec.Ports[" + std::to_string(i) + "]";
        const JsonValue* p = object(&ports->items[i], where);
        const JsonValue* published = p ? p->find("PublishedPort") : nullptr;
        if (published == nullptr || published->kind == Kind::null) continue;
        if (published->kind != Kind::number) {
          wrong(where + ".PublishedPort", "a number");
        } else if (!published->integral || (published->integer != 0 && published->integer < 1024)) {
          a_.low_host_ports.push_back(where + " -> " + published->text);
        }
      }
  }

  void privileges(const JsonValue* p, const std::string& at) {
    if (p == nullptr) return;
    if (const JsonValue* seccomp = object(p->find("Seccomp"), at + "Seccomp")) {
      std::string mode = lower(string(seccomp->find("Mode"), at + "Seccomp.Mode"));
      if (mode == "unconfined") a_.security_opts.push_back("seccomp=unconfined");
      else if (!mode.empty() && mode != "default") a_.security_opts.push_back("seccomp=<custom profile>");
    }
    if (const JsonValue* apparmor = object(p->find("AppArmor"), at + "AppArmor")) {
      std::string mode = lower(string(apparmor->find("Mode"), at + "AppArmor.Mode"));
      if (!mode.empty() && mode != "default") a_.security_opts.push_back("apparmor=unconfined");
    }
    if (const JsonValue* selinux = object(p->find("SELinuxContext"), at + "SELinuxContext")) {
      if (boolean(selinux->find("Disable"), at + "SELinuxContext.Disable")) a_.security_opts.push_back("label=disable");
      std::string type = string(selinux->find("Type"), at + "SELinuxContext.Type");
      if (!type.empty()) a_.security_opts.push_back("label=type:" + type);
    }
  }

  void networks(const JsonValue* v, const std::string& at) {
    if (const JsonValue* list = array(v, at))
      for (std::size_t i = 0; i < list->items.size(); ++i) {
        std::string where = at + "[" + std::to_string(i) + "]";
        const JsonValue* n = object(&list->items[i], where);
        std::string target = n ? string(n->find("Target"), where + ".Target") : std::string();
        if (lower(target) == "host") a_.network_mode = "host";
      }
  }

  // api/types/network.CreateRequest. macvlan and ipvlan put containers on one of the host's own
  // interfaces (`parent`), on its physical network and past its nftables; a bridge named in
  // com.docker.network.bridge.name is adopted when the host already has it (br0, cni0, ...). Both
  // are the host's network. Any other driver is a plugin (remote plugins have dockerd move host
  // interfaces into containers), looked up by name as a file, like a volume plugin.
  void network_create(const JsonValue& root) {
    static constexpr std::string_view builtin[] = {"bridge", "overlay", "null"};
    std::string driver = string(root.find("Driver"), "Driver");
    if (driver == "macvlan" || driver == "ipvlan" || driver == "host")
      a_.network_mode = driver + " (Driver: the host's own interfaces)";
    else if (!driver.empty() && !one_of(builtin, driver))
      network_plugin(driver, "Driver");
    if (const JsonValue* opts = object(root.find("Options"), "Options"))
      for (const auto& m : opts->members) {
        std::string value = string(&m.value, "Options." + m.key);
        if (lower(m.key) == "com.docker.network.bridge.name" && !value.empty())
          a_.network_mode = "bridge " + value + " (Options." + m.key + ": an existing host bridge is adopted)";
      }
    if (const JsonValue* ipam = object(root.find("IPAM"), "IPAM")) {
      std::string ipam_driver = string(ipam->find("Driver"), "IPAM.Driver");
      if (!ipam_driver.empty() && ipam_driver != "default" && ipam_driver != "null")
        network_plugin(ipam_driver, "IPAM.Driver");
      keys(ipam->find("Options"), "IPAM.Options");
    }
  }

  void network_plugin(const std::string& driver, const std::string& at) {
    if (plugin_name_is_path(driver))
      a_.never_allowed.push_back("network driver name \"" + driver + "\" (" + at + "), which names a path,");
    else
      a_.network_plugins.push_back(driver + " (" + at + ")");
  }

  static bool plugin_name_is_path(const std::string& driver) {
    return driver.starts_with('/') || driver.starts_with('.') || driver.find("/.") != std::string::npos ||
           driver.find('\\') != std::string::npos ||
           std::any_of(driver.begin(), driver.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; });
  }

  void volume_create(const JsonValue& root) {
    volume_driver(string(root.find("Driver"), "Driver"), root.find("DriverOpts"), "DriverOpts");
  }

 private:
  std::nullptr_t wrong(std::string_view where, std::string_view expected) {
    if (error.empty()) error = std::string(where) + " must be " + std::string(expected);
    return nullptr;
  }

  DockerAttributes& a_;
  const DockerHostPaths& host_;
};

// Go's mime.ParseMediaType, as far as we need it: "type/subtype" (case-insensitive) and
// `; name=value` parameters.
std::optional<std::string> json_content_type_refusal(std::string_view content_type) {
  if (trim(content_type).empty())
    return std::string("the request has no Content-Type; Docker bodies are application/json");
  std::string_view rest = content_type;
  auto semi = rest.find(';');
  std::string media = lower(trim(rest.substr(0, semi)));
  if (media != "application/json")
    return "the Content-Type is " + media + ", not application/json; Portcullis inspects JSON bodies only";
  while (semi != std::string_view::npos) {
    rest.remove_prefix(semi + 1);
    semi = rest.find(';');
    std::string_view param = trim(rest.substr(0, semi));
    if (param.empty()) continue;
    auto eq = param.find('=');
    if (eq == std::string_view::npos) return "the Content-Type parameter \"" + std::string(param) + "\" is malformed";
    std::string name = lower(trim(param.substr(0, eq)));
    std::string_view value = trim(param.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (name == "charset" && lower(value) != "utf-8" && lower(value) != "utf8")
      return "the body's charset is " + std::string(value) + "; Portcullis inspects UTF-8 JSON only";
  }
  return std::nullopt;
}

std::string endpoint_words(DockerBody body) {
  switch (body) {
    case DockerBody::container_create: return "container create";
    case DockerBody::container_update: return "container update";
    case DockerBody::exec_create: return "exec create";
    case DockerBody::service_create: return "service create";
    case DockerBody::service_update: return "service update";
    case DockerBody::volume_create: return "volume create";
    case DockerBody::swarm_init: return "swarm init";
    case DockerBody::swarm_update: return "swarm update";
    case DockerBody::network_create: return "network create";
    case DockerBody::none: break;
  }
  return "request";
}

}  // namespace

std::optional<std::string> docker_content_type_refusal(std::string_view content_type) {
  // Go's mime.ParseMediaType lowercases and trims with Unicode's rules: "\u00a0" is space to it,
  // and "\u0130" (İ) lowercases to "i". Only ASCII can be compared the same way here.
  if (std::any_of(content_type.begin(), content_type.end(), [](char c) {
        auto u = static_cast<unsigned char>(c);
        return u >= 0x7f || (u < 0x20 && u != '\t');
      }))
    return std::string("the Content-Type has bytes outside printable ASCII; Docker's Go server would read it "
                       "with Unicode's case and space rules, which Portcullis does not follow");
  std::string media = lower(trim(content_type.substr(0, content_type.find(';'))));
  if (media == "application/x-www-form-urlencoded")
    return std::string("form-encoded bodies are refused: Docker would read their fields ahead of the query");
  // r.FormValue() parses a multipart/form-data body, and dockerd reads build options that way:
  // its fields fill in what the query leaves out (networkmode=host).
  if (media.starts_with("multipart/"))
    return "multipart bodies (" + media + ") are refused: Docker would read their fields as if they were in the query";
  return std::nullopt;
}

std::optional<std::string> inspect_docker_body(std::string_view content_type, std::string_view body,
                                               DockerAttributes& a, const DockerHostPaths& host) {
  auto refuse = [&](std::string why) -> std::optional<std::string> {
    a.body_inspected = false;
    a.refusal = "the " + endpoint_words(a.body) + " body is refused: " + why;
    return a.refusal;
  };
  if (a.body == DockerBody::none) return std::nullopt;
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return refuse("it is empty, and Portcullis does not forward what it has not inspected");
  if (auto why = json_content_type_refusal(content_type)) return refuse(*why);
  std::string error;
  auto root = docker_detail::parse_json_strict(body, error);
  if (!root) return refuse(error);
  if (root->kind != Kind::object) return refuse("it is not a JSON object");
  try {
    BodyReader reader(a, host);
    switch (a.body) {
      case DockerBody::container_create: reader.container_create(*root); break;
      case DockerBody::container_update: reader.host_config(*root, ""); break;
      case DockerBody::exec_create:
        if (reader.boolean(root->find("Privileged"), "Privileged")) a.privileged = true;
        break;
      case DockerBody::service_create:
      case DockerBody::service_update: reader.service(*root); break;
      case DockerBody::volume_create: reader.volume_create(*root); break;
      case DockerBody::swarm_init:
        if (const JsonValue* spec = reader.object(root->find("Spec"), "Spec")) reader.swarm_spec(*spec, "Spec.");
        break;
      case DockerBody::swarm_update: reader.swarm_spec(*root, ""); break;
      case DockerBody::network_create: reader.network_create(*root); break;
      case DockerBody::none: break;
    }
    if (!reader.error.empty()) return refuse(reader.error);
  } catch (const std::exception& e) {
    return refuse(std::string("it cannot be inspected: ") + e.what());
  }
  a.body_inspected = true;
  return std::nullopt;
}

}  // namespace portcullis::policy
