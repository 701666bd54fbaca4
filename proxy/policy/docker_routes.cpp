// Docker endpoint -> action. The table follows the routes dockerd registers (moby
// api/server/router/*), in the order it registers them: gorilla/mux takes the first route that
// matches, and `{name:.*}` variables may span several segments (image names have slashes), so a
// path is judged exactly as dockerd will route it.
#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <initializer_list>
#include <limits>
#include <string>
#include <vector>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/docker_internal.hpp"

namespace portcullis::policy {
namespace {

// `{id}` matches one segment, `{name}` one or more (greedy, as mux's `.*` anchored at the end).
struct Route {
  std::string_view method;  // GET also covers HEAD
  std::string_view path;
  std::string_view action;
  DockerBody body = DockerBody::none;
};

constexpr std::array kRoutes = std::to_array<Route>({
    // checkpoint router (registered first, so that its DELETE is not masked by the container one)
    {"GET", "/containers/{name}/checkpoints", "read"},
    {"POST", "/containers/{name}/checkpoints", "container.checkpoint"},
    {"DELETE", "/containers/{id}/checkpoints/{id}", "container.checkpoint"},
    // container router
    {"HEAD", "/containers/{name}/archive", "container.archive"},
    {"GET", "/containers/json", "read"},
    {"GET", "/containers/{name}/export", "container.export"},
    {"GET", "/containers/{name}/changes", "read"},
    {"GET", "/containers/{name}/json", "read"},
    {"GET", "/containers/{name}/top", "read"},
    {"GET", "/containers/{name}/logs", "container.logs"},
    {"GET", "/containers/{name}/stats", "read"},
    {"GET", "/containers/{name}/attach/ws", "container.attach"},
    {"GET", "/exec/{name}/json", "read"},
    {"GET", "/containers/{name}/archive", "container.archive"},
    {"POST", "/containers/create", "container.create", DockerBody::container_create},
    {"POST", "/containers/{name}/kill", "container.kill"},
    {"POST", "/containers/{name}/pause", "container.pause"},
    {"POST", "/containers/{name}/unpause", "container.unpause"},
    {"POST", "/containers/{name}/restart", "container.restart"},
    {"POST", "/containers/{name}/start", "container.start"},
    {"POST", "/containers/{name}/stop", "container.stop"},
    {"POST", "/containers/{name}/wait", "container.wait"},
    {"POST", "/containers/{name}/resize", "container.resize"},
    {"POST", "/containers/{name}/attach", "container.attach"},
    {"POST", "/containers/{name}/exec", "container.exec", DockerBody::exec_create},
    {"POST", "/exec/{name}/start", "container.exec"},
    {"POST", "/exec/{name}/resize", "container.exec"},
    {"POST", "/containers/{name}/rename", "container.rename"},
    {"POST", "/containers/{name}/update", "container.update", DockerBody::container_update},
    {"POST", "/containers/prune", "container.prune"},
    {"POST", "/commit", "container.commit"},
    {"PUT", "/containers/{name}/archive", "container.archive"},
    {"DELETE", "/containers/{name}", "container.remove"},
    // image router
    {"GET", "/images/json", "read"},
    {"GET", "/images/search", "read"},
    {"GET", "/images/get", "image.save"},
    {"GET", "/images/{name}/get", "image.save"},
    {"GET", "/images/{name}/history", "read"},
    {"GET", "/images/{name}/json", "read"},
    {"POST", "/images/load", "image.load"},
    {"POST", "/images/create", "image.pull"},  // image.import without fromImage (see resolve_docker)
    {"POST", "/images/{name}/push", "image.push"},
    {"POST", "/images/{name}/tag", "image.tag"},
    {"POST", "/images/prune", "image.prune"},
    {"DELETE", "/images/{name}", "image.remove"},
    // system router
    {"GET", "/_ping", "read"},
    {"GET", "/events", "read"},
    {"GET", "/info", "read"},
    {"GET", "/version", "read"},
    {"GET", "/system/df", "read"},
    {"POST", "/auth", "system.auth"},
    // volume router
    {"GET", "/volumes", "read"},
    {"GET", "/volumes/{name}", "read"},
    {"POST", "/volumes/create", "volume.create", DockerBody::volume_create},
    {"POST", "/volumes/prune", "volume.prune"},
    {"PUT", "/volumes/{name}", "volume.update"},
    {"DELETE", "/volumes/{name}", "volume.remove"},
    // build, session and grpc routers (BuildKit talks over /session and /grpc)
    {"POST", "/build", "image.build"},
    {"POST", "/build/prune", "image.prune"},
    {"POST", "/build/cancel", "image.build"},
    {"POST", "/session", "image.build"},
    {"POST", "/grpc", "image.build"},
    // swarm router
    {"POST", "/swarm/init", "swarm.init", DockerBody::swarm_init},
    {"POST", "/swarm/join", "swarm.join"},
    {"POST", "/swarm/leave", "swarm.leave"},
    // Not a read: the answer holds the worker and manager join tokens (docker swarm join-token),
    // and a node joined with them runs the swarm's services here without passing through us.
    {"GET", "/swarm", "swarm.inspect"},
    {"GET", "/swarm/unlockkey", "swarm.unlockkey"},  // a secret, not a read
    {"POST", "/swarm/update", "swarm.update", DockerBody::swarm_update},
    {"POST", "/swarm/unlock", "swarm.unlock"},
    {"GET", "/services", "read"},
    {"GET", "/services/{id}", "read"},
    {"POST", "/services/create", "service.create", DockerBody::service_create},
    {"POST", "/services/{id}/update", "service.update", DockerBody::service_update},
    {"DELETE", "/services/{id}", "service.remove"},
    {"GET", "/services/{id}/logs", "service.logs"},
    {"GET", "/nodes", "read"},
    {"GET", "/nodes/{id}", "read"},
    {"DELETE", "/nodes/{id}", "node.remove"},
    {"POST", "/nodes/{id}/update", "node.update"},
    {"GET", "/tasks", "read"},
    {"GET", "/tasks/{id}", "read"},
    {"GET", "/tasks/{id}/logs", "service.logs"},
    {"GET", "/secrets", "read"},
    {"POST", "/secrets/create", "secret.create"},
    {"DELETE", "/secrets/{id}", "secret.remove"},
    {"GET", "/secrets/{id}", "read"},  // metadata only: Docker never returns secret data
    {"POST", "/secrets/{id}/update", "secret.update"},
    {"GET", "/configs", "read"},
    {"POST", "/configs/create", "config.create"},
    {"DELETE", "/configs/{id}", "config.remove"},
    {"GET", "/configs/{id}", "read"},
    {"POST", "/configs/{id}/update", "config.update"},
    // plugin router
    {"GET", "/plugins", "read"},
    {"GET", "/plugins/{name}/json", "read"},
    {"GET", "/plugins/privileges", "read"},
    {"DELETE", "/plugins/{name}", "plugin.remove"},
    {"POST", "/plugins/{name}/enable", "plugin.enable"},
    {"POST", "/plugins/{name}/disable", "plugin.disable"},
    {"POST", "/plugins/pull", "plugin.install"},
    {"POST", "/plugins/{name}/push", "plugin.push"},
    {"POST", "/plugins/{name}/upgrade", "plugin.upgrade"},
    {"POST", "/plugins/{name}/set", "plugin.configure"},
    {"POST", "/plugins/create", "plugin.create"},
    // distribution router
    // Not a read: dockerd asks the registry the name gives, as a pull does (any port of
    // 127.0.0.1 over plain HTTP, as an insecure registry), and answers with what it got back.
    {"GET", "/distribution/{name}/json", "image.pull"},
    // network router
    {"GET", "/networks", "read"},
    {"GET", "/networks/", "read"},
    {"GET", "/networks/{name}", "read"},
    {"POST", "/networks/create", "network.create", DockerBody::network_create},
    {"POST", "/networks/{name}/connect", "network.connect"},
    {"POST", "/networks/{name}/disconnect", "network.disconnect"},
    {"POST", "/networks/prune", "network.prune"},
    {"DELETE", "/networks/{name}", "network.remove"},
});

// The actions a route can produce, plus image.import (POST /images/create without fromImage).
std::vector<std::string> collect_actions() {
  std::vector<std::string> out{"image.import"};
  for (const Route& r : kRoutes) out.emplace_back(r.action);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<std::string_view> split_segments(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path.front() != '/') return out;
  path.remove_prefix(1);
  while (true) {
    auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Matches `path` against a route template; on success `object` is the variable part.
bool match_template(std::string_view tmpl, const std::vector<std::string_view>& segs, std::string& object) {
  auto t = split_segments(tmpl);
  auto multi = std::find(t.begin(), t.end(), "{name}");
  std::size_t k = static_cast<std::size_t>(multi - t.begin());
  if (multi == t.end() ? segs.size() != t.size() : segs.size() < t.size()) return false;
  std::size_t extra = segs.size() - t.size();  // segments absorbed by {name}
  std::string first_id;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (i == k) continue;
    std::string_view s = segs[i < k ? i : i + extra];
    if (t[i] == "{id}") {
      if (s.empty()) return false;
      if (first_id.empty()) first_id = std::string(s);
    } else if (t[i] != s) {
      return false;
    }
  }
  if (multi != t.end()) {
    std::string joined;
    for (std::size_t i = k; i <= k + extra; ++i) {
      if (i > k) joined += '/';
      joined += segs[i];
    }
    if (joined.empty()) return false;
    object = std::move(joined);
  } else {
    object = std::move(first_id);
  }
  return true;
}

// As moby's versions.compare: dot-separated numbers, compared one by one; a part that is not a
// number counts as 0, a missing one as 0, and one too large for an int as the largest.
bool api_version_below(std::string_view version, std::initializer_list<long> floor) {
  std::vector<long> parts;
  while (true) {
    auto dot = version.find('.');
    std::string_view p = version.substr(0, dot);
    long v = 0;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (ec == std::errc::result_out_of_range) v = std::numeric_limits<long>::max();
    else if (ec != std::errc() || end != p.data() + p.size()) v = 0;
    parts.push_back(v);
    if (dot == std::string_view::npos) break;
    version.remove_prefix(dot + 1);
  }
  std::size_t i = 0;
  for (long f : floor) {
    long v = i < parts.size() ? parts[i] : 0;
    if (v != f) return v < f;
    ++i;
  }
  return false;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

namespace docker_detail {

std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = hex_value(s[i + 1]);
      int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::optional<QueryValues> parse_query(std::string_view raw) {
  // As Go's url.ParseQuery, which dockerd uses: pairs split on '&', a ';' is an error, the
  // first value of a key is the one read (Form.Get).
  QueryValues out;
  while (!raw.empty()) {
    auto amp = raw.find('&');
    std::string_view pair = raw.substr(0, amp);
    raw = amp == std::string_view::npos ? std::string_view{} : raw.substr(amp + 1);
    if (pair.empty()) continue;
    if (pair.find(';') != std::string_view::npos) return std::nullopt;
    auto eq = pair.find('=');
    auto key = percent_decode(pair.substr(0, eq), true);
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), true);
    if (!key || !value) return std::nullopt;
    out.emplace_back(std::move(*key), std::move(*value));
  }
  return out;
}

const std::string* query_get(const QueryValues& q, std::string_view key) {
  for (const auto& [k, v] : q)
    if (k == key) return &v;
  return nullptr;
}

}  // namespace docker_detail

const std::vector<std::string>& docker_actions() {
  static const std::vector<std::string> actions = collect_actions();
  return actions;
}

namespace {

// Facts that live in the query rather than a body.
void resolve_query_facts(DockerAttributes& a, std::string_view raw_query) {
  using namespace docker_detail;
  bool images_create = a.endpoint == "/images/create";
  bool start = a.endpoint == "/containers/{name}/start";
  bool service_update = a.endpoint == "/services/{id}/update";
  if (a.endpoint == "/distribution/{name}/json") {
    a.images.push_back(docker_detail::run_image("distribution name", a.object));
    return;
  }
  if (!images_create && !start && !service_update && a.endpoint != "/build") return;
  auto query = parse_query(raw_query);
  if (!query) {
    a.refusal = "the query string cannot be parsed the way Docker parses it";
    return;
  }
  if (service_update) {
    // rollback=previous has dockerd ignore the body and apply the service's PreviousSpec, which
    // another rule may have allowed (host network, capabilities) and this request does not show.
    if (const std::string* rollback = query_get(*query, "rollback"); rollback && !rollback->empty() && *rollback != "none")
      a.never_allowed.push_back("a service rollback (rollback=" + *rollback +
                                "), which applies the service's previous spec instead of the inspected body,");
    return;
  }
  if (start) {
    // A start from a checkpoint (experimental dockerd) reads CRIU images from a host directory.
    if (query_get(*query, "checkpoint") || query_get(*query, "checkpoint-dir")) a.action = "container.checkpoint";
    return;
  }
  if (images_create) {
    const std::string* from = query_get(*query, "fromImage");
    if (from == nullptr || from->empty()) {
      a.action = "image.import";  // dockerd imports when fromImage is absent
      return;
    }
    const std::string* tag = query_get(*query, "tag");
    a.images.push_back(pull_image(*from, tag ? std::string_view(*tag) : std::string_view{}));
    return;
  }
  // POST /build: `docker build --network host` and --cgroup-parent arrive in the query.
  if (const std::string* mode = query_get(*query, "networkmode"); mode && is_shared_namespace(*mode))
    a.network_mode = *mode;
  if (const std::string* parent = query_get(*query, "cgroupparent"); parent && !parent->empty())
    a.cgroup_parent = *parent;
}

}  // namespace

DockerAttributes resolve_docker(std::string_view method, std::string_view raw_path, std::string_view raw_query) {
  DockerAttributes a;
  a.endpoint = std::string(raw_path);
  // dockerd routes on the decoded path (Go's URL.Path); what does not decode is refused there.
  auto decoded_path = docker_detail::percent_decode(raw_path, false);
  if (!decoded_path) return a;
  std::string_view path = *decoded_path;
  // dockerd's mux accepts /v{version:[0-9.]+}/... as well as the bare path.
  if (path.size() > 2 && path.substr(0, 2) == "/v") {
    auto slash = path.find('/', 2);
    std::string_view version = path.substr(2, slash == std::string_view::npos ? path.size() - 2 : slash - 2);
    bool numeric = !version.empty() && std::all_of(version.begin(), version.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) || c == '.';
    });
    if (numeric && slash != std::string_view::npos) {
      a.api_version = std::string(version);
      path.remove_prefix(slash);
      a.endpoint = std::string(path);
    }
  }
  if (!a.api_version.empty() && api_version_below(a.api_version, {1, 24}))
    a.refusal = "Docker API version " + a.api_version +
                " is refused: below 1.24 dockerd gives requests meanings Portcullis does not judge (a start body "
                "that replaces the container's host settings, top-level HostConfig fields); every docker CLI "
                "since 1.12 speaks 1.24 or later";
  std::string_view lookup = method == "HEAD" ? std::string_view("GET") : method;
  auto segs = split_segments(path);
  for (int pass = 0; pass < 2; ++pass) {
    // HEAD has one route of its own (archive); otherwise it is judged as the GET it mirrors.
    std::string_view m = pass == 0 ? method : lookup;
    if (pass == 1 && m == method) break;
    for (const Route& r : kRoutes) {
      if (r.method != m) continue;
      std::string object;
      if (!match_template(r.path, segs, object)) continue;
      a.action = std::string(r.action);
      a.endpoint = std::string(r.path);
      a.body = r.body;
      a.object = std::move(object);
      resolve_query_facts(a, raw_query);
      return a;
    }
  }
  return a;
}

std::string docker_actions_markdown() {
  std::string md =
      "# Docker actions\n\n"
      "<!-- Generated by docker_actions_markdown() (proxy/policy/docker_routes.cpp); the unit test\n"
      "     docker_tests checks that this file is current. -->\n\n"
      "On a `protocol: docker` listener every request maps to one action, after any `/v1.NN` prefix\n"
      "is stripped. A `docker:` rule grants actions by name, by family (`container.*`) or all of them\n"
      "(`*`, every action listed here). An endpoint not in this table is `unknown`, which no rule\n"
      "grants, not even `*`. `HEAD` is judged as the `GET` of the same path. Paths are judged\n"
      "percent-decoded, and `{id}` is one path segment while `{name}` may span several (image names\n"
      "contain `/`), as in dockerd's own router, which takes the first route that matches.\n\n"
      "| method | endpoint | action |\n|---|---|---|\n";
  for (const Route& r : kRoutes) {
    std::string action = "`" + std::string(r.action) + "`";
    if (r.path == "/images/create") action = "`image.pull` with `fromImage`, else `image.import`";
    if (r.body != DockerBody::none) action += " (body inspected)";
    md += "| " + std::string(r.method) + " | `" + std::string(r.path) + "` | " + action + " |\n";
  }
  md += "\n## Actions\n\n";
  for (const std::string& action : docker_actions()) md += "- `" + action + "`\n";
  md += "\n## Dangerous features (`allow`)\n\n"
        "Denied unless the rule names them in `allow`:\n\n";
  for (const std::string& name : docker_allow_names()) md += "- `" + name + "`\n";
  md += docker_detail::kDocsNotes;
  return md;
}

}  // namespace portcullis::policy
