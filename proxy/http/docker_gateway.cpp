#include "proxy/http/docker_gateway.hpp"

#include <grp.h>
#include <sys/stat.h>

#include <algorithm>
#include <boost/beast/http/error.hpp>
#include <chrono>
#include <cstdio>
#include <set>

namespace portcullis::http {
namespace {

namespace asio = boost::asio;
using ms = std::chrono::milliseconds;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

std::string request_words(const policy::DockerAttributes& a, std::string_view method) {
  return std::string(method) + " " + a.endpoint;
}

// Actions that can put any content under any name, so an `images` restriction no longer says
// what will run.
constexpr std::string_view renaming_actions[] = {"image.tag", "image.build", "image.load", "image.import",
                                                 "container.commit"};

}  // namespace

net::awaitable<std::string> DockerGate::prepare(Parser<true>& req, const std::string& path, const std::string& query,
                                                const config::Limits& limits, const config::Upstream& upstream,
                                                DownstreamBody src) {
  attrs = policy::resolve_docker(req.method, path, query);

  // Docker's Go server reads one Content-Type; two could mean two different readings.
  const std::string* content_type = nullptr;
  for (const auto& f : req.fields) {
    if (f.name != "content-type") continue;
    if (content_type) co_return std::string("the request has more than one Content-Type header");
    content_type = &f.value;
  }
  std::string ct = content_type ? *content_type : std::string();
  if (auto why = policy::docker_content_type_refusal(ct)) co_return std::move(*why);
  if (attrs.body == policy::DockerBody::none) co_return std::string();

  // From here on the body decides: it must be inspected whole, as dockerd will read it.
  for (const auto& f : req.fields)
    if (f.name == "content-encoding" && lower(trim(f.value)) != "identity") {
      std::string why = "the body of " + request_words(attrs, req.method) + " has Content-Encoding " + f.value +
                        "; Portcullis inspects unencoded JSON only";
      co_return why;
    }
  if (auto why = co_await read_body(req, limits, src); !why.empty()) co_return why;
  buffered = true;

  policy::DockerHostPaths host;
  if (upstream.kind == config::Upstream::Kind::unix_socket) host.docker_sockets.push_back(upstream.path);
  // A refusal here lands in attrs.refusal: decide() denies it with the rest of the policy.
  policy::inspect_docker_body(ct, body, attrs, host);
  co_return std::string();
}

net::awaitable<std::string> DockerGate::read_body(Parser<true>& req, const config::Limits& limits,
                                                  DownstreamBody src) {
  const std::uint64_t limit = limits.inspect_body_bytes;
  auto too_large = [&] {
    return "the body of " + request_words(attrs, req.method) + " is larger than inspect_body_bytes (" +
           std::to_string(limit) + "): Portcullis does not forward what it has not inspected";
  };
  // Over the limit, the rest of a body of moderate size is read and dropped before the 403, so
  // the client (still sending) sees the answer instead of a reset connection.
  const std::uint64_t drain_limit = std::max<std::uint64_t>(4 * limit, 4u << 20);
  bool over = false;
  std::uint64_t drained = 0;
  if (auto length = req.content_length(); length && *length > limit) {
    if (*length > drain_limit) co_return too_large();
    over = true;
  } else if (length) {
    body.reserve(static_cast<std::size_t>(*length));
  }

  if (!req.is_done()) {
    if (const std::string* expect = req.field("expect"); expect && lower(trim(*expect)) == "100-continue") {
      static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
      src.deadline.arm(ms(limits.idle_timeout_ms), "client write timeout");
      if (auto ec = co_await src.down.write_all(asio::buffer(cont)))
        co_return std::string("the client went away before sending the body");
    }
  }
  req.eager(true);
  while (!req.is_done()) {
    if (!src.in.empty()) {
      net::error_code pec;
      req.pieces().clear();
      std::size_t n = req.put(asio::buffer(src.in.data().data(), src.in.size()), pec);
      if (pec && pec != boost::beast::http::error::need_more) {
        std::string why = pec == boost::beast::http::error::body_limit
                              ? std::string("the request body is larger than max_body_bytes")
                              : "malformed request body: " + pec.message();
        co_return why;
      }
      for (auto piece : req.pieces()) {
        if (!over && body.size() + piece.size() > limit) {
          over = true;
          drained = body.size();
          body.clear();
        }
        if (!over) body.append(piece);
        else if ((drained += piece.size()) > drain_limit) co_return too_large();
      }
      src.in.consume(n);
      if (!pec && n > 0) continue;
    }
    if (src.in.space_size() == 0) co_return std::string("malformed request body: chunk header too large");
    src.deadline.arm(ms(limits.idle_timeout_ms), "request body timeout");
    auto [ec, n] = co_await src.down.read_some(asio::buffer(src.in.space(), src.in.space_size()));
    if (ec || n == 0) co_return std::string("the client closed the connection before the whole body arrived");
    src.in.commit(n);
    src.bytes_in += n;
  }
  if (over) co_return too_large();
  co_return std::string();
}

std::string docker_denial_reason(const policy::Policy& policy, const policy::Request& request,
                                 const policy::Decision& decision) {
  if (!decision.rule.empty() || (request.docker && policy::docker_refusal(*request.docker))) return decision.reason;
  auto explanation = policy.explain(request);
  for (const auto& miss : explanation.closest) {
    bool peer_matches = std::none_of(miss.failed.begin(), miss.failed.end(), [](const std::string& f) {
      return f.starts_with("peer ") || f.starts_with("no verified client certificate");
    });
    if (!peer_matches || miss.failed.empty()) continue;
    std::string out = decision.reason + ": rule " + miss.rule + " would, but ";
    for (std::size_t i = 0; i < miss.failed.size(); ++i) out += (i ? "; " : "") + miss.failed[i];
    return out;
  }
  return decision.reason;
}

std::vector<config::Diagnostic> docker_config_warnings(const config::Config& cfg) {
  std::vector<config::Diagnostic> out;
  auto warn = [&](const config::Location& loc, std::string msg) {
    out.push_back(config::Diagnostic{cfg.path, loc, std::move(msg), true});
  };
  std::set<std::string> policies_seen, sockets_seen;
  for (const auto& l : cfg.listeners) {
    if (l.protocol != config::Protocol::docker) continue;

    if (auto p = cfg.policies.find(l.policy); p != cfg.policies.end() && policies_seen.insert(l.policy).second) {
      for (const auto& rule : p->second.rules) {
        if (!rule.has_docker || rule.docker.images.empty()) continue;
        std::vector<std::string> granted;  // by name, by family (container.*), by `*` or by an empty list
        for (auto a : renaming_actions)
          if (policy::docker_action_granted(rule.docker.actions, a)) granted.emplace_back(a);
        if (granted.empty()) continue;
        std::string list;
        for (const auto& a : granted) list += (list.empty() ? "" : ", ") + a;
        warn(l.loc, "policy '" + l.policy + "' rule '" + rule.name + "' grants " + list +
                        " together with an `images` restriction: image.tag, image.build, image.load, "
                        "image.import and container.commit can give any image a name the restriction allows");
      }
    }

    auto u = cfg.upstreams.find(l.upstream);
    if (u == cfg.upstreams.end() || u->second.kind != config::Upstream::Kind::unix_socket) continue;
    const std::string& sock = u->second.path;
    if (!sockets_seen.insert(sock).second) continue;
    struct stat st {};
    if (::stat(sock.c_str(), &st) != 0) continue;  // not there yet (dockerd not started): nothing to judge
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) == 0) continue;
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    std::string who = (st.st_mode & S_IWOTH) ? std::string("every local user") : std::string();
    if (st.st_mode & S_IWGRP) {
      const struct group* g = ::getgrgid(st.st_gid);
      std::string group = g ? std::string(g->gr_name) : std::to_string(st.st_gid);
      who += (who.empty() ? "" : " and ") + ("members of group '" + group + "'");
    }
    warn(u->second.loc, "upstream '" + u->first + "' socket " + sock + " is mode " + mode + ": " + who +
                            " can reach dockerd without the gateway; make it 0600 (dockerd --group with a group only "
                            "Portcullis is in, or a socket owned by the proxy's user)");
  }
  return out;
}

}  // namespace portcullis::http
