#pragma once
// One worker = one thread, one io_context, its own acceptors and upstream pool. Connections
// never move between workers; the only thing shared is the immutable Snapshot.
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>

#include "certs/tls.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/observe/metrics.hpp"
#include "proxy/snapshot.hpp"
#include "proxy/upstream.hpp"

namespace portcullis {

// The connections of a worker waiting for their next request (proxy/http/session.cpp): closed
// at once when the worker drains, freed with the worker.
struct IdleConnections {
  virtual ~IdleConnections() = default;
  virtual void close_all() = 0;
};

// Members are destroyed in reverse order. A connection still busy when the worker is torn down
// (a drain that timed out) is a coroutine frame that ~io_context destroys, so the state such a
// frame may touch (snapshot, identities, metrics, counters) is declared before `ioc` and
// outlives it; what holds sockets (the pool, the idle connections) is declared after it and
// goes first, while the io_context still exists.
struct Worker {
  unsigned index = 0;
  std::shared_ptr<const Snapshot> snapshot;  // replaced by a posted message on reload
  // Identities of verified client certificates, shared by the connections presenting the same one.
  certs::PeerIdentityCache identities;
  bool draining = false;
  std::atomic<std::uint64_t> active{0};
  // Only touched on this worker's thread; the admin endpoint posts here to copy it.
  observe::MetricSet metrics;
  // One thread runs it, and every socket and timer of this worker is touched on that thread
  // only: other threads post() to it (a reload, a handed-over connection, a drain, a metrics
  // copy), and posting stays locked. So asio's per-socket reactor lock is off (UNSAFE_IO): two
  // lock/unlock pairs fewer per socket operation (callgrind: about 6 per keep-alive request).
  boost::asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO};
  UpstreamPool pool;
  // Made when the first connection goes idle. Last, so that it is destroyed first: the
  // connections it owns still find the io_context and the rest of the worker.
  std::unique_ptr<IdleConnections> idle;

  void drain() {
    draining = true;
    if (idle) idle->close_all();
    pool.clear();
  }
};

// Entry points for one accepted connection (proxy/http/session.cpp, proxy/tcp/relay.cpp).
// serve_http runs the connection on w's thread and calls `ended` when it is over (not when the
// worker is torn down with the connection still open).
// The owner is the connection's listener group, kept alive by the connection: one 16-byte pointer
// per connection instead of a callback and its arguments.
struct ConnectionOwner {
  virtual void connection_ended(Worker& w) = 0;

 protected:
  ~ConnectionOwner() = default;
};
using ConnectionEnded = std::shared_ptr<ConnectionOwner>;
void serve_http(Worker& w, std::string listener, net::tcp_socket socket, ConnectionEnded ended);
boost::asio::awaitable<void> serve_tcp(Worker& w, std::string listener, net::tcp_socket socket);

// Copies bytes both ways until both directions end; half-closes are passed on. idle_ms bounds
// the time with no bytes in either direction (0 = none). Returns {bytes a->b, bytes b->a}.
boost::asio::awaitable<std::pair<std::uint64_t, std::uint64_t>> relay(net::Stream& a, net::Stream& b,
                                                                       std::uint64_t idle_ms);

}  // namespace portcullis
