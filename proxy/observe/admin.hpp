#pragma once
// The admin listener (admin.address, plaintext HTTP/1.1, loopback by default): /healthz,
// /readyz, /config and /metrics. Low volume: it runs on the main io_context, one coroutine per
// connection, and reads what it serves through the callbacks the Server gives it.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <memory>
#include <string>

#include "proxy/config.hpp"

namespace portcullis::observe {

struct AdminHandlers {
  // Empty when ready (config loaded, listeners bound, firewall in place if configured, not
  // stopping); otherwise why not, one line per failed check.
  std::function<std::string()> not_ready;
  std::function<std::string()> metrics;      // Prometheus text exposition
  std::function<std::string()> config_json;  // the effective config, redacted
};

// Accepts until the acceptor is closed; each connection is served on the acceptor's executor.
boost::asio::awaitable<void> admin_accept_loop(boost::asio::ip::tcp::acceptor& acceptor,
                                               std::shared_ptr<const AdminHandlers> handlers);

// The effective config as JSON. TLS bundles show their file paths, never file contents; nothing
// here reads a key file.
std::string config_to_json(const config::Config& c);

}  // namespace portcullis::observe
