#include "proxy/observe/probes.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <stdexcept>

#include "proxy/net/accept_loop.hpp"
#include "proxy/net/deadline.hpp"
#include "proxy/net/stream.hpp"

namespace portcullis::observe {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bool header_safe(std::string_view s) { return s.find_first_of("\r\n") == std::string_view::npos && !s.empty(); }

// The app's probe, as the kubelet would have sent it. Returns its status, or 0 when the app did
// not answer (refused, reset, timed out, not HTTP).
asio::awaitable<unsigned> send_probe(const AppProbe& p, SSL_CTX* client_ctx) {
  auto ex = co_await asio::this_coro::executor;
  net::tcp_socket socket(net::io_context_of(ex));
  net::Stream stream;
  bool connected = false;
  net::DeadlineWith deadline(ex, [&] {
    boost::system::error_code ignored;
    if (connected)
      stream.close();
    else
      socket.close(ignored);
  });
  deadline.arm(std::chrono::seconds(std::max(1, p.timeout_seconds)), "probe timeout");
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(p.host, ec);
  if (ec) co_return 0;
  auto [cec] = co_await socket.async_connect({addr, p.port}, use_tuple);
  if (cec) co_return 0;
  connected = true;
  net::TlsSocket* tls = nullptr;
  if (p.https) {
    stream = net::Stream(net::Stream::tls_over, std::move(socket), client_ctx, false);
    tls = stream.tls();
    // Results go to locals first: GCC 12 mishandles temporaries of a co_await inside a condition.
    const auto hec = co_await tls->handshake();
    if (hec) co_return 0;
  } else {
    stream = net::Stream(std::move(socket));
  }
  std::string req = "GET " + p.path + " HTTP/1.1\r\nHost: " + p.host + ":" + std::to_string(p.port) +
                    "\r\nUser-Agent: kube-probe/portcullis\r\nAccept: */*\r\nConnection: close\r\n";
  for (const auto& [name, value] : p.headers) req += name + ": " + value + "\r\n";
  req += "\r\n";
  const auto wec = co_await stream.write_all(asio::buffer(req));
  if (wec) co_return 0;
  bhttp::response_parser<bhttp::empty_body> parser;
  parser.header_limit(16 * 1024);
  beast::flat_buffer buffer;
  while (!parser.is_header_done()) {
    auto [rec, n] = co_await stream.read_some(buffer.prepare(4096));
    if (rec) co_return 0;
    buffer.commit(n);
    beast::error_code pec;
    buffer.consume(parser.put(buffer.data(), pec));
    if (pec && pec != bhttp::error::need_more) co_return 0;
  }
  deadline.stop();
  co_return parser.get().result_int();
}

asio::awaitable<void> serve(net::tcp_socket socket, std::shared_ptr<const std::map<std::string, AppProbe>> probes,
                            std::shared_ptr<SSL_CTX> client_ctx, std::shared_ptr<const std::atomic<bool>> draining) {
  beast::flat_buffer buffer;
  net::DeadlineWith deadline(socket.get_executor(), [&socket] {
    boost::system::error_code ignored;
    socket.close(ignored);
  });
  for (;;) {
    bhttp::request_parser<bhttp::empty_body> parser;
    parser.header_limit(16 * 1024);
    deadline.arm(std::chrono::seconds(30), "probe idle timeout");
    auto [rec, rn] = co_await bhttp::async_read(socket, buffer, parser, use_tuple);
    if (rec) break;
    deadline.disarm();
    const auto& req = parser.get();
    bhttp::response<bhttp::string_body> res;
    res.version(11);
    res.keep_alive(req.keep_alive());
    res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    std::string target(req.target());
    if (auto q = target.find('?'); q != std::string::npos) target.resize(q);
    if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head) {
      res.result(bhttp::status::method_not_allowed);
      res.body() = "only GET and HEAD are served\n";
    } else if (target == "/healthz/ready") {
      const bool leaving = draining->load();
      res.result(leaving ? bhttp::status::service_unavailable : bhttp::status::ok);
      res.body() = leaving ? "not ready: draining (SIGTERM received)\n" : "ready\n";
    } else if (auto it = probes->find(target); it != probes->end()) {
      const unsigned status = co_await send_probe(it->second, client_ctx.get());
      if (status == 0) {
        res.result(bhttp::status::service_unavailable);
        res.body() = "the app did not answer its probe\n";
      } else {
        // The kubelet judges the app's own status (200-399 is success), as it would have.
        res.result(status);
        res.body() = "app probe: " + std::to_string(status) + "\n";
      }
    } else {
      res.result(bhttp::status::not_found);
      res.body() = "not found: /healthz/ready and the /app-health/ paths in PORTCULLIS_APP_PROBES\n";
    }
    res.prepare_payload();
    if (req.method() == bhttp::verb::head) res.body().clear();
    deadline.arm(std::chrono::seconds(10), "probe write timeout");
    auto [wec, wn] = co_await bhttp::async_write(socket, res, use_tuple);
    if (wec || !res.keep_alive()) break;
  }
  deadline.stop();
  boost::system::error_code ignored;
  socket.shutdown(net::tcp_socket::shutdown_send, ignored);
  socket.close(ignored);
}

}  // namespace

std::map<std::string, AppProbe> parse_app_probes(std::string_view text) {
  std::map<std::string, AppProbe> out;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) throw std::invalid_argument("PORTCULLIS_APP_PROBES is not a JSON object");
  for (const auto& [key, entry] : v.get_object()) {
    const std::string path(key);
    auto bad = [&](const std::string& why) {
      return std::invalid_argument("PORTCULLIS_APP_PROBES: " + path + ": " + why);
    };
    if (!path.starts_with("/app-health/")) throw bad("paths start with /app-health/");
    const auto* get = entry.is_object() ? entry.get_object().if_contains("httpGet") : nullptr;
    if (!get || !get->is_object()) throw bad("no httpGet");
    const auto& g = get->get_object();
    AppProbe p;
    const auto* port = g.if_contains("port");
    if (!port || !port->is_int64() || port->as_int64() < 1 || port->as_int64() > 65535)
      throw bad("httpGet.port must be a port number");
    p.port = static_cast<std::uint16_t>(port->as_int64());
    if (const auto* s = g.if_contains("path")) {
      if (!s->is_string() || !s->get_string().starts_with("/") || !header_safe(s->get_string()) ||
          s->get_string().find(' ') != json::string::npos)
        throw bad("httpGet.path must be an absolute path");
      p.path = std::string(s->get_string());
    }
    if (const auto* s = g.if_contains("scheme")) {
      if (!s->is_string() || (*s != "HTTP" && *s != "HTTPS")) throw bad("httpGet.scheme must be HTTP or HTTPS");
      p.https = *s == "HTTPS";
    }
    if (const auto* hs = g.if_contains("httpHeaders")) {
      if (!hs->is_array()) throw bad("httpGet.httpHeaders must be a list");
      for (const auto& h : hs->get_array()) {
        const auto* n = h.is_object() ? h.get_object().if_contains("name") : nullptr;
        const auto* val = h.is_object() ? h.get_object().if_contains("value") : nullptr;
        if (!n || !val || !n->is_string() || !val->is_string() || !header_safe(n->get_string()) ||
            val->get_string().find_first_of("\r\n") != json::string::npos)
          throw bad("httpGet.httpHeaders entries need a name and a value on one line");
        p.headers.emplace_back(std::string(n->get_string()), std::string(val->get_string()));
      }
    }
    if (const auto* t = entry.get_object().if_contains("timeoutSeconds"); t && t->is_int64())
      p.timeout_seconds = static_cast<int>(t->as_int64());
    out[path] = std::move(p);
  }
  return out;
}

ProbesListener::ProbesListener(const config::Address& address, std::map<std::string, AppProbe> probes)
    : probes_(std::make_shared<const std::map<std::string, AppProbe>>(std::move(probes))) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(address.host, ec);
  net::tcp::endpoint ep(addr, address.port);
  if (!ec) acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(net::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("probes listener: cannot listen on " + address.str() + ": " + ec.message());
  config::Address bound = address;
  bound.port = acceptor_.local_endpoint().port();
  address_ = bound.str();
  // The kubelet does not verify an app's certificate on an HTTPS probe; neither do we.
  client_ctx_.reset(SSL_CTX_new(TLS_client_method()), SSL_CTX_free);
  if (!client_ctx_) throw std::runtime_error("probes listener: cannot create a TLS context");
  SSL_CTX_set_verify(client_ctx_.get(), SSL_VERIFY_NONE, nullptr);
}

void ProbesListener::start() {
  asio::co_spawn(ioc_,
                 net::accept_each(acceptor_, "probes",
                                  [probes = probes_, ctx = client_ctx_, draining = draining_](net::tcp_socket s) {
                                    return serve(std::move(s), probes, ctx, draining);
                                  }),
                 asio::detached);
  thread_ = std::thread([this] { ioc_.run(); });
}

ProbesListener::~ProbesListener() {
  ioc_.stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace portcullis::observe
