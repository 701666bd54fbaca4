#include "proxy/upstream.hpp"

#include <linux/netfilter_ipv4.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <openssl/x509v3.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "proxy/net/deadline.hpp"
#include "proxy/policy/glob.hpp"

namespace portcullis {
namespace {
using namespace boost::asio::experimental::awaitable_operators;
namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bool spiffe_allowed(const std::vector<std::string>& patterns, const std::string& id) {
  constexpr std::string_view scheme = "spiffe://";
  if (!id.starts_with(scheme)) return false;
  for (const auto& p : patterns)
    if (p.starts_with(scheme) &&
        policy::segment_pattern_matches(std::string_view(p).substr(scheme.size()),
                                        std::string_view(id).substr(scheme.size())))
      return true;
  return false;
}

net::awaitable<UpstreamConnection> connect_tcp(const UpstreamRuntime& up, net::tcp::endpoint ep_hint,
                                              bool use_hint) {
  UpstreamConnection out;
  auto ex = co_await asio::this_coro::executor;
  std::vector<net::tcp::endpoint> endpoints;
  if (use_hint) {
    endpoints.push_back(ep_hint);
  } else {
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(up.cfg.host, ec);
    if (!ec) {
      endpoints.emplace_back(addr, up.cfg.port);
    } else {
      net::tcp::resolver resolver(ex);
      auto [rec, results] = co_await resolver.async_resolve(up.cfg.host, std::to_string(up.cfg.port), use_tuple);
      if (rec) {
        out.ec = rec;
        out.error = "cannot resolve " + up.cfg.host + ": " + rec.message();
        co_return out;
      }
      for (const auto& r : results) endpoints.push_back(r.endpoint());
    }
  }
  net::tcp_socket sock(net::io_context_of(ex));
  for (const auto& ep : endpoints) {
    sock = net::tcp_socket(net::io_context_of(ex));
    auto [cec] = co_await sock.async_connect(ep, use_tuple);
    out.address = ep.address().to_string() + ":" + std::to_string(ep.port());
    if (!cec) {
      out.ec = {};
      break;
    }
    out.ec = cec;
    out.error = "cannot connect to " + out.address + ": " + cec.message();
  }
  if (out.ec) co_return out;
  sock.set_option(net::tcp::no_delay(true));
  bool tls = up.cfg.kind == config::Upstream::Kind::tls || up.cfg.kind == config::Upstream::Kind::original_dst;
  if (!tls) {
    out.stream = net::Stream(std::move(sock));
    co_return out;
  }
  net::Stream stream(net::Stream::tls_over, std::move(sock), up.client_ctx.get(), false);
  net::TlsSocket* t = stream.tls();
  SSL* ssl = t->ssl();
  if (up.cfg.kind == config::Upstream::Kind::tls) {
    const std::string& name = up.cfg.server_name.empty() ? up.cfg.host : up.cfg.server_name;
    boost::system::error_code aec;
    asio::ip::make_address(name, aec);
    if (aec) {
      SSL_set_tlsext_host_name(ssl, name.c_str());
      SSL_set1_host(ssl, name.c_str());
    } else {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
    }
  }
  if (auto hec = co_await t->handshake()) {
    out.ec = hec;
    long v = SSL_get_verify_result(ssl);
    out.error = "TLS handshake with upstream " + out.address + " failed: " +
                (v != X509_V_OK ? X509_verify_cert_error_string(v) : hec.message());
    co_return out;
  }
  if (!up.cfg.verify_spiffe.empty()) {
    auto id = certs::peer_identity(ssl);
    if (!id || !spiffe_allowed(up.cfg.verify_spiffe, id->spiffe)) {
      out.ec = asio::error::access_denied;
      out.error = "upstream " + out.address + " presented SPIFFE ID '" + (id ? id->spiffe : std::string()) +
                  "', which verify_spiffe does not allow";
      co_return out;
    }
  }
  out.stream = std::move(stream);
  co_return out;
}

net::awaitable<UpstreamConnection> connect_unix(const UpstreamRuntime& up) {
  UpstreamConnection out;
  auto ex = co_await asio::this_coro::executor;
  net::unix_socket sock(net::io_context_of(ex));
  auto [ec] = co_await sock.async_connect(asio::local::stream_protocol::endpoint(up.cfg.path), use_tuple);
  out.address = "unix:" + up.cfg.path;
  if (ec) {
    out.ec = ec;
    out.error = "cannot connect to " + out.address + ": " + ec.message();
    co_return out;
  }
  out.stream = net::Stream(std::move(sock));
  co_return out;
}

}  // namespace

net::awaitable<UpstreamConnection> connect_upstream(const UpstreamRuntime& up, std::chrono::milliseconds timeout,
                                                    std::optional<net::tcp::endpoint> original_dst) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer timer(ex, timeout);
  auto attempt = [&]() -> net::awaitable<UpstreamConnection> {
    switch (up.cfg.kind) {
      case config::Upstream::Kind::unix_socket:
        co_return co_await connect_unix(up);
      case config::Upstream::Kind::original_dst:
        if (!original_dst) {
          UpstreamConnection out;
          out.ec = asio::error::address_family_not_supported;
          out.error = "no original destination (the connection was not redirected by the firewall)";
          co_return out;
        }
        co_return co_await connect_tcp(up, *original_dst, true);
      default:
        co_return co_await connect_tcp(up, {}, false);
    }
  };
  auto result = co_await (attempt() || timer.async_wait(use_tuple));
  if (result.index() == 0) co_return std::move(std::get<0>(result));
  UpstreamConnection out;
  out.ec = asio::error::timed_out;
  out.timed_out = true;
  out.error = "connecting to upstream " + up.cfg.address_text + " timed out after " +
              std::to_string(timeout.count()) + " ms";
  co_return out;
}

std::optional<net::tcp::endpoint> original_destination(net::tcp_socket& s) {
  int fd = static_cast<int>(s.native_handle());
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  net::error_code ec;
  const net::tcp::endpoint local = s.local_endpoint(ec);
  if (ec) return std::nullopt;
  std::optional<net::tcp::endpoint> original;
  if (local.address().is_v6()) {
    if (::getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len) != 0) return std::nullopt;
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    asio::ip::address_v6::bytes_type b;
    std::memcpy(b.data(), &a->sin6_addr, 16);
    original = net::tcp::endpoint(asio::ip::address_v6(b), ntohs(a->sin6_port));
  } else {
    if (::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len) != 0) return std::nullopt;
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    original = net::tcp::endpoint(asio::ip::address_v4(ntohl(a->sin_addr.s_addr)), ntohs(a->sin_port));
  }
  // A connection made to the listener itself (not redirected: conntrack still answers, with the
  // listener's own address) would have the proxy dial itself, again and again, until the
  // connection cap is reached: it has no original destination.
  if (*original == local) return std::nullopt;
  return original;
}

std::optional<net::Stream> UpstreamPool::take(const std::string& key) {
  auto it = idle_.find(key);
  if (it == idle_.end()) return std::nullopt;
  auto& v = it->second;
  while (!v.empty()) {
    net::Stream s = std::move(v.back());
    v.pop_back();
    if (s.is_open() && !s.peer_closed_or_sent()) return s;
    s.close();
  }
  return std::nullopt;
}

void UpstreamPool::give(const std::string& key, net::Stream s) {
  auto& v = idle_[key];
  if (v.size() >= max_idle_per_upstream || !s.is_open()) {
    s.close();
    return;
  }
  v.push_back(std::move(s));
}

}  // namespace portcullis
