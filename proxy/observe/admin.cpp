#include "proxy/observe/admin.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include "proxy/observe/metrics.hpp"

namespace portcullis::observe {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bhttp::response<bhttp::string_body> respond(const bhttp::request<bhttp::string_body>& req,
                                            const AdminHandlers& h) {
  bhttp::response<bhttp::string_body> res;
  res.version(11);
  res.keep_alive(req.keep_alive());
  res.set(bhttp::field::server, "portcullis-admin");
  std::string_view target(req.target().data(), req.target().size());
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  auto text = [&](bhttp::status s, std::string body, const char* type = "text/plain; charset=utf-8") {
    res.result(s);
    res.set(bhttp::field::content_type, type);
    res.body() = std::move(body);
  };
  if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) {
    text(bhttp::status::method_not_allowed, "only GET and HEAD are served\n");
    res.set(bhttp::field::allow, "GET, HEAD");
  } else if (target == "/healthz") {
    text(bhttp::status::ok, "ok\n");
  } else if (target == "/readyz") {
    auto why = h.not_ready();
    if (why.empty()) text(bhttp::status::ok, "ready\n");
    else text(bhttp::status::service_unavailable, "not ready: " + why + "\n");
  } else if (target == "/metrics") {
    text(bhttp::status::ok, h.metrics(), exposition_content_type);
  } else if (target == "/config") {
    text(bhttp::status::ok, h.config_json() + "\n", "application/json");
  } else {
    text(bhttp::status::not_found, "not found: /healthz, /readyz, /config, /metrics\n");
  }
  bool head = req.method() == bhttp::verb::head;
  res.prepare_payload();
  if (head) res.body().clear();  // Content-Length stays that of the GET
  return res;
}

asio::awaitable<void> serve_admin(asio::ip::tcp::socket socket, std::shared_ptr<const AdminHandlers> h) {
  beast::flat_buffer buffer;
  for (;;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(64 * 1024);
    auto [rec, rn] = co_await bhttp::async_read(socket, buffer, parser, use_tuple);
    if (rec) break;
    auto req = parser.release();
    auto res = respond(req, *h);
    bool keep = res.keep_alive();
    auto [wec, wn] = co_await bhttp::async_write(socket, res, use_tuple);
    if (wec || !keep) break;
  }
  boost::system::error_code ignored;
  socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
}

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

const char* client_cert_mode(certs::ClientCertMode m) {
  switch (m) {
    case certs::ClientCertMode::required: return "required";
    case certs::ClientCertMode::optional: return "optional";
    case certs::ClientCertMode::none: return "none";
  }
  return "required";
}

const char* upstream_kind(config::Upstream::Kind k) {
  switch (k) {
    case config::Upstream::Kind::tcp: return "tcp";
    case config::Upstream::Kind::unix_socket: return "unix";
    case config::Upstream::Kind::tls: return "tls";
    case config::Upstream::Kind::original_dst: return "original_dst";
  }
  return "tcp";
}

}  // namespace

asio::awaitable<void> admin_accept_loop(asio::ip::tcp::acceptor& acceptor, std::shared_ptr<const AdminHandlers> h) {
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      spdlog::warn("admin listener: accept failed: {}", ec.message());
      continue;
    }
    asio::co_spawn(acceptor.get_executor(), serve_admin(std::move(sock), h), asio::detached);
  }
}

std::string config_to_json(const config::Config& c) {
  json::object o;
  o["path"] = c.path;
  o["admin"] = c.admin.str();
  if (c.probes) o["probes"] = c.probes->str();
  o["workers"] = c.workers;
  o["drain_timeout_ms"] = c.drain_timeout_ms;
  if (c.run_as) o["run_as"] = json::object{{"uid", c.run_as->uid}, {"gid", c.run_as->gid}};
  o["log"] = json::object{{"level", c.log.level}, {"access_log", c.log.access_log}};
  json::object tls;
  for (const auto& [name, b] : c.tls) {
    // File paths only: the admin endpoint never reads or shows certificate or key contents.
    json::object t{{"cert", b.cert}, {"key", b.key}, {"ca", b.ca},
                   {"min_version", b.min_version == 13 ? "1.3" : "1.2"},
                   {"verify_depth", b.verify_depth}, {"expiry_warning_days", b.expiry_warning_days}};
    if (!b.crl.empty()) t["crl"] = b.crl;
    tls[name] = std::move(t);
  }
  o["tls"] = std::move(tls);
  json::object ups;
  for (const auto& [name, u] : c.upstreams) {
    json::object j{{"address", u.address_text}, {"kind", upstream_kind(u.kind)}};
    if (!u.tls.empty()) j["tls"] = u.tls;
    if (!u.server_name.empty()) j["server_name"] = u.server_name;
    if (!u.verify_spiffe.empty()) j["verify_spiffe"] = strings(u.verify_spiffe);
    ups[name] = std::move(j);
  }
  o["upstreams"] = std::move(ups);
  json::array ls;
  for (const auto& l : c.listeners) {
    json::object j{{"name", l.name},
                   {"address", l.address.str()},
                   {"protocol", config::to_string(l.protocol)},
                   {"upstream", l.upstream},
                   {"policy", l.policy},
                   {"forward_identity", config::to_string(l.forward_identity)},
                   {"headers_with_underscores", config::to_string(l.headers_with_underscores)},
                   {"forwarded_headers", config::to_string(l.forwarded_headers)},
                   {"authenticate", strings(l.authenticate)}};
    if (!l.tls.empty()) {
      j["tls"] = l.tls;
      j["client_certs"] = client_cert_mode(l.client_certs);
    } else if (l.plaintext_allow) {
      j["plaintext"] = "allow";
    }
    j["limits"] = json::object{{"max_connections", l.limits.max_connections},
                               {"header_bytes", l.limits.header_bytes},
                               {"inspect_body_bytes", l.limits.inspect_body_bytes},
                               {"max_body_bytes", l.limits.max_body_bytes},
                               {"handshake_timeout_ms", l.limits.handshake_timeout_ms},
                               {"header_timeout_ms", l.limits.header_timeout_ms},
                               {"idle_timeout_ms", l.limits.idle_timeout_ms},
                               {"connect_timeout_ms", l.limits.connect_timeout_ms},
                               {"upstream_timeout_ms", l.limits.upstream_timeout_ms}};
    ls.emplace_back(std::move(j));
  }
  o["listeners"] = std::move(ls);
  json::object pols;
  for (const auto& [name, p] : c.policies) {
    json::array rules;
    for (const auto& r : p.rules) {
      json::object rj{{"name", r.name}};
      json::object from;
      if (r.from.any) from["any"] = true;
      if (!r.from.spiffe.empty()) from["spiffe"] = strings(r.from.spiffe);
      if (!r.from.users.empty()) from["users"] = strings(r.from.users);
      if (!r.from.groups.empty()) from["groups"] = strings(r.from.groups);
      rj["from"] = std::move(from);
      if (r.has_http)
        rj["http"] = json::object{{"methods", strings(r.http.methods)}, {"paths", strings(r.http.paths)},
                                  {"hosts", strings(r.http.hosts)}};
      if (r.has_kubernetes)
        rj["kubernetes"] = json::object{{"verbs", strings(r.kubernetes.verbs)},
                                        {"resources", strings(r.kubernetes.resources)},
                                        {"namespaces", strings(r.kubernetes.namespaces)},
                                        {"names", strings(r.kubernetes.names)},
                                        {"non_resource_urls", strings(r.kubernetes.non_resource_urls)}};
      if (r.has_docker)
        rj["docker"] = json::object{{"actions", strings(r.docker.actions)}, {"images", strings(r.docker.images)},
                                    {"bind_sources", strings(r.docker.bind_sources)},
                                    {"allow", strings(r.docker.allow)}};
      rules.emplace_back(std::move(rj));
    }
    pols[name] = json::object{{"mode", p.mode == policy::Mode::audit ? "audit" : "enforce"}, {"rules", std::move(rules)}};
  }
  o["policies"] = std::move(pols);
  o["firewall"] = c.firewall ? "configured" : "off";
  return json::serialize(o);
}

}  // namespace portcullis::observe
