// protocol: tcp listeners (an L4 identity allowlist, then bytes both ways), and the raw relay
// that HTTP upgrades (101) switch to.
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <chrono>

#include "proxy/net/deadline.hpp"
#include "proxy/observe/access_log.hpp"
#include "proxy/worker.hpp"

namespace portcullis {
namespace {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using ms = std::chrono::milliseconds;

// One direction. On EOF the half-close is passed on and the other direction keeps going;
// on an error both sides are closed so the other direction ends too.
net::awaitable<std::uint64_t> pump(net::Stream& from, net::Stream& to, net::Deadline& idle, std::uint64_t idle_ms) {
  std::uint64_t total = 0;
  auto buf = std::make_unique<char[]>(16 * 1024);
  for (;;) {
    auto [ec, n] = co_await from.read_some(asio::buffer(buf.get(), 16 * 1024));
    if (idle_ms) idle.arm(ms(idle_ms));
    if (ec || n == 0) {
      bool clean = ec == asio::error::eof || n == 0;
      if (clean) co_await to.shutdown_send();
      else {
        from.close();
        to.close();
      }
      co_return total;
    }
    if (auto wec = co_await to.write_all(asio::buffer(buf.get(), n))) {
      from.close();
      to.close();
      co_return total;
    }
    total += n;
  }
}

}  // namespace

net::awaitable<std::pair<std::uint64_t, std::uint64_t>> relay(net::Stream& a, net::Stream& b, std::uint64_t idle_ms) {
  auto ex = co_await asio::this_coro::executor;
  net::DeadlineWith idle(ex, [&] {
    a.close();
    b.close();
  });
  if (idle_ms) idle.arm(ms(idle_ms));
  auto [ab, ba] = co_await (pump(a, b, idle, idle_ms) && pump(b, a, idle, idle_ms));
  idle.stop();
  co_return std::pair{ab, ba};
}

net::awaitable<void> serve_tcp(Worker& w, std::string listener, net::tcp_socket socket) {
  auto snap = w.snapshot;
  const auto& lrt = snap->listeners.at(listener);
  const auto& limits = lrt.cfg.limits;
  auto start = std::chrono::steady_clock::now();
  observe::AccessRecord rec;
  rec.listener = listener;
  net::error_code ec;
  auto remote = socket.remote_endpoint(ec);
  if (!ec) {
    rec.source_ip = remote.address().to_string();
    rec.source_port = remote.port();
  }
  socket.set_option(net::tcp::no_delay(true), ec);
  std::optional<net::tcp::endpoint> original_dst;
  if (lrt.upstream->cfg.kind == config::Upstream::Kind::original_dst) original_dst = original_destination(socket);

  net::Stream down;
  net::TlsSocket* tls = nullptr;
  if (lrt.server_ctx) {
    down = net::Stream(net::Stream::tls_over, std::move(socket), lrt.server_ctx.get(), true);
    tls = down.tls();
  } else {
    down = net::Stream(std::move(socket));
  }
  net::Stream up;
  net::DeadlineWith deadline(co_await asio::this_coro::executor, [&] {
    down.close();
    up.close();
  });
  std::string reason, rule, upstream_address = lrt.upstream->cfg.address_text;
  std::optional<certs::Identity> peer;
  auto finish = [&](std::string_view outcome) {
    rec.outcome = outcome;
    rec.reason = reason;
    rec.rule = rule;
    rec.peer = peer ? &*peer : nullptr;
    rec.upstream = upstream_address;
    rec.duration = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    observe::write_access_log(rec);
  };

  if (tls) {
    deadline.arm(ms(limits.handshake_timeout_ms));
    auto hec = co_await tls->handshake();
    w.metrics.add(observe::Metric::tls_handshakes_total, observe::labels({{"listener", listener}}));
    if (hec) {
      w.metrics.add(observe::Metric::tls_handshake_failures_total,
                    observe::labels({{"listener", listener},
                                     {"reason", observe::handshake_failure_reason(tls->ssl(), hec, deadline.expired())}}));
      long v = SSL_get_verify_result(tls->ssl());
      reason = deadline.expired() ? "TLS handshake timed out"
                                  : "TLS handshake failed: " + (v != X509_V_OK ? std::string("client certificate rejected: ") +
                                                                                     X509_verify_cert_error_string(v)
                                                                               : hec.message());
      finish("error");
      co_return;
    }
    peer = certs::peer_identity(tls->ssl());
  }
  auto decision = lrt.policy->decide_peer(peer ? &*peer : nullptr);
  reason = decision.reason;
  rule = decision.rule;
  if (!decision.allowed()) {
    deadline.arm(ms(1000));
    co_await down.shutdown_send();
    down.close();
    finish("deny");
    co_return;
  }
  deadline.disarm();
  auto c = co_await connect_upstream(*lrt.upstream, ms(limits.connect_timeout_ms), original_dst);
  if (c.ec) {
    w.metrics.add(observe::Metric::upstream_connect_failures_total, observe::labels({{"upstream", lrt.cfg.upstream}}));
    reason = c.error;
    down.close();
    finish("error");
    co_return;
  }
  up = std::move(c.stream);
  upstream_address = c.address;
  auto [in, out] = co_await relay(down, up, limits.idle_timeout_ms);
  rec.bytes_in = in;
  rec.bytes_out = out;
  down.close();
  up.close();
  deadline.stop();
  finish(decision.outcome == policy::Decision::Outcome::audit_deny ? "audit-deny" : "allow");
}

}  // namespace portcullis
