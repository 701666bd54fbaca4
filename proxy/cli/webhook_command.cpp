// `portcullis webhook -c FILE`: the mutating admission webhook. An HTTPS server
// (our TlsSocket, Beast's parser) answering POST /inject with AdmissionReview
// admission.k8s.io/v1; the decision itself is proxy/inject/admission.cpp. GET
// /healthz answers "ok" for the webhook's own probes.
//
// The file (docs/deploy.md):
//   address: 0.0.0.0:9443
//   tls: { cert: /etc/webhook/tls.crt, key: /etc/webhook/tls.key }
//   inject: { image: portcullis:dev, config_map: portcullis-config, config_key:
//   config.yaml,
//             secret: portcullis-certs }
// Exit codes: 0 stopped by SIGTERM/SIGINT, 1 invalid file (FILE:LINE:COL:
// message), 2 cannot listen.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <charconv>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "certs/file_watcher.hpp"
#include "certs/tls.hpp"
#include "proxy/cli/commands.hpp"
#include "proxy/inject/admission.hpp"
#include "proxy/net/accept_loop.hpp"
#include "proxy/net/deadline.hpp"
#include "proxy/net/stream.hpp"

namespace portcullis::cli {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kMaxBody = 8 * 1024 * 1024;  // a Pod in an AdmissionReview is far smaller

struct WebhookConfig {
  std::string host = "0.0.0.0";
  std::uint16_t port = 9443;
  certs::BundleSpec tls;
  inject::Options options;
};

struct FileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

WebhookConfig load_webhook_config(const std::string& path) {
  auto at = [&](const YAML::Node& n, const std::string& message) {
    const auto m = n.Mark();
    return FileError(path + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": " + message);
  };
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw FileError(path + ": cannot read the file");
  } catch (const YAML::Exception& e) {
    throw FileError(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) + ": " +
                    e.msg);
  }
  if (!root.IsMap()) throw FileError(path + ":1:1: expected a mapping with address, tls and inject");
  auto only = [&](const YAML::Node& map, std::initializer_list<const char*> keys, const std::string& where) {
    for (const auto& kv : map) {
      const std::string k = kv.first.Scalar();
      if (std::none_of(keys.begin(), keys.end(), [&](const char* key) { return k == key; }))
        throw at(kv.first, "unknown key '" + k + "' in " + where);
    }
  };
  auto text = [&](const YAML::Node& n, const std::string& what) {
    if (!n.IsScalar() || n.Scalar().empty()) throw at(n, what + " must be a non-empty string");
    return n.Scalar();
  };
  only(root, {"address", "tls", "inject"}, "the webhook file");
  WebhookConfig c;
  if (root["address"]) {
    const std::string a = text(root["address"], "address");
    auto colon = a.rfind(':');
    std::string host = colon == std::string::npos ? "" : a.substr(0, colon);
    if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    const std::string port = colon == std::string::npos ? "" : a.substr(colon + 1);
    boost::system::error_code ec;
    asio::ip::make_address(host, ec);
    unsigned p = 0;
    auto [ptr, pec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec || pec != std::errc() || ptr != port.data() + port.size() || port.empty() || p > 65535)
      throw at(root["address"], "address: '" + a + "' is not IP:PORT");
    c.host = host;
    c.port = static_cast<std::uint16_t>(p);
  }
  const YAML::Node tls = root["tls"];
  if (!tls || !tls.IsMap()) throw at(tls ? tls : root, "tls: a mapping with cert and key is required");
  only(tls, {"cert", "key"}, "tls");
  if (!tls["cert"] || !tls["key"]) throw at(tls, "tls needs cert and key");
  const auto dir = std::filesystem::path(path).parent_path();
  auto file = [&](const YAML::Node& n, const std::string& what) {
    std::filesystem::path p = text(n, what);
    return (p.is_absolute() ? p : dir / p).lexically_normal().string();  // relative to the file
  };
  c.tls.name = "webhook";
  c.tls.cert = file(tls["cert"], "tls.cert");
  c.tls.key = file(tls["key"], "tls.key");
  if (const YAML::Node inj = root["inject"]) {
    if (!inj.IsMap()) throw at(inj, "inject must be a mapping");
    only(inj, {"image", "config_map", "config_key", "secret"}, "inject");
    if (inj["image"]) c.options.image = text(inj["image"], "inject.image");
    if (inj["config_map"]) c.options.config_map = text(inj["config_map"], "inject.config_map");
    if (inj["config_key"]) c.options.config_key = text(inj["config_key"], "inject.config_key");
    if (inj["secret"]) c.options.secret = text(inj["secret"], "inject.secret");
  }
  return c;
}

bhttp::response<bhttp::string_body> answer(const bhttp::request<bhttp::string_body>& req,
                                           const inject::Options& options) {
  bhttp::response<bhttp::string_body> res;
  res.version(11);
  res.keep_alive(req.keep_alive());
  res.set(bhttp::field::server, "portcullis-webhook");
  std::string_view target(req.target().data(), req.target().size());
  if (auto q = target.find('?'); q != std::string_view::npos) target = target.substr(0, q);
  auto text = [&](bhttp::status s, std::string body, const char* type) {
    res.result(s);
    res.set(bhttp::field::content_type, type);
    res.body() = std::move(body);
  };
  if (target == "/healthz" && req.method() == bhttp::verb::get) {
    text(bhttp::status::ok, "ok\n", "text/plain; charset=utf-8");
  } else if (target != "/inject") {
    text(bhttp::status::not_found, "not found: POST /inject, GET /healthz\n", "text/plain; charset=utf-8");
  } else if (req.method() != bhttp::verb::post) {
    text(bhttp::status::method_not_allowed, "POST an AdmissionReview to /inject\n", "text/plain; charset=utf-8");
    res.set(bhttp::field::allow, "POST");
  } else {
    const auto a = inject::review_admission(req.body(), options);
    text(static_cast<bhttp::status>(a.status), a.body, "application/json");
    if (a.status != 200) spdlog::warn("webhook: refused a request: {}", a.body);
  }
  res.prepare_payload();
  return res;
}

asio::awaitable<void> serve(net::tcp_socket socket, std::shared_ptr<SSL_CTX> ctx,
                            std::shared_ptr<const inject::Options> options) {
  net::Stream stream(net::Stream::tls_over, std::move(socket), ctx.get(), true);
  net::TlsSocket* tls = stream.tls();
  net::DeadlineWith deadline(tls->socket().get_executor(), [&stream] { stream.close(); });
  deadline.arm(std::chrono::seconds(10), "handshake timeout");
  const auto ec = co_await tls->handshake();
  if (ec) {
    spdlog::debug("webhook: TLS handshake failed: {}", ec.message());
    deadline.stop();
    co_return;
  }
  beast::flat_buffer buffer;
  for (;;) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(16 * 1024);
    parser.body_limit(kMaxBody);
    parser.eager(true);
    deadline.arm(std::chrono::seconds(60), "idle timeout");
    beast::error_code pec;
    bool continued = false;
    while (!parser.is_done()) {
      if (buffer.size() > 0) {
        const auto used = parser.put(buffer.data(), pec);
        buffer.consume(used);
        if (pec == bhttp::error::need_more)
          pec = {};
        else if (pec)
          break;
        if (parser.is_done() || used > 0) continue;
      }
      // curl sends `Expect: 100-continue` before a large body and would wait a second for this.
      if (parser.is_header_done() && !continued && beast::iequals(parser.get()[bhttp::field::expect], "100-continue")) {
        continued = true;
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        const auto cec = co_await stream.write_all(asio::buffer(kContinue.data(), kContinue.size()));
        if (cec) {
          deadline.stop();
          co_return;
        }
      }
      auto [ec, n] = co_await stream.read_some(buffer.prepare(16 * 1024));
      if (ec) {
        if (parser.got_some() || buffer.size() > 0)
          spdlog::debug("webhook: connection ended mid-request: {}", ec.message());
        deadline.stop();
        co_return;
      }
      buffer.commit(n);
    }
    bhttp::response<bhttp::string_body> res;
    if (pec) {
      res.version(11);
      res.result(pec == bhttp::error::body_limit ? bhttp::status::payload_too_large : bhttp::status::bad_request);
      res.set(bhttp::field::content_type, "text/plain; charset=utf-8");
      res.body() = "malformed request: " + pec.message() + "\n";
      res.keep_alive(false);
      res.prepare_payload();
    } else {
      res = answer(parser.get(), *options);
    }
    std::ostringstream wire;
    wire << res;
    const std::string bytes = wire.str();
    deadline.arm(std::chrono::seconds(10), "write timeout");
    auto wec = co_await stream.write_all(asio::buffer(bytes));
    if (wec || !res.keep_alive()) break;
  }
  co_await stream.shutdown_send();
  deadline.stop();
  stream.close();
}

int run_webhook(const std::string& path) {
  if (!spdlog::get("portcullis")) {
    auto logger = spdlog::stderr_color_mt("portcullis");
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    spdlog::set_default_logger(logger);
  }
  WebhookConfig cfg;
  certs::SslCtxPtr ctx;
  try {
    cfg = load_webhook_config(path);
    const std::string alpn[] = {"http/1.1"};
    ctx = certs::make_server_context(cfg.tls, certs::ClientCertMode::none, alpn);
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  asio::io_context ioc(1);
  net::tcp_acceptor acceptor(ioc);
  try {
    net::tcp::endpoint ep(asio::ip::make_address(cfg.host), cfg.port);
    acceptor.open(ep.protocol());
    acceptor.set_option(net::tcp::acceptor::reuse_address(true));
    acceptor.bind(ep);
    acceptor.listen();
  } catch (const std::exception& e) {
    spdlog::error("webhook: cannot listen on {}:{}: {}", cfg.host, cfg.port, e.what());
    return 2;
  }
  const auto local = acceptor.local_endpoint();
  const std::string shown =
      local.address().is_v6() ? "[" + local.address().to_string() + "]" : local.address().to_string();
  spdlog::info("listener 'webhook' ready on {}:{}", shown, local.port());
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code&, int) {
    spdlog::info("webhook: stopping");
    boost::system::error_code ignored;
    acceptor.close(ignored);
    ioc.stop();
  });
  // cert-manager renews the serving certificate in place: a change to the files builds a new
  // context (on the watcher's thread) and swaps it in on the server's; a bad pair keeps the old.
  std::unique_ptr<certs::WatchThread> watcher;
  try {
    watcher = std::make_unique<certs::WatchThread>(
        std::vector<std::filesystem::path>{cfg.tls.cert, cfg.tls.key},
        [&ioc, &ctx, bundle = cfg.tls](const std::vector<std::filesystem::path>&) {
          try {
            const std::string alpn[] = {"http/1.1"};
            auto next = certs::make_server_context(bundle, certs::ClientCertMode::none, alpn);
            asio::post(ioc, [&ctx, next] {
              ctx = next;
              spdlog::info("webhook: serving certificate reloaded");
            });
          } catch (const std::exception& e) {
            spdlog::error("webhook: certificate not reloaded, the previous one stays in use: {}", e.what());
          }
        });
  } catch (const std::exception& e) {
    spdlog::warn("webhook: certificate files are not watched ({}); restart to renew them", e.what());
  }
  auto options = std::make_shared<const inject::Options>(cfg.options);
  asio::co_spawn(ioc,
                 net::accept_each(acceptor, "webhook",
                                  [&ctx, options](net::tcp_socket s) { return serve(std::move(s), ctx, options); }),
                 asio::detached);
  ioc.run();
  watcher.reset();  // joins the watcher before ctx and ioc go away
  return 0;
}

}  // namespace

void register_webhook_command(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("webhook", "the mutating admission webhook: injects the sidecar into new Pods");
  cmd->add_option("-c,--config", *path, "webhook file: address, tls {cert, key}, inject {image, ...}")->required();
  cmd->callback([path] {
    if (int rc = run_webhook(*path); rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace portcullis::cli
