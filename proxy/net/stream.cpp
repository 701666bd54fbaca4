#include "proxy/net/stream.hpp"

#include <openssl/err.h>
#include <cerrno>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace portcullis::net {
namespace {
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// SSL_get_error() needs OpenSSL's error queue empty before each call; clearing it only when it
// holds something is cheaper than ERR_clear_error() on every read and write.
void clear_ssl_errors() {
  if (ERR_peek_error()) ERR_clear_error();
}

// The socket BIO's callback: after each read() OpenSSL makes, tells the EdgeReadiness what it
// found: bytes (fewer than asked: none left), nothing (EAGAIN), or an end of stream or error.
long note_socket_read(BIO* b, int oper, const char*, std::size_t len, int, long, int ret, std::size_t* processed) {
  if (oper != (BIO_CB_READ | BIO_CB_RETURN)) return ret;
  auto* rd = reinterpret_cast<EdgeReadiness*>(BIO_get_callback_arg(b));
  if (!rd) return ret;
  if (ret > 0 && processed) rd->note_read(*processed, len);
  else if (BIO_should_retry(b) && (errno == EAGAIN || errno == EWOULDBLOCK)) rd->note_drained();
  else rd->note_ended();
  return ret;
}
}  // namespace

TlsSocket::TlsSocket(tcp_socket socket, SSL_CTX* ctx, bool server) : socket_(std::move(socket)) {
  ssl_ = SSL_new(ctx);
  if (ssl_) {
    socket_.non_blocking(true);
    SSL_set_fd(ssl_, static_cast<int>(socket_.native_handle()));
    watch_reads();
    SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                           SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // One read() per TLS record instead of two (5-byte header, then the body); bytes read
    // ahead stay visible to has_buffered_data() (SSL_has_pending).
    SSL_set_read_ahead(ssl_, 1);
    if (server) SSL_set_accept_state(ssl_);
    else SSL_set_connect_state(ssl_);
  }
}

TlsSocket::~TlsSocket() {
  if (ssl_) SSL_free(ssl_);
}

TlsSocket::TlsSocket(TlsSocket&& o) noexcept
    : socket_(std::move(o.socket_)),
      ssl_(std::exchange(o.ssl_, nullptr)),
      sent_close_notify_(o.sent_close_notify_),
      rd_(std::move(o.rd_)) {
  watch_reads();
}

TlsSocket& TlsSocket::operator=(TlsSocket&& o) noexcept {
  if (this != &o) {
    if (ssl_) SSL_free(ssl_);
    rd_ = std::move(o.rd_);
    socket_ = std::move(o.socket_);
    ssl_ = std::exchange(o.ssl_, nullptr);
    sent_close_notify_ = o.sent_close_notify_;
    watch_reads();
  }
  return *this;
}

void TlsSocket::watch_reads() {
  rd_.bind(socket_);
  if (!ssl_) return;
  BIO* b = SSL_get_rbio(ssl_);
  if (!b) return;
  BIO_set_callback_ex(b, &note_socket_read);
  BIO_set_callback_arg(b, reinterpret_cast<char*>(&rd_));
}

bool TlsSocket::readable_now() {
  if (!rd_.maybe_readable) return false;
  pollfd p{static_cast<int>(socket_.native_handle()), POLLIN, 0};
  if (::poll(&p, 1, 0) != 0) return true;
  rd_.note_drained();
  return false;
}

error_code TlsSocket::last_error(int ret) {
  int e = SSL_get_error(ssl_, ret);
  switch (e) {
    case SSL_ERROR_ZERO_RETURN:
      return asio::error::eof;
    case SSL_ERROR_SYSCALL: {
      unsigned long err = ERR_get_error();
      if (err) return {static_cast<int>(err), asio::error::get_ssl_category()};
      int sys = errno;
      if (ret == 0 || sys == 0) return asio::ssl::error::stream_truncated;  // EOF without close_notify
      return {sys, boost::system::system_category()};
    }
    case SSL_ERROR_SSL: {
      unsigned long err = ERR_get_error();
      ERR_clear_error();
      return {static_cast<int>(err), asio::error::get_ssl_category()};
    }
    default:
      return asio::error::fault;
  }
}

awaitable<error_code> TlsSocket::wait_for(int ssl_error) {
  if (ssl_error == SSL_ERROR_WANT_WRITE) {
    auto [ec] = co_await socket_.async_wait(tcp_socket::wait_write, use_tuple);
    co_return ec;
  }
  if (readable_now()) co_return error_code{};
  auto [ec] = co_await rd_.async_wait(use_tuple);
  co_return ec;
}

awaitable<error_code> TlsSocket::handshake() {
  if (!ssl_) co_return asio::error::no_memory;
  for (;;) {
    if (!socket_.is_open()) co_return asio::error::bad_descriptor;
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_);
    if (r == 1) {
      // From now on, room for three full records per read(): a streamed body costs a third of
      // the reads. Not during the handshake, whose flights are small: a 49 KiB buffer per
      // connection being set up would only fragment the heap. The buffer exists only while a
      // read is in progress (SSL_MODE_RELEASE_BUFFERS), so it is freed and allocated again
      // each time a read empties it. Measured: four records (66,580 bytes) cost 10-16 % more
      // CPU per GB uploaded than three (benchmarks/README.md, session 10). Why is not known:
      // keeping the buffer for a whole body, so that no read frees it, was not faster
      // (session 11), so it is not the cost of freeing a 64 KiB chunk.
      SSL_set_default_read_buffer_len(ssl_, 3 * (SSL3_RT_MAX_PLAIN_LENGTH + SSL3_RT_MAX_ENCRYPTED_OVERHEAD + SSL3_RT_HEADER_LENGTH));
      co_return error_code{};
    }
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      if (auto ec = co_await wait_for(e)) co_return ec;
      continue;
    }
    co_return last_error(r);
  }
}

// SSL_read_ex / SSL_write_ex on a non-blocking socket: retry after waiting for whichever
// readiness OpenSSL asks for (a read may need to write, e.g. a TLS 1.3 KeyUpdate reply).
// OpenSSL holds the descriptor's number, not the socket: once the socket is closed (a deadline,
// a drain) that number may already belong to another connection, so nothing reaches OpenSSL
// after a close.
// read_some() and write_all() return this coroutine as is (they are not
// coroutines themselves): one coroutine frame per operation.
template <class Op>
awaitable<io_result> TlsSocket::retry_io(Op op, bool wait_to_read) {
  for (;;) {
    if (!socket_.is_open()) co_return io_result{asio::error::bad_descriptor, 0};
    clear_ssl_errors();
    std::size_t n = 0;
    int r = op(n);
    if (r == 1) co_return io_result{error_code{}, n};
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_WRITE) {
      auto [ec] = co_await socket_.async_wait(tcp_socket::wait_write, use_tuple);
      if (ec) co_return io_result{ec, 0};
      continue;
    }
    if (e == SSL_ERROR_WANT_READ) {
      if (readable_now()) continue;
      if (!wait_to_read) co_return io_result{asio::error::would_block, 0};
      auto [ec] = co_await rd_.async_wait(use_tuple);
      if (ec) co_return io_result{ec, 0};
      continue;
    }
    co_return io_result{last_error(r), 0};
  }
}

awaitable<io_result> TlsSocket::read_some(asio::mutable_buffer b, bool wait) {
  return retry_io([ssl = ssl_, b](std::size_t& n) {
    int r = SSL_read_ex(ssl, b.data(), b.size(), &n);
    if (r != 1) return r;
    // SSL_read returns one record (at most 16 KiB) per call. While more records are already
    // buffered (one read() with read-ahead brings several), decrypt them into the same buffer:
    // a body is then relayed in writes of up to the caller's size, not one per record.
    auto* p = static_cast<char*>(b.data());
    while (n < b.size() && SSL_has_pending(ssl)) {
      clear_ssl_errors();
      std::size_t more = 0;
      if (SSL_read_ex(ssl, p + n, b.size() - n, &more) != 1) {
        ERR_clear_error();  // WANT_READ (a partial record), close_notify or an error: the next call sees it
        break;
      }
      n += more;
    }
    return 1;
  }, wait);
}

awaitable<io_result> TlsSocket::write_all(asio::const_buffer b) {
  // The lambda keeps what is left to write across the waits; n reports the total.
  return retry_io([ssl = ssl_, b, total = b.size()](std::size_t& n) mutable {
    while (b.size() > 0) {
      std::size_t w = 0;
      int r = SSL_write_ex(ssl, b.data(), b.size(), &w);
      if (r != 1) return r;
      b += w;
    }
    n = total;
    return 1;
  });
}

awaitable<void> TlsSocket::shutdown_send() {
  // Closed: the descriptor number OpenSSL would write the alert to may be another connection's.
  if (sent_close_notify_ || !ssl_ || !socket_.is_open()) co_return;
  sent_close_notify_ = true;
  // One SSL_shutdown sends close_notify; we never wait for the peer's (it may keep sending).
  for (int tries = 0; tries < 8; ++tries) {
    ERR_clear_error();
    int r = SSL_shutdown(ssl_);
    if (r >= 0) break;
    int e = SSL_get_error(ssl_, r);
    if (e != SSL_ERROR_WANT_WRITE) break;
    if (co_await wait_for(e)) break;
  }
}

bool TlsSocket::has_buffered_data() const {
  return ssl_ && (SSL_has_pending(ssl_) || (SSL_get_shutdown(ssl_) & SSL_RECEIVED_SHUTDOWN));
}

bool Stream::is_open() const {
  return std::visit(
      [](const auto& s) -> bool {
        using T = std::decay_t<decltype(s)>;
        if constexpr (std::is_same_v<T, std::monostate>) return false;
        else if constexpr (std::is_same_v<T, TlsSocket>) return s.socket().is_open();
        else if constexpr (std::is_same_v<T, PlainTcp>) return s.socket.is_open();
        else return s.is_open();
      },
      v_);
}

awaitable<io_result> Stream::read_some(asio::mutable_buffer b, bool wait) {
  if (auto* t = std::get_if<TlsSocket>(&v_)) return t->read_some(b, wait);  // no frame of our own
  if (auto* t = std::get_if<PlainTcp>(&v_)) return read_tcp(*t, b, wait);
  return read_plain(b);
}

void Stream::async_wait_quiet(asio::any_completion_handler<void(error_code)> h) {
  if (auto* t = std::get_if<TlsSocket>(&v_)) return t->readiness().async_wait_quiet(std::move(h));
  if (auto* t = std::get_if<PlainTcp>(&v_)) return t->rd.async_wait_quiet(std::move(h));
  if (auto* u = std::get_if<unix_socket>(&v_)) return u->async_wait(unix_socket::wait_read, std::move(h));
  std::move(h)(asio::error::not_connected);  // no stream, so no executor to post to
}

namespace {
// One recv() on a socket EdgeReadiness watches: the bytes, or an end of stream (eof), or an
// error; would_block when it found nothing (and rd now knows the socket is empty).
io_result recv_once(PlainTcp& t, asio::mutable_buffer b) {
  for (;;) {
    ssize_t n = ::recv(t.socket.native_handle(), b.data(), b.size(), MSG_DONTWAIT);
    if (n > 0) {
      t.rd.note_read(static_cast<std::size_t>(n), b.size());
      return {error_code{}, static_cast<std::size_t>(n)};
    }
    if (n == 0) {
      t.rd.note_ended();
      return {asio::error::eof, 0};
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      t.rd.note_drained();
      return {asio::error::would_block, 0};
    }
    t.rd.note_ended();
    return {error_code(errno, boost::system::system_category()), 0};
  }
}
}  // namespace

awaitable<io_result> Stream::read_tcp(PlainTcp& t, asio::mutable_buffer b, bool wait) {
  if (b.size() == 0) co_return io_result{error_code{}, 0};
  for (;;) {
    if (!t.socket.is_open()) co_return io_result{asio::error::bad_descriptor, 0};
    if (t.rd.maybe_readable) {
      auto r = recv_once(t, b);
      if (r.first != asio::error::would_block || !wait) co_return r;
    } else if (!wait) {
      co_return io_result{asio::error::would_block, 0};
    }
    auto [ec] = co_await t.rd.async_wait(use_tuple);
    if (ec) co_return io_result{ec, 0};
  }
}

awaitable<io_result> Stream::read_plain(asio::mutable_buffer b) {
  if (auto* s = std::get_if<unix_socket>(&v_)) {
    auto [ec, n] = co_await s->async_read_some(b, use_tuple);
    co_return io_result{ec, n};
  }
  co_return io_result{asio::error::not_connected, 0};
}

namespace {
// An early read's result: into its slot, and to its waiter if one is already waiting.
void fill_slot(EarlyRead& slot, error_code ec, std::size_t n) {
  slot.done = true;
  slot.ec = ec;
  slot.n = n;
  if (slot.waiter) std::move(slot.waiter)(ec, n);
}

// The early read of a TCP stream: reads once the socket may hold bytes, until it finds some, an
// end of stream or an error, then fills the slot.
struct EarlyTcpRead {
  // Valid while the read is pending: a wake-up for a stream closed or replaced meanwhile reports
  // operation_aborted (EdgeReadiness), and then t is not touched.
  PlainTcp* t;
  asio::mutable_buffer b;
  std::shared_ptr<EarlyRead> slot;

  void try_read() const {
    auto [ec, n] = recv_once(*t, b);
    if (ec == asio::error::would_block) return wait();
    fill_slot(*slot, ec, n);
  }
  void wait() const {
    t->rd.async_wait([self = *this](const error_code& ec) {
      if (ec) return fill_slot(*self.slot, ec, 0);  // closed or cancelled: t may be gone
      self.try_read();
    });
  }
};
}  // namespace

std::shared_ptr<EarlyRead> Stream::start_early_read(asio::mutable_buffer b) {
  auto make_slot = [&] {
    auto slot = std::make_shared<EarlyRead>();
    slot->into = static_cast<const char*>(b.data());
    return slot;
  };
  if (auto* t = std::get_if<PlainTcp>(&v_)) {
    if (!t->socket.is_open() || b.size() == 0) return nullptr;
    EarlyTcpRead r{t, b, make_slot()};
    // Found empty (EAGAIN) by the last recv(), and no edge since: no byte and no end of stream
    // can be waiting, and no recv() is needed to find that out. Otherwise the recv() is the
    // check. Not `quiet` (a short read): a FIN that came with the last response's bytes would go
    // unseen, and an upstream that half-closed but still reads never answers (nor resets).
    if (!t->rd.maybe_readable) r.wait();
    else r.try_read();
    return r.slot;
  }
  if (auto* s = std::get_if<unix_socket>(&v_)) {
    if (!s->is_open()) return nullptr;
    auto slot = make_slot();
    s->async_read_some(b, [slot](const error_code& ec, std::size_t n) { fill_slot(*slot, ec, n); });
    return slot;
  }
  return nullptr;
}

awaitable<io_result> Stream::finish_early_read(std::shared_ptr<EarlyRead> slot) {
  if (slot->done) co_return io_result{slot->ec, slot->n};
  // The waiter owns this coroutine, and so the session, and the slot owns the waiter: this
  // frame gives up its share of the slot while it waits, and the result comes as the waiter's
  // arguments. Otherwise, when the pending read is destroyed instead of completed (its
  // io_context torn down after a drain's timeout, the upstream still silent), slot and
  // coroutine would keep each other alive: the whole session leaked.
  auto [ec, n] = co_await asio::async_initiate<decltype(use_tuple), void(error_code, std::size_t)>(
      [&slot](auto handler) {
        // Not by assignment: Boost 1.81's move assignment wraps the handler in itself, without end.
        asio::any_completion_handler<void(error_code, std::size_t)> h(std::move(handler));
        std::shared_ptr<EarlyRead> s = std::move(slot);  // not this frame's while it waits
        s->waiter.swap(h);
      },
      use_tuple);
  co_return io_result{ec, n};
}

awaitable<error_code> Stream::write_all(asio::const_buffer b) {
  if (auto* t = std::get_if<TlsSocket>(&v_)) {
    auto [ec, n] = co_await t->write_all(b);
    co_return ec;
  }
  if (auto* t = std::get_if<PlainTcp>(&v_)) {
    auto [ec, n] = co_await asio::async_write(t->socket, b, use_tuple);
    co_return ec;
  }
  if (auto* s = std::get_if<unix_socket>(&v_)) {
    auto [ec, n] = co_await asio::async_write(*s, b, use_tuple);
    co_return ec;
  }
  co_return asio::error::not_connected;
}

awaitable<void> Stream::shutdown_send() {
  error_code ignored;
  if (auto* t = std::get_if<TlsSocket>(&v_)) co_await t->shutdown_send();
  else if (auto* s = std::get_if<PlainTcp>(&v_)) s->socket.shutdown(tcp_socket::shutdown_send, ignored);
  else if (auto* u = std::get_if<unix_socket>(&v_)) u->shutdown(unix_socket::shutdown_send, ignored);
}

void Stream::close() {
  error_code ignored;
  if (auto* t = std::get_if<TlsSocket>(&v_)) {
    t->socket().close(ignored);
  } else if (auto* s = std::get_if<PlainTcp>(&v_)) {
    s->socket.close(ignored);
  } else if (auto* u = std::get_if<unix_socket>(&v_)) {
    u->close(ignored);
  }
}

SSL* Stream::ssl() const {
  if (auto* t = std::get_if<TlsSocket>(&v_)) return t->ssl();
  return nullptr;
}

tcp_socket* Stream::tcp() {
  if (auto* t = std::get_if<TlsSocket>(&v_)) return &t->socket();
  if (auto* s = std::get_if<PlainTcp>(&v_)) return &s->socket;
  return nullptr;
}

bool Stream::peer_closed_or_sent() const {
  int fd = -1;
  if (auto* t = std::get_if<TlsSocket>(&v_)) {
    if (t->has_buffered_data()) return true;
    if (!t->readiness().maybe_readable) return false;  // found empty, no edge since (no syscall)
    fd = static_cast<int>(const_cast<TlsSocket&>(*t).socket().native_handle());
  } else if (auto* s = std::get_if<PlainTcp>(&v_)) {
    if (!s->rd.maybe_readable) return false;
    fd = static_cast<int>(const_cast<tcp_socket&>(s->socket).native_handle());
  } else if (auto* u = std::get_if<unix_socket>(&v_)) {
    fd = static_cast<int>(const_cast<unix_socket&>(*u).native_handle());
  }
  if (fd < 0) return true;
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) != 0;  // readable (data or EOF) or error: an idle connection must be silent
}

}  // namespace portcullis::net
