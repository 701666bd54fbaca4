// `portcullis demo`: the quickstart, self-contained. Makes a throwaway dev CA and certificates,
// starts a built-in echo upstream and the proxy on loopback, sends allowed and denied requests
// with its own mTLS client, and prints what happened and why.
#include "proxy/demo.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <spdlog/spdlog.h>

#include "certs/dev_ca.hpp"
#include "proxy/observe/access_log.hpp"
#include "proxy/server.hpp"

namespace portcullis {
namespace {
namespace asio = boost::asio;
namespace fs = std::filesystem;

// The app behind the proxy: answers every request with what it received, including the
// identity header the proxy set.
class EchoUpstream {
 public:
  EchoUpstream() : acceptor_(ioc_, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(ioc_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~EchoUpstream() {
    ioc_.stop();
    thread_.join();
  }
  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(ioc_, serve(std::move(sock)), asio::detached);
    }
  }
  static asio::awaitable<void> serve(asio::ip::tcp::socket sock) {
    std::string buf;
    for (;;) {
      auto [ec, n] = co_await asio::async_read_until(sock, asio::dynamic_buffer(buf), "\r\n\r\n",
                                                     asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      std::string head = buf.substr(0, n);
      buf.erase(0, n);
      std::string line = head.substr(0, head.find("\r\n"));
      std::string xfcc;
      auto pos = head.find("x-forwarded-client-cert: ");
      if (pos != std::string::npos) {
        auto end = head.find("\r\n", pos);
        xfcc = head.substr(pos + 25, end - pos - 25);
      }
      std::string body = "{\"app\":\"echo\",\"request\":\"";
      observe::json_escape(body, line);
      body += "\",\"x-forwarded-client-cert\":\"";
      observe::json_escape(body, xfcc);
      body += "\"}";
      std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                         std::to_string(body.size()) + "\r\n\r\n" + body;
      auto [wec, wn] = co_await asio::async_write(sock, asio::buffer(resp), asio::as_tuple(asio::use_awaitable));
      if (wec) co_return;
    }
  }
  asio::io_context ioc_{1};
  asio::ip::tcp::acceptor acceptor_;
  std::thread thread_;
};

struct Reply {
  bool tls_ok = false;
  std::string error;  // TLS or socket failure
  int status = 0;
  std::string body;
};

std::string openssl_error() {
  unsigned long e = ERR_get_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return e ? buf : "connection closed";
}

// A small blocking mTLS client: one request per connection.
Reply https_request(std::uint16_t port, const fs::path& ca, const fs::path& cert, const fs::path& key,
                    const std::string& request) {
  Reply r;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!cert.empty()) {
    SSL_CTX_use_certificate_chain_file(ctx, cert.c_str());
    SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM);
  }
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  SSL* ssl = SSL_new(ctx);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    r.error = "connect failed";
  } else {
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_set1_host(ssl, "localhost");
    if (SSL_connect(ssl) != 1) {
      r.error = openssl_error();
    } else {
      r.tls_ok = true;
      SSL_write(ssl, request.data(), static_cast<int>(request.size()));
      std::string resp;
      char buf[4096];
      for (;;) {
        int n = SSL_read(ssl, buf, sizeof buf);
        if (n <= 0) break;
        resp.append(buf, static_cast<std::size_t>(n));
      }
      if (resp.empty()) {
        // With TLS 1.3 the server's refusal of our certificate arrives after the handshake.
        r.tls_ok = false;
        r.error = openssl_error();
      } else {
        if (resp.size() > 12) r.status = std::atoi(resp.c_str() + 9);
        auto split = resp.find("\r\n\r\n");
        if (split != std::string::npos) r.body = resp.substr(split + 4);
      }
    }
  }
  SSL_free(ssl);
  ::close(fd);
  SSL_CTX_free(ctx);
  return r;
}

}  // namespace

int run_demo() {
  char tmpl[] = "/tmp/portcullis-demo-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    std::cerr << "portcullis demo: cannot create a temporary directory\n";
    return 2;
  }
  fs::path dir = tmpl;
  std::cout << "Portcullis demo — everything runs on 127.0.0.1 and is removed afterwards (" << dir.string() << ")\n\n";

  std::cout << "1. A throwaway dev CA and certificates (portcullis certs init / issue):\n";
  certs::init_ca(dir / "ca");
  auto issue = [&](const std::string& name, const std::string& spiffe, bool server) {
    certs::IssueOptions o;
    o.ca_dir = dir / "ca";
    o.out_dir = dir / "certs";
    o.name = name;
    o.cn = name;
    o.spiffe = spiffe;
    o.days = 1;
    if (server) {
      o.dns = {"localhost"};
      o.ips = {"127.0.0.1"};
      o.client = false;
    } else {
      o.server = false;
      o.orgs = {"shop"};
    }
    certs::issue(o);
    std::cout << "   " << name << (spiffe.empty() ? "" : "  " + spiffe) << "\n";
  };
  issue("proxy", "", true);
  issue("frontend", "spiffe://demo.local/ns/shop/sa/frontend", false);
  issue("intruder", "spiffe://demo.local/ns/shop/sa/intruder", false);

  EchoUpstream app;
  std::cout << "\n2. A built-in echo app on 127.0.0.1:" << app.port() << " (the workload we protect)\n";

  fs::path cfg_path = dir / "portcullis.yaml";
  {
    std::ofstream cfg(cfg_path);
    cfg << "workers: 1\nlog: { level: warn, access_log: " << (dir / "access.log").string() << " }\n"
        << "tls:\n  workload: { cert: certs/proxy.crt, key: certs/proxy.key, ca: certs/ca.crt }\n"
        << "upstreams:\n  app: { address: tcp://127.0.0.1:" << app.port() << " }\n"
        << "listeners:\n  - name: inbound\n    address: 127.0.0.1:0\n    tls: workload\n    upstream: app\n    policy: inbound\n"
        << "policies:\n  inbound:\n    rules:\n"
        << "      - name: frontend-reads-catalog\n"
        << "        from: { spiffe: [\"spiffe://demo.local/ns/shop/sa/frontend\"] }\n"
        << "        http: { methods: [GET, HEAD], paths: [\"/api/v1/products\", \"/api/v1/products/*\"] }\n";
  }
  std::cout << "\n3. The proxy, with this policy (" << cfg_path.string() << "):\n\n";
  {
    std::ifstream in(cfg_path);
    std::string line;
    bool show = false;
    while (std::getline(in, line)) {
      if (line.starts_with("policies:")) show = true;
      if (show) std::cout << "     " << line << "\n";
    }
  }

  std::shared_ptr<const Snapshot> snap;
  try {
    snap = build_snapshot(config::load_file(cfg_path.string()));
  } catch (const config::ConfigError& e) {
    for (const auto& d : e.diagnostics) std::cerr << d.str() << "\n";
    return 2;
  }
  observe::configure_access_log(snap->config.log.access_log);
  spdlog::set_level(spdlog::level::warn);
  RunOptions options;
  options.no_firewall = true;
  Server server(snap, options);
  server.bind();
  std::thread proxy_thread([&] { server.run(); });
  // The listener's port was chosen by the kernel; the acceptors are bound, so ask it.
  std::uint16_t port = 0;
  for (int i = 0; i < 100 && port == 0; ++i) {
    port = server.bound_port("inbound");
    if (!port) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::cout << "\n   listening on https://127.0.0.1:" << port << " (mTLS required)\n\n4. Requests:\n";

  auto ca = dir / "certs" / "ca.crt";
  auto cert = [&](const std::string& n) { return dir / "certs" / (n + ".crt"); };
  auto key = [&](const std::string& n) { return dir / "certs" / (n + ".key"); };
  struct Case {
    std::string who, method, target, expect;
  };
  std::vector<Case> cases{
      {"frontend", "GET", "/api/v1/products/42", "200"},
      {"frontend", "DELETE", "/api/v1/products/42", "403"},
      {"intruder", "GET", "/api/v1/products/42", "403"},
      {"frontend", "GET", "/api/v1/products/../../admin", "403"},
      {"frontend", "GET", "/api/v1/products%2F..%2Fadmin", "400"},
      {"", "GET", "/api/v1/products", "refused"},
  };
  int unexpected = 0;
  for (const auto& c : cases) {
    std::string req = c.method + " " + c.target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    auto r = c.who.empty() ? https_request(port, ca, {}, {}, req) : https_request(port, ca, cert(c.who), key(c.who), req);
    std::string got = r.tls_ok ? std::to_string(r.status) : "refused";
    std::cout << "\n   " << (c.who.empty() ? "(no client certificate)" : c.who) << ": " << c.method << " " << c.target
              << "\n   -> " << (r.tls_ok ? std::to_string(r.status) : "TLS handshake refused: " + r.error) << "\n";
    if (!r.body.empty()) std::cout << "      " << r.body << "\n";
    if (got != c.expect) {
      ++unexpected;
      std::cout << "      UNEXPECTED: wanted " << c.expect << "\n";
    }
  }
  server.stop();
  proxy_thread.join();

  std::cout << "\n5. The access log (JSON, ECS field names) has one line per request; the first:\n\n   ";
  {
    std::ifstream in(dir / "access.log");
    std::string line;
    std::getline(in, line);
    std::cout << line << "\n";
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  std::cout << "\n" << (unexpected ? "Some requests did not behave as expected." : "All requests behaved as the policy says.")
            << "\nNext: README.md (configuration, deployments), `portcullis check -c FILE`, `portcullis explain`.\n";
  return unexpected ? 2 : 0;
}

}  // namespace portcullis
