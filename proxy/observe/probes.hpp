#pragma once
// The probes listener (`probes.address`, plaintext, reachable by the kubelet): what an injected
// sidecar's and its app's probes ask (docs/deploy.md).
//   GET /healthz/ready                      200 once the proxy's listeners are bound, 503 from
//                                           the start of a drain (SIGTERM) on
//   GET /app-health/<container>/<probe>     the app's original httpGet probe, sent by the proxy
//                                           (as UID 1337, so not intercepted) and its status returned
// The original probes come from PORTCULLIS_APP_PROBES, which `portcullis inject` sets on the
// sidecar: {"/app-health/app/livez": {"httpGet": {"path": "/healthz", "port": 8080,
// "scheme": "HTTP", "httpHeaders": [{"name": "X", "value": "y"}]}, "timeoutSeconds": 1}}.
#include <openssl/ssl.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "proxy/config.hpp"
#include "proxy/net/stream.hpp"

namespace portcullis::observe {

struct AppProbe {
  bool https = false;
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string path = "/";
  std::vector<std::pair<std::string, std::string>> headers;
  int timeout_seconds = 1;
};

// Parses PORTCULLIS_APP_PROBES. Throws std::invalid_argument naming the entry at fault.
std::map<std::string, AppProbe> parse_app_probes(std::string_view json_text);

// Binds at construction (throws std::runtime_error naming the address); start() serves on its
// own thread until destroyed. Started after run_as drops privileges, so the thread is created
// with none (capability sets and NO_NEW_PRIVS are per thread).
class ProbesListener {
 public:
  ProbesListener(const config::Address& address, std::map<std::string, AppProbe> probes);
  void start();
  // From now on /healthz/ready answers 503 (the drain has begun). Any thread.
  void drain() { draining_->store(true); }
  ~ProbesListener();
  ProbesListener(const ProbesListener&) = delete;
  ProbesListener& operator=(const ProbesListener&) = delete;
  const std::string& address() const { return address_; }

 private:
  boost::asio::io_context ioc_{1};
  net::tcp_acceptor acceptor_{ioc_};
  std::shared_ptr<const std::map<std::string, AppProbe>> probes_;
  std::shared_ptr<SSL_CTX> client_ctx_;
  std::shared_ptr<std::atomic<bool>> draining_ = std::make_shared<std::atomic<bool>>(false);
  std::string address_;
  std::thread thread_;
};

}  // namespace portcullis::observe
