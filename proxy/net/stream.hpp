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
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <memory>
#include <string>
#include <utility>
#include <variant>

namespace portcullis::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
// Sockets are bound to their worker's io_context, not to any_io_executor: the executor is 8 bytes
// instead of 56 in every socket and in every operation pending on one (a tcp socket is 40 bytes
// instead of 88), which an idle connection holds two or three of.
using executor = asio::io_context::executor_type;
using tcp_socket = asio::basic_stream_socket<tcp, executor>;
using tcp_acceptor = asio::basic_socket_acceptor<tcp, executor>;
using unix_socket = asio::basic_stream_socket<asio::local::stream_protocol, executor>;
using error_code = boost::system::error_code;
template <class T>
using awaitable = asio::awaitable<T>;
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
  TlsSocket(TlsSocket&& o) noexcept
      : socket_(std::move(o.socket_)), ssl_(std::exchange(o.ssl_, nullptr)), sent_close_notify_(o.sent_close_notify_) {}
  TlsSocket& operator=(TlsSocket&& o) noexcept;

  awaitable<error_code> handshake();
  awaitable<io_result> read_some(asio::mutable_buffer b);
  // Writes all of b, or fails; the result's size is b.size() on success.
  awaitable<io_result> write_all(asio::const_buffer b);
  // Sends close_notify (once); reading stays possible (a TLS half-close).
  awaitable<void> shutdown_send();

  SSL* ssl() const { return ssl_; }
  tcp_socket& socket() { return socket_; }
  const tcp_socket& socket() const { return socket_; }
  // Bytes OpenSSL already decrypted and holds (a pooled connection must have none).
  bool has_buffered_data() const;

 private:
  awaitable<error_code> wait_for(int ssl_error);
  template <class Op>
  awaitable<io_result> retry_io(Op op);
  error_code last_error(int ret);

  tcp_socket socket_;
  SSL* ssl_ = nullptr;
  bool sent_close_notify_ = false;
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
  asio::any_completion_handler<void()> waiter;
};

class Stream {
 public:
  Stream() = default;
  explicit Stream(tcp_socket s) : v_(std::move(s)) {}
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
  awaitable<io_result> read_some(asio::mutable_buffer b);
  // Starts reading into b and returns the slot its result goes to; null, with nothing started,
  // on a TLS stream (OpenSSL reads the socket itself) or a closed one. b must stay valid until
  // the result is in the slot: closing the stream completes the read with operation_aborted.
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
  // in that state must not be reused.
  bool peer_closed_or_sent() const;

 private:
  awaitable<io_result> read_plain(asio::mutable_buffer b);  // tcp and unix sockets
  std::variant<std::monostate, tcp_socket, unix_socket, TlsSocket> v_;
};

}  // namespace portcullis::net
