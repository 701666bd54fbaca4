#pragma once
// Byte streams for both sides of the proxy: TCP, unix sockets, and TLS over TCP.
//
// TLS is OpenSSL driving a non-blocking socket directly (its own socket BIO), woken by
// asio's reactor: no BIO pair and no two 17 KiB staging buffers per connection as
// asio::ssl::stream keeps, and SSL_MODE_RELEASE_BUFFERS frees record buffers while a
// connection is idle. It also lets us send close_notify for a half-close without waiting for
// the peer's (asio's async_shutdown waits), which a TCP relay needs.
#include <openssl/ssl.h>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/buffer.hpp>
#include <memory>
#include <string>
#include <utility>
#include <variant>

#include "proxy/net/edge_wait.hpp"
#include "proxy/net/socket_types.hpp"

namespace portcullis::net {

using io_result = std::pair<error_code, std::size_t>;

class TlsSocket {
 public:
  // Takes its own reference on ctx. server: accept, else connect.
  TlsSocket(tcp_socket socket, SSL_CTX* ctx, bool server);
  ~TlsSocket();
  TlsSocket(const TlsSocket&) = delete;
  TlsSocket& operator=(const TlsSocket&) = delete;
  // Moves only while no operation is pending (a Stream going into or out of the pool): OpenSSL
  // holds the file descriptor, which the move keeps.
  // The standing read watch (EdgeReadiness) moves with it.
  TlsSocket(TlsSocket&& o) noexcept;
  TlsSocket& operator=(TlsSocket&& o) noexcept;

  awaitable<error_code> handshake();
  // wait = false: would_block instead of waiting when OpenSSL needs bytes the socket lacks.
  awaitable<io_result> read_some(asio::mutable_buffer b, bool wait = true);
  // Writes all of b, or fails; the result's size is b.size() on success.
  awaitable<io_result> write_all(asio::const_buffer b);
  // Sends close_notify (once); reading stays possible (a TLS half-close).
  awaitable<void> shutdown_send();

  SSL* ssl() const { return ssl_; }
  // What OpenSSL's reads and the edges since tell of the socket (EdgeReadiness). Waits for
  // readability go through it: asio's async_wait(wait_read) would queue behind its standing
  // watch and never complete.
  EdgeReadiness& readiness() { return rd_; }
  const EdgeReadiness& readiness() const { return rd_; }
  tcp_socket& socket() { return socket_; }
  const tcp_socket& socket() const { return socket_; }
  // Something the next read reports without the socket: bytes OpenSSL already holds, or the
  // peer's close_notify, read with the last bytes before it (a pooled connection must have
  // neither; an idle one must not wait for the socket then).
  bool has_buffered_data() const;

 private:
  awaitable<error_code> wait_for(int ssl_error);
  template <class Op>
  awaitable<io_result> retry_io(Op op, bool wait_to_read = true);
  error_code last_error(int ret);
  // Before a wait for a read: true when the socket holds bytes after all (OpenSSL asked to
  // wait although its last read() was not found empty; asks the kernel).
  bool readable_now();
  void watch_reads();  // binds rd_ to socket_ and points the socket BIO's read callback at it

  tcp_socket socket_;
  SSL* ssl_ = nullptr;
  bool sent_close_notify_ = false;
  EdgeReadiness rd_;  // after socket_: gone before the socket closes
};

// A read started before its result is wanted, on a plain (TCP or unix) socket. Started on a
// kept upstream connection before the request is written, asio's first, speculative recv()
// is the check that the upstream has neither closed the connection nor sent bytes nobody
// asked for (it must find nothing: EAGAIN), and the response then arrives into the same read
// when the reactor reports it, without a second recv() that would find nothing yet. The
// completion handler shares this slot, so the slot outlives a session that ends first.
struct EarlyRead {
  bool done = false;
  error_code ec;
  std::size_t n = 0;
  const char* into = nullptr;  // where the bytes go
  // finish_early_read()'s coroutine (and so the session): while it waits here, nothing the
  // coroutine owns may hold the slot, or the two keep each other alive (finish_early_read).
  asio::any_completion_handler<void(error_code, std::size_t)> waiter;
};

// A TCP socket we read ourselves (recv), with the readiness EdgeReadiness tracks: a read or a
// wait that would find nothing costs no system call.
struct PlainTcp {
  explicit PlainTcp(tcp_socket s) : socket(std::move(s)) { rd.bind(socket); }
  PlainTcp(PlainTcp&& o) noexcept : socket(std::move(o.socket)), rd(std::move(o.rd)) { rd.bind(socket); }
  PlainTcp& operator=(PlainTcp&& o) noexcept {
    rd = std::move(o.rd);
    socket = std::move(o.socket);
    rd.bind(socket);
    return *this;
  }
  tcp_socket socket;
  EdgeReadiness rd;  // after socket: gone before the socket closes
};

class Stream {
 public:
  Stream() = default;
  explicit Stream(tcp_socket s) : v_(std::in_place_type<PlainTcp>, std::move(s)) {}
  explicit Stream(unix_socket s) : v_(std::move(s)) {}
  // TLS over s (server: accept, else connect); the handshake is tls()->handshake(). The TLS
  // socket lives inside the stream, not in a heap block of its own: 64 bytes fewer per
  // connection.
  struct tls_over_t {};
  static constexpr tls_over_t tls_over{};
  Stream(tls_over_t, tcp_socket s, SSL_CTX* ctx, bool server)
      : v_(std::in_place_type<TlsSocket>, std::move(s), ctx, server) {}
  Stream(Stream&&) = default;
  Stream& operator=(Stream&&) = default;

  bool is_open() const;
  // wait = false (TCP and TLS): would_block instead of waiting when no byte has come. For a
  // connection woken from idle: an edge may announce bytes an earlier read already took.
  awaitable<io_result> read_some(asio::mutable_buffer b, bool wait = true);
  // Completes once bytes may be waiting, without reading: for a connection idle between
  // requests. On TCP and TLS, EdgeReadiness::async_wait_quiet (no system call when the last
  // read found the socket empty; a close that came with the last bytes may go unseen, which the
  // idle connection's ColdPoll catches). The only way to wait on those streams: asio's
  // async_wait would queue behind EdgeReadiness's standing watch.
  void async_wait_quiet(asio::any_completion_handler<void(error_code)> h);
  // Starts reading into b and returns the slot its result goes to; null, with nothing started,
  // on a TLS stream (OpenSSL reads the socket itself) or a closed one. b must stay valid until
  // the result is in the slot: closing the stream completes the read with operation_aborted.
  // On TCP the first recv() is skipped only when the last one found the socket empty (EAGAIN,
  // EdgeReadiness::maybe_readable): a short read does not tell that no FIN is waiting, and an
  // upstream that half-closed and still reads would never answer the request written next.
  std::shared_ptr<EarlyRead> start_early_read(asio::mutable_buffer b);
  // The result of a read start_early_read() began, waiting for it if it has none yet.
  static awaitable<io_result> finish_early_read(std::shared_ptr<EarlyRead> slot);
  // Writes all of b (or fails).
  awaitable<error_code> write_all(asio::const_buffer b);
  // Half-close: FIN on TCP and unix sockets, close_notify on TLS.
  awaitable<void> shutdown_send();
  void close();

  SSL* ssl() const;  // null unless TLS
  TlsSocket* tls() { return std::get_if<TlsSocket>(&v_); }  // null unless TLS
  // The TCP socket underneath (null for a unix socket).
  tcp_socket* tcp();
  // True when the peer has closed or sent unsolicited bytes: a pooled idle upstream connection
  // in that state must not be reused. No poll() when the last read found the socket empty.
  bool peer_closed_or_sent() const;

 private:
  awaitable<io_result> read_plain(asio::mutable_buffer b);  // unix sockets (asio reads them)
  static awaitable<io_result> read_tcp(PlainTcp& t, asio::mutable_buffer b, bool wait);
  std::variant<std::monostate, PlainTcp, unix_socket, TlsSocket> v_;
};

}  // namespace portcullis::net
