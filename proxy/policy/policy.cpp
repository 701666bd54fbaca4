// The compiled allowlist. Rules are indexed twice at compile time, by who (SPIFFE ID / user /
// group by exact value, SPIFFE patterns in a segment trie, "any verified peer", "anyone") and,
// inside each identity bucket, by path (exact paths in a hash map, `*` / `**` patterns in a
// segment trie, "any path"). A decision probes only the buckets of the peer and the path, and
// checks the remaining conditions (method, host, headers, Kubernetes, Docker) on those
// candidates only. The deciding rule is the first rule, in config order, that allows.
#include "proxy/policy/policy.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/glob.hpp"
#include "proxy/policy/kube.hpp"
#include "proxy/policy/normalize.hpp"

namespace portcullis::policy {
namespace {

constexpr std::string_view spiffe_scheme = "spiffe://";
constexpr std::uint32_t no_rule = std::numeric_limits<std::uint32_t>::max();

bool is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}
bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}
std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += items[i];
  }
  return out + "]";
}

// Paths and SPIFFE patterns index on the text after their fixed prefix.
std::string_view path_body(std::string_view path) { return path.substr(1); }

// Path index: which rules' `paths` admit a path.
struct PathIndex {
  StringMap<std::vector<std::uint32_t>> exact;
  SegmentTrie patterns;
  std::vector<std::uint32_t> any_path;  // rules without `paths`

  void add(std::uint32_t rule, const std::vector<std::string>& paths) {
    if (paths.empty()) {
      any_path.push_back(rule);
      return;
    }
    for (const std::string& p : paths) {
      if (is_wildcard_pattern(path_body(p))) {
        patterns.insert(path_body(p), rule);
      } else {
        auto& v = exact[p];
        if (v.empty() || v.back() != rule) v.push_back(rule);
      }
    }
  }

  // f(list) for each ascending list of rule indexes whose path condition holds.
  template <class F>
  void visit(std::string_view path, F&& f) const {
    if (!any_path.empty()) f(any_path);
    // Only origin-form paths can match a path rule (asterisk-form "*" matches only rules
    // without `paths`).
    if (path.empty() || path.front() != '/') return;
    if (auto it = exact.find(path); it != exact.end()) f(it->second);
    if (!patterns.empty()) patterns.visit(path_body(path), f);
  }
};

// Host condition: exact names, and "*.example.com" stored as the suffix ".example.com".
struct HostSet {
  std::vector<std::string> exact, suffixes;
  bool empty() const { return exact.empty() && suffixes.empty(); }
  bool matches(std::string_view host) const {
    if (empty()) return true;
    // "example.com." names the same host as "example.com".
    if (host.size() > 1 && host.back() == '.') host.remove_suffix(1);
    for (const auto& h : exact)
      if (h == host) return true;
    for (const auto& s : suffixes)
      if (host.size() > s.size() && host.ends_with(s)) return true;
    return false;
  }
};

struct CompiledRule {
  std::string name;
  FromSpec from;
  bool has_http = false, has_kubernetes = false, has_docker = false;
  HttpSpec http;  // methods / paths as written; headers lowercased
  HostSet hosts;
  KubeSpec kubernetes;
  DockerSpec docker;
};

}  // namespace

struct Policy::Impl {
  std::vector<CompiledRule> rules;

  // Identity buckets, each with its own path index.
  std::vector<PathIndex> buckets;
  StringMap<std::uint32_t> by_spiffe, by_user, by_group;
  SegmentTrie spiffe_patterns;              // -> bucket indexes
  std::uint32_t verified_bucket = no_rule;  // `from` omitted
  std::uint32_t anyone_bucket = no_rule;    // `any: true`
  // decide_peer: the first rule per bucket.
  std::vector<std::uint32_t> bucket_first_rule;

  std::uint32_t bucket(StringMap<std::uint32_t>& map, const std::string& key) {
    auto [it, inserted] = map.try_emplace(key, 0);
    if (inserted) it->second = new_bucket();
    return it->second;
  }
  std::uint32_t new_bucket() {
    buckets.emplace_back();
    bucket_first_rule.push_back(no_rule);
    return static_cast<std::uint32_t>(buckets.size() - 1);
  }
  void add_to_bucket(std::uint32_t b, std::uint32_t rule) {
    buckets[b].add(rule, rules[rule].http.paths);
    bucket_first_rule[b] = std::min(bucket_first_rule[b], rule);
  }

  // Calls f(bucket) for every identity bucket that admits the peer.
  template <class F>
  void visit_buckets(const certs::Identity* peer, F&& f) const {
    if (anyone_bucket != no_rule) f(anyone_bucket);
    if (!peer) return;
    if (verified_bucket != no_rule) f(verified_bucket);
    if (!peer->spiffe.empty()) {
      if (auto it = by_spiffe.find(peer->spiffe); it != by_spiffe.end()) f(it->second);
      if (!spiffe_patterns.empty() && peer->spiffe.starts_with(spiffe_scheme)) {
        spiffe_patterns.visit(std::string_view(peer->spiffe).substr(spiffe_scheme.size()),
                              [&](const std::vector<std::uint32_t>& bs) {
                                for (auto b : bs) f(b);
                              });
      }
    }
    if (!peer->user.empty())
      if (auto it = by_user.find(peer->user); it != by_user.end()) f(it->second);
    for (const auto& g : peer->groups)
      if (auto it = by_group.find(g); it != by_group.end()) f(it->second);
  }
};

namespace {

CompileError compile_error(std::size_t index, const std::string& rule, const std::string& what) {
  CompileError e("rule " + (rule.empty() ? "#" + std::to_string(index + 1) : "\"" + rule + "\"") + ": " + what);
  e.rule_index = index;
  return e;
}

void check_spiffe_pattern(std::size_t i, const std::string& rule, const std::string& p) {
  if (auto why = spiffe_pattern_problem(p); !why.empty()) throw compile_error(i, rule, why);
}

void check_path_pattern(std::size_t i, const std::string& rule, const std::string& p) {
  if (p.empty() || p.front() != '/') throw compile_error(i, rule, "path \"" + p + "\" must start with /");
  if (auto e = check_segment_pattern(path_body(p)); !e.empty())
    throw compile_error(i, rule, "path \"" + p + "\": " + e);
  // A rule path must be written the way normalize_target() spells requests, or it could never
  // match; say how to write it instead of silently never matching.
  const NormalizedTarget n = normalize_target("GET", p);
  if (!n.ok) throw compile_error(i, rule, "path \"" + p + "\" is not a valid path: " + n.error);
  if (n.path != p || !n.query.empty())
    throw compile_error(
        i, rule,
        "path \"" + p + "\" is not in normal form (requests are matched as \"" + n.path + "\"); write it that way");
}

// Reasons are built by appending into one string: decide() builds one per request.
void append_peer(std::string& out, const certs::Identity* peer) {
  if (!peer) {
    out += "a peer without a verified client certificate";
  } else if (!peer->spiffe.empty()) {
    out += peer->spiffe;
  } else if (!peer->user.empty()) {
    out += "user ";
    out += peer->user;
    if (!peer->groups.empty()) {
      out += " (groups ";
      out += join(peer->groups);
      out += ')';
    }
  } else {
    out += "a certificate without SPIFFE ID or CN (sha256 ";
    out += peer->fingerprint_sha256;
    out += ')';
  }
}
std::string describe_peer(const certs::Identity* peer) {
  std::string out;
  append_peer(out, peer);
  return out;
}

// The query is left out: it can be long, and the access log has it (url.query).
void append_request(std::string& out, const Request& r) {
  if (r.kube && r.kube->error.empty()) {
    out += describe(*r.kube);
    return;
  }
  if (r.docker) {
    out += "docker ";
    out += r.docker->action;
    out += " (";
    out += r.method;
    out += ' ';
    out += r.path;
    out += ')';
    return;
  }
  out += r.method;
  out += ' ';
  out += r.path;
}

std::string decision_reason(std::string_view lead, const Request& r, const certs::Identity* peer) {
  std::string out;
  out.reserve(lead.size() + r.method.size() + r.path.size() + 96);
  out += lead;
  append_request(out, r);
  out += " for ";
  append_peer(out, peer);
  return out;
}

bool from_matches(const FromSpec& from, const certs::Identity* peer) {
  if (from.any) return true;
  if (!peer) return false;
  if (from.spiffe.empty() && from.users.empty() && from.groups.empty()) return true;
  if (!peer->spiffe.empty() && peer->spiffe.starts_with(spiffe_scheme)) {
    const std::string_view id = std::string_view(peer->spiffe).substr(spiffe_scheme.size());
    for (const auto& p : from.spiffe)
      if (segment_pattern_matches(std::string_view(p).substr(spiffe_scheme.size()), id)) return true;
  }
  if (!peer->user.empty() && std::find(from.users.begin(), from.users.end(), peer->user) != from.users.end())
    return true;
  for (const auto& g : peer->groups)
    if (std::find(from.groups.begin(), from.groups.end(), g) != from.groups.end()) return true;
  return false;
}

bool path_matches(const std::vector<std::string>& paths, std::string_view path) {
  if (paths.empty()) return true;
  if (path.empty() || path.front() != '/') return false;
  for (const auto& p : paths)
    if (segment_pattern_matches(path_body(p), path_body(path))) return true;
  return false;
}

// Every instance of a listed header must carry a listed value: if a client sends the header
// twice, an upstream may read either copy, so one good copy is not enough.
bool header_matches(const std::string& name, const std::vector<std::string>& values, std::span<const Header> headers,
                    std::string* why) {
  bool seen = false;
  for (const auto& h : headers) {
    if (h.name != name) continue;
    seen = true;
    if (std::find(values.begin(), values.end(), h.value) == values.end()) {
      if (why) *why = "header " + name + " value \"" + h.value + "\" not in " + join(values);
      return false;
    }
  }
  if (!seen && why) *why = "header " + name + " missing (wanted one of " + join(values) + ")";
  return seen;
}

// Requests that the Kubernetes / Docker resolvers refused outright: no rule can allow them,
// not even one without `kubernetes:` / `docker:` conditions. Empty when there is no such refusal.
std::string request_refusal(const Request& req) {
  if (req.kube && !req.kube->error.empty()) return "unresolvable Kubernetes request: " + req.kube->error;
  if (req.docker)
    if (auto refusal = docker_refusal(*req.docker)) return std::move(*refusal);
  return {};
}

bool kube_matches(const CompiledRule& r, const Request& req, std::vector<std::string>* failed) {
  if (!r.has_kubernetes) return true;
  if (!req.kube) {
    if (failed) failed->push_back("the rule has kubernetes conditions and this is not a kubernetes listener");
    return false;
  }
  return match_kube(r.kubernetes, *req.kube, failed);
}

bool docker_matches(const CompiledRule& r, const Request& req, std::vector<std::string>* failed) {
  if (!r.has_docker) return true;
  if (req.docker) return match_docker(r.docker, *req.docker, failed);
  if (failed) failed->push_back("the rule has docker conditions and this is not a docker listener");
  return false;
}

// The conditions the indexes do not cover.
bool rest_matches(const CompiledRule& r, const Request& req) {
  if (!kube_matches(r, req, nullptr) || !docker_matches(r, req, nullptr)) return false;
  if (!r.has_http) return true;
  if (!r.http.methods.empty() &&
      std::find(r.http.methods.begin(), r.http.methods.end(), req.method) == r.http.methods.end())
    return false;
  if (!r.hosts.matches(req.host)) return false;
  for (const auto& [name, values] : r.http.headers)
    if (!header_matches(name, values, req.headers, nullptr)) return false;
  return true;
}

// Every failed condition of a rule, in words (explain()).
std::vector<std::string> failed_conditions(const CompiledRule& r, const Request& req) {
  std::vector<std::string> failed;
  if (!from_matches(r.from, req.peer)) {
    if (!req.peer) {
      failed.push_back("no verified client certificate (the rule needs one)");
    } else {
      std::vector<std::string> wanted;
      for (const auto& s : r.from.spiffe) wanted.push_back("spiffe " + s);
      for (const auto& u : r.from.users) wanted.push_back("user " + u);
      for (const auto& g : r.from.groups) wanted.push_back("group " + g);
      failed.push_back("peer " + describe_peer(req.peer) + " not in from " + join(wanted));
    }
  }
  if (r.has_http) {
    if (!r.http.methods.empty() &&
        std::find(r.http.methods.begin(), r.http.methods.end(), req.method) == r.http.methods.end())
      failed.push_back("method " + std::string(req.method) + " not in " + join(r.http.methods));
    if (!path_matches(r.http.paths, req.path))
      failed.push_back("path " + std::string(req.path) + " matches none of " + join(r.http.paths));
    if (!r.hosts.matches(req.host)) failed.push_back("host " + std::string(req.host) + " not in " + join(r.http.hosts));
    for (const auto& [name, values] : r.http.headers) {
      std::string why;
      if (!header_matches(name, values, req.headers, &why)) failed.push_back(why);
    }
  }
  kube_matches(r, req, &failed);
  docker_matches(r, req, &failed);
  return failed;
}

}  // namespace

Policy::Policy() : impl_(std::make_unique<Impl>()) {}
Policy::~Policy() = default;

std::shared_ptr<const Policy> Policy::compile(const PolicySpec& spec) {
  std::shared_ptr<Policy> policy(new Policy());
  policy->name_ = spec.name;
  policy->mode_ = spec.mode;
  Impl& impl = *policy->impl_;
  if (spec.rules.size() >= no_rule) throw CompileError("policy \"" + spec.name + "\": too many rules");

  StringMap<std::size_t> names;
  for (std::size_t i = 0; i < spec.rules.size(); ++i) {
    const RuleSpec& in = spec.rules[i];
    CompiledRule r;
    r.name = in.name.empty() ? "#" + std::to_string(i + 1) : in.name;
    if (!in.name.empty() && !names.try_emplace(in.name, i).second)
      throw compile_error(i, in.name, "duplicate rule name");
    r.from = in.from;
    r.has_http = in.has_http;
    r.has_kubernetes = in.has_kubernetes;
    r.has_docker = in.has_docker;
    // The config loader validates these too; a Policy compiled from any other source must not
    // hold a rule the matchers cannot read.
    if (in.has_kubernetes) {
      try {
        validate_kube_spec(in.kubernetes);
      } catch (const std::invalid_argument& e) {
        throw compile_error(i, in.name, std::string("kubernetes: ") + e.what());
      }
      r.kubernetes = in.kubernetes;
    }
    if (in.has_docker) {
      try {
        validate_docker_spec(in.docker);
      } catch (const std::invalid_argument& e) {
        throw compile_error(i, in.name, std::string("docker: ") + e.what());
      }
      r.docker = in.docker;
    }

    for (const auto& p : in.from.spiffe) check_spiffe_pattern(i, in.name, p);
    for (const auto& u : in.from.users)
      if (u.empty()) throw compile_error(i, in.name, "empty user in from");
    for (const auto& g : in.from.groups)
      if (g.empty()) throw compile_error(i, in.name, "empty group in from");

    if (in.has_http) {
      for (const auto& m : in.http.methods)
        if (!is_token(m)) throw compile_error(i, in.name, "method \"" + m + "\" is not an HTTP token");
      for (const auto& p : in.http.paths) check_path_pattern(i, in.name, p);
      for (const auto& h : in.http.hosts) {
        std::string host = lowercase(h);
        if (host.size() > 1 && host.back() == '.') host.pop_back();
        const bool wildcard = host.starts_with("*.");
        const std::string_view name = wildcard ? std::string_view(host).substr(2) : std::string_view(host);
        const bool ok = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == ':' ||
                 c == '[' || c == ']';
        });
        if (!ok) throw compile_error(i, in.name, "host \"" + h + "\" is not a host name or \"*.\" + a host name");
        if (wildcard)
          r.hosts.suffixes.push_back(host.substr(1));
        else
          r.hosts.exact.push_back(host);
      }
      for (const auto& [name, values] : in.http.headers) {
        if (!is_token(name)) throw compile_error(i, in.name, "header name \"" + name + "\" is not an HTTP token");
        if (values.empty()) throw compile_error(i, in.name, "header " + name + " lists no values");
        r.http.headers.emplace_back(lowercase(name), values);
      }
      r.http.methods = in.http.methods;
      r.http.paths = in.http.paths;
      r.http.hosts = in.http.hosts;
    }
    impl.rules.push_back(std::move(r));
  }

  // Index, in rule order so that every list stays ascending.
  for (std::uint32_t i = 0; i < impl.rules.size(); ++i) {
    const FromSpec& from = impl.rules[i].from;
    if (from.any) {
      if (impl.anyone_bucket == no_rule) impl.anyone_bucket = impl.new_bucket();
      impl.add_to_bucket(impl.anyone_bucket, i);
      continue;
    }
    if (from.spiffe.empty() && from.users.empty() && from.groups.empty()) {
      if (impl.verified_bucket == no_rule) impl.verified_bucket = impl.new_bucket();
      impl.add_to_bucket(impl.verified_bucket, i);
      continue;
    }
    // A rule listed in several buckets can be found twice; the decision is the same.
    for (const auto& p : from.spiffe) {
      const std::string_view body = std::string_view(p).substr(spiffe_scheme.size());
      if (is_wildcard_pattern(body)) {
        // One bucket per distinct pattern, shared by the rules that list it.
        const std::uint32_t b = impl.bucket(impl.by_spiffe, "pattern:" + p);
        impl.spiffe_patterns.insert(body, b);
        impl.add_to_bucket(b, i);
      } else {
        impl.add_to_bucket(impl.bucket(impl.by_spiffe, p), i);
      }
    }
    for (const auto& u : from.users) impl.add_to_bucket(impl.bucket(impl.by_user, u), i);
    for (const auto& g : from.groups) impl.add_to_bucket(impl.bucket(impl.by_group, g), i);
  }
  return policy;
}

Decision Policy::decide(const Request& request) const {
  const Impl& impl = *impl_;
  if (std::string refusal = request_refusal(request); !refusal.empty()) {
    Decision d;
    d.outcome = mode_ == Mode::audit ? Decision::Outcome::audit_deny : Decision::Outcome::deny;
    d.reason = std::move(refusal);
    return d;
  }
  std::uint32_t best = no_rule;
  impl.visit_buckets(request.peer, [&](std::uint32_t b) {
    impl.buckets[b].visit(request.path, [&](const std::vector<std::uint32_t>& rules) {
      for (const std::uint32_t r : rules) {
        if (r >= best) break;  // ascending: nothing earlier left in this list
        if (rest_matches(impl.rules[r], request)) {
          best = r;
          break;
        }
      }
    });
  });

  Decision d;
  if (best != no_rule) {
    d.outcome = Decision::Outcome::allow;
    d.rule = impl.rules[best].name;
    if (request.explain_allow) d.reason = decision_reason("rule " + d.rule + " allows ", request, request.peer);
    return d;
  }
  d.outcome = mode_ == Mode::audit ? Decision::Outcome::audit_deny : Decision::Outcome::deny;
  d.reason = decision_reason("no rule allows ", request, request.peer);
  return d;
}

Decision Policy::decide_peer(const certs::Identity* peer) const {
  const Impl& impl = *impl_;
  std::uint32_t best = no_rule;
  impl.visit_buckets(peer, [&](std::uint32_t b) { best = std::min(best, impl.bucket_first_rule[b]); });
  Decision d;
  if (best != no_rule) {
    d.outcome = Decision::Outcome::allow;
    d.rule = impl.rules[best].name;
    d.reason = "rule " + d.rule + " allows connections from " + describe_peer(peer);
    return d;
  }
  d.outcome = mode_ == Mode::audit ? Decision::Outcome::audit_deny : Decision::Outcome::deny;
  d.reason = "no rule allows connections from " + describe_peer(peer);
  return d;
}

Explanation Policy::explain(const Request& request) const {
  Explanation e;
  e.decision = decide(request);
  if (e.decision.outcome == Decision::Outcome::allow) return e;
  // Not the hot path: evaluate every rule in full and keep those that failed the fewest
  // conditions (ties in config order).
  std::vector<RuleMiss> misses;
  for (const auto& r : impl_->rules) misses.push_back({r.name, failed_conditions(r, request)});
  std::stable_sort(misses.begin(), misses.end(),
                   [](const RuleMiss& a, const RuleMiss& b) { return a.failed.size() < b.failed.size(); });
  constexpr std::size_t shown = 3;
  if (misses.size() > shown) misses.resize(shown);
  e.closest = std::move(misses);
  return e;
}

}  // namespace portcullis::policy
