#include "proxy/inject/inject.hpp"

#include <boost/json.hpp>
#include <charconv>
#include <set>
#include <sstream>

namespace portcullis::inject {
namespace json = boost::json;

namespace {

JsonPath join(JsonPath p, std::initializer_list<std::variant<std::string, std::size_t>> more) {
  for (const auto& s : more) p.push_back(s);
  return p;
}

// The object at o[key]; an error when it is absent or something else.
json::object& object_in(json::object& o, const std::string& key, const JsonPath& path) {
  const JsonPath at = join(path, {key});
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) throw InjectError(path, path_text(path) + (path.empty() ? "" : ": ") + "no " + key);
  if (!v->is_object()) throw InjectError(at, path_text(at) + " must be a mapping");
  return v->get_object();
}

// The array at o[key], or null when absent. Nothing is inserted, so pointers
// stay valid.
json::array* array_in(json::object& o, const std::string& key, const JsonPath& path) {
  auto* v = o.if_contains(key);
  if (!v || v->is_null()) return nullptr;
  const JsonPath at = join(path, {key});
  if (!v->is_array()) throw InjectError(at, path_text(at) + " must be a list");
  return &v->get_array();
}

const json::object* annotations_of(const json::value& metadata) {
  if (!metadata.is_object()) return nullptr;
  const auto* a = metadata.get_object().if_contains("annotations");
  return a && a->is_object() ? &a->get_object() : nullptr;
}

// The annotation's value: the pod template's own, else the owning workload's.
const json::value* annotation(const json::value& metadata, const json::value& owner, const char* name) {
  for (const json::object* a : {annotations_of(metadata), owner.is_object() ? &owner.get_object() : nullptr})
    if (a)
      if (const auto* v = a->if_contains(name)) return v;
  return nullptr;
}

std::string annotation_string(const json::value* v, const char* name, const JsonPath& meta_path) {
  if (!v->is_string())
    throw InjectError(join(meta_path, {"annotations", name}),
                      std::string("annotation ") + name + " must be a string (quote it)");
  return std::string(v->get_string());
}

// "8080, 9090" -> [8080, 9090]
std::vector<int> port_list(const std::string& text, const char* name, const JsonPath& where) {
  std::vector<int> ports;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    auto b = item.find_first_not_of(" \t");
    if (b == std::string::npos) continue;
    item = item.substr(b, item.find_last_not_of(" \t") - b + 1);
    int port = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), port);
    if (ec != std::errc() || p != item.data() + item.size() || port < 1 || port > 65535)
      throw InjectError(where, std::string("annotation ") + name + ": '" + item + "' is not a port number (1-65535)");
    ports.push_back(port);
  }
  return ports;
}

std::string join_ports(const std::vector<int>& ports) {
  std::string s;
  for (int p : ports) s += (s.empty() ? "" : ",") + std::to_string(p);
  return s;
}

json::object security_context(bool init) {
  json::object caps{{"drop", json::array{"ALL"}}};
  if (init) caps = json::object{{"add", json::array{"NET_ADMIN", "NET_RAW"}}, {"drop", json::array{"ALL"}}};
  json::object sc;
  if (init) {
    // nftables needs root in the pod's network namespace; nothing else.
    sc["runAsUser"] = 0;
    sc["runAsNonRoot"] = false;
  } else {
    sc["runAsUser"] = kProxyUid;
    sc["runAsGroup"] = kProxyUid;
    sc["runAsNonRoot"] = true;
  }
  sc["readOnlyRootFilesystem"] = true;
  sc["allowPrivilegeEscalation"] = false;
  sc["privileged"] = false;
  sc["capabilities"] = std::move(caps);
  return sc;
}

json::array mounts(bool certs) {
  json::array m{json::object{{"name", kConfigVolume}, {"mountPath", kConfigDir}, {"readOnly", true}}};
  if (certs) m.push_back(json::object{{"name", kCertsVolume}, {"mountPath", kCertsDir}, {"readOnly", true}});
  return m;
}

json::object probe(int period, int failures) {
  return json::object{{"httpGet", json::object{{"path", "/healthz/ready"}, {"port", kProbePort}, {"scheme", "HTTP"}}},
                      {"periodSeconds", period},
                      {"timeoutSeconds", 1},
                      {"failureThreshold", failures}};
}

std::string config_file(const Options& o) { return std::string(kConfigDir) + "/" + o.config_key; }

json::object init_container(const Options& o, const std::vector<int>& inbound, const std::vector<int>& exclude) {
  json::array args{"firewall", "apply", "-c", config_file(o), "--inbound-ports", join_ports(inbound)};
  if (!exclude.empty()) {
    args.push_back("--exclude-outbound-ports");
    args.push_back(json::string(join_ports(exclude)));
  }
  return json::object{{"name", kInitName},
                      {"image", o.image},
                      {"imagePullPolicy", "IfNotPresent"},
                      {"command", json::array{kBinary}},
                      {"args", std::move(args)},
                      {"resources", json::object{{"requests", json::object{{"cpu", "10m"}, {"memory", "16Mi"}}},
                                                 {"limits", json::object{{"cpu", "100m"}, {"memory", "64Mi"}}}}},
                      // The config names the certificate files, and loading it checks they
                      // exist.
                      {"volumeMounts", mounts(true)},
                      {"securityContext", security_context(true)}};
}

json::object proxy_container(const Options& o, const json::object& app_probes) {
  json::object c{{"name", kProxyName},
                 {"image", o.image},
                 {"imagePullPolicy", "IfNotPresent"},
                 {"command", json::array{kBinary}},
                 {"args", json::array{"run", "-c", config_file(o), "--no-firewall"}},
                 // A native sidecar: started before the app, ready before the app starts,
                 // stopped after it, and it does not keep a Job from completing.
                 {"restartPolicy", "Always"},
                 {"ports", json::array{json::object{
                               {"name", "portcullis-probe"}, {"containerPort", kProbePort}, {"protocol", "TCP"}}}}};
  if (!app_probes.empty())
    c["env"] = json::array{json::object{{"name", kProbesEnv}, {"value", json::serialize(app_probes)}}};
  c["resources"] = json::object{{"requests", json::object{{"cpu", "50m"}, {"memory", "32Mi"}}}};
  c["volumeMounts"] = mounts(true);
  c["securityContext"] = security_context(false);
  c["startupProbe"] = probe(1, 60);
  c["readinessProbe"] = probe(5, 3);
  return c;
}

// The container's TCP ports, in the order declared.
void container_ports(const json::object& c, std::vector<int>& out) {
  const auto* ports = c.if_contains("ports");
  if (!ports || !ports->is_array()) return;
  for (const auto& p : ports->get_array()) {
    if (!p.is_object()) continue;
    const auto* proto = p.get_object().if_contains("protocol");
    if (proto && proto->is_string() && proto->get_string() != "TCP") continue;
    const auto* n = p.get_object().if_contains("containerPort");
    if (n && n->is_int64() && std::find(out.begin(), out.end(), n->as_int64()) == out.end())
      out.push_back(static_cast<int>(n->as_int64()));
  }
}

// Rewrites the container's httpGet probes to /app-health/<container>/<probe> on
// the sidecar's probes listener, recording each original target (port names
// resolved) in `records`.
void rewrite_probes(json::object& c, const std::string& name, const JsonPath& path, json::object& records) {
  static const std::pair<const char*, const char*> kinds[] = {
      {"livenessProbe", "livez"}, {"readinessProbe", "readyz"}, {"startupProbe", "startupz"}};
  for (const auto& [field, suffix] : kinds) {
    auto* p = c.if_contains(field);
    if (!p || !p->is_object()) continue;
    auto* get = p->get_object().if_contains("httpGet");
    if (!get) continue;
    const JsonPath gpath = join(path, {field, "httpGet"});
    if (!get->is_object()) throw InjectError(gpath, path_text(gpath) + " must be a mapping");
    json::object original = get->get_object();
    if (original.contains("host")) continue;  // probes another host: not intercepted, left alone
    if (auto* port = original.if_contains("port"); port && port->is_string()) {
      // A named port: the sidecar needs the number.
      bool found = false;
      if (const auto* ports = c.if_contains("ports"); ports && ports->is_array())
        for (const auto& cp : ports->get_array())
          if (cp.is_object() && cp.get_object().if_contains("name") && *cp.get_object().if_contains("name") == *port &&
              cp.get_object().if_contains("containerPort")) {
            *port = *cp.get_object().if_contains("containerPort");
            found = true;
            break;
          }
      if (!found)
        throw InjectError(join(gpath, {"port"}), path_text(gpath) + ".port: no container port is named '" +
                                                     std::string(port->get_string()) + "'");
    }
    const std::string target = "/app-health/" + name + "/" + suffix;
    json::object record{{"httpGet", std::move(original)}};
    if (const auto* t = p->get_object().if_contains("timeoutSeconds")) record["timeoutSeconds"] = *t;
    records[target] = std::move(record);
    *get = json::object{{"path", target}, {"port", kProbePort}, {"scheme", "HTTP"}};
  }
}

bool named(const json::value& c, const char* name) {
  if (!c.is_object()) return false;
  const auto* n = c.get_object().if_contains("name");
  return n && n->is_string() && n->get_string() == name;
}

}  // namespace

Outcome inject_pod_spec(const json::value& metadata, json::object& spec, const json::value& owner_annotations,
                        const Options& options, const JsonPath& path) {
  JsonPath meta_path = path;
  meta_path.back() = std::string("metadata");
  if (const auto* v = annotation(metadata, owner_annotations, kAnnotationInject)) {
    const std::string s = annotation_string(v, kAnnotationInject, meta_path);
    if (s == "false") return Outcome::opted_out;
    if (s != "true")
      throw InjectError(
          join(meta_path, {"annotations", kAnnotationInject}),
          std::string("annotation ") + kAnnotationInject + " must be \"true\" or \"false\", not '" + s + "'");
  }
  // On the host's network the firewall would be the node's: such pods (the
  // dockerd gateway DaemonSet, CNI agents) are left alone.
  if (const auto* h = spec.if_contains("hostNetwork"); h && h->is_bool() && h->get_bool()) return Outcome::host_network;

  json::array* inits = array_in(spec, "initContainers", path);
  if (inits)
    for (const auto& c : *inits)
      if (named(c, kProxyName)) return Outcome::already_injected;
  json::array* containers = array_in(spec, "containers", path);
  if (!containers || containers->empty())
    throw InjectError(join(path, {"containers"}), path_text(join(path, {"containers"})) + ": a pod needs containers");

  std::vector<int> inbound;
  json::object probe_records;
  for (std::size_t i = 0; i < containers->size(); ++i) {
    const JsonPath cpath = join(path, {"containers", i});
    if (!(*containers)[i].is_object()) throw InjectError(cpath, path_text(cpath) + " must be a mapping");
    auto& c = (*containers)[i].get_object();
    const auto* name = c.if_contains("name");
    if (!name || !name->is_string()) throw InjectError(cpath, path_text(cpath) + " has no name");
    if (*name == kInitName || *name == kProxyName)
      throw InjectError(join(cpath, {"name"}),
                        "container name '" + std::string(name->get_string()) + "' is reserved for the sidecar");
    container_ports(c, inbound);
    rewrite_probes(c, std::string(name->get_string()), cpath, probe_records);
  }
  for (std::size_t i = 0; inits && i < inits->size(); ++i)
    if (named((*inits)[i], kInitName))
      throw InjectError(join(path, {"initContainers", i, "name"}),
                        std::string("init container name '") + kInitName + "' is reserved for the sidecar");
  // The annotation's ports, or `fallback` when it is absent.
  auto annotated_ports = [&](const char* name, std::vector<int> fallback) {
    const auto* v = annotation(metadata, owner_annotations, name);
    if (!v) return fallback;
    return port_list(annotation_string(v, name, meta_path), name, join(meta_path, {"annotations", name}));
  };
  inbound = annotated_ports(kAnnotationInboundPorts, std::move(inbound));
  const std::vector<int> exclude = annotated_ports(kAnnotationExcludeOutbound, {});

  json::array volumes;
  if (json::array* existing = array_in(spec, "volumes", path)) volumes = std::move(*existing);
  for (std::size_t i = 0; i < volumes.size(); ++i)
    for (const char* reserved : {kConfigVolume, kCertsVolume})
      if (named(volumes[i], reserved))
        throw InjectError(join(path, {"volumes", i, "name"}),
                          std::string("volume name '") + reserved + "' is reserved for the sidecar");
  volumes.push_back(json::object{{"name", kConfigVolume}, {"configMap", json::object{{"name", options.config_map}}}});
  volumes.push_back(json::object{{"name", kCertsVolume}, {"secret", json::object{{"secretName", options.secret}}}});

  // Ours first: the firewall before anything else runs, the proxy ready before
  // the pod's own init containers (which keep their order) and the app start.
  json::array new_inits{init_container(options, inbound, exclude), proxy_container(options, probe_records)};
  if (inits)
    for (auto& c : *inits) new_inits.push_back(std::move(c));
  // Inserting may move the spec's members: the pointers above are not used
  // after this.
  spec["initContainers"] = std::move(new_inits);
  spec["volumes"] = std::move(volumes);
  return Outcome::injected;
}

int inject_object(json::value& object, const Options& options, const JsonPath& path) {
  if (!object.is_object()) return 0;  // empty documents and scalars pass through
  auto& o = object.get_object();
  const auto* kind_value = o.if_contains("kind");
  if (!kind_value || !kind_value->is_string()) return 0;
  const std::string kind(kind_value->get_string());
  const json::value null_value;

  if (kind == "List" || (kind.size() > 4 && kind.ends_with("List") && o.contains("items"))) {
    int n = 0;
    if (json::array* items = array_in(o, "items", path))
      for (std::size_t i = 0; i < items->size(); ++i)
        n += inject_object((*items)[i], options, join(path, {"items", i}));
    return n;
  }
  // Walk to the object holding the pod's metadata and spec.
  json::object* holder = &o;
  JsonPath hpath = path;
  auto step = [&](const char* key) {
    holder = &object_in(*holder, key, hpath);
    hpath.push_back(std::string(key));
  };
  if (kind == "Pod") {
  } else if (kind == "Deployment" || kind == "StatefulSet" || kind == "DaemonSet" || kind == "ReplicaSet" ||
             kind == "Job") {
    step("spec");
    step("template");
  } else if (kind == "CronJob") {
    for (const char* key : {"spec", "jobTemplate", "spec", "template"}) step(key);
  } else {
    return 0;
  }
  const json::value* owner = &null_value;
  if (holder != &o)
    if (const auto* m = o.if_contains("metadata"); m && m->is_object())
      if (const auto* a = m->get_object().if_contains("annotations")) owner = a;
  const auto* meta = holder->if_contains("metadata");
  if (meta && !meta->is_null() && !meta->is_object())
    throw InjectError(join(hpath, {"metadata"}), path_text(join(hpath, {"metadata"})) + " must be a mapping");
  json::object& spec = object_in(*holder, "spec", hpath);
  return inject_pod_spec(meta ? *meta : null_value, spec, *owner, options, join(hpath, {"spec"})) == Outcome::injected;
}

std::string inject_manifests(const std::string& text, const std::string& filename, const Options& options) {
  auto located = [&](const YAML::Mark& m, const std::string& message) {
    return std::runtime_error(filename + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": " +
                              message);
  };
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(text);
  } catch (const YAML::Exception& e) {
    throw located(e.mark, e.msg);
  }
  std::string out;
  bool first = true;
  for (const auto& doc : docs) {
    if (doc.IsNull())
      continue;  // empty documents (a trailing `---`) are dropped, as kubectl
                 // does
    json::value v;
    try {
      v = yaml_to_json(doc);
    } catch (const YAML::Exception& e) {
      throw located(e.mark, e.msg);
    }
    try {
      inject_object(v, options);
    } catch (const InjectError& e) {
      throw located(mark_at(doc, e.path), e.what());
    }
    if (!first) out += "---\n";
    first = false;
    out += json_to_yaml(v);
  }
  return out;
}

}  // namespace portcullis::inject
