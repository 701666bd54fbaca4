#pragma once
// Waiting for a socket to become readable without a system call per wait.
//
// asio's socket.async_wait(wait_read) re-arms the descriptor in its epoll set on every call
// (epoll_ctl MOD): it cannot know whether bytes arrived while nothing waited, because the
// reactor registers sockets edge-triggered and remembers an edge only for its own reads. A TLS
// socket is read by OpenSSL, not by asio, so every wait of a kept-alive connection cost that
// syscall: one in six of a proxied request's system calls (benchmarks/README.md, session 14).
//
// EdgeReadiness keeps one read operation of its own queued in asio's reactor for as long as the
// socket is registered there. The reactor calls it at every readiness edge, and it never
// completes on one: it notes the edge, and wakes the waiter if there is one. With that, and with
// what the owner's reads report (note_read, note_drained, note_ended), a wait needs no system
// call when no edge came since the socket was last found empty: the next byte brings one. asio's
// detail API is used for this (Boost 1.81's epoll reactor, checked at compile time); nothing
// else reads through asio on a socket that uses it.
//
// What a read found is not all the same. EAGAIN (maybe_readable false) means nothing at all is
// waiting. A short read (quiet) means no byte is, but says nothing of a FIN that came in the same
// edge as those bytes; asio does not register EPOLLRDHUP, which would tell. So `quiet` is trusted
// only by an idle client connection's wait, whose close the idle sweep catches (1-2 s later);
// reading a stream to its end, and checking a kept upstream connection, need EAGAIN.
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>

#include "proxy/net/socket_types.hpp"

namespace portcullis::net {

class EdgeWatch;  // the queued operation (edge_wait.cpp)

class EdgeReadiness {
 public:
  EdgeReadiness() = default;
  EdgeReadiness(const EdgeReadiness&) = delete;
  EdgeReadiness& operator=(const EdgeReadiness&) = delete;
  EdgeReadiness(EdgeReadiness&& o) noexcept;
  EdgeReadiness& operator=(EdgeReadiness&& o) noexcept;
  ~EdgeReadiness();

  // The socket this watches; its owner calls this again after every move of either.
  void bind(tcp_socket& s) { sock_ = &s; }

  // What the owner knows of the socket, from its own reads and the edges since. Both are
  // "unknown" (true, false) after any edge and whenever no watch is queued; unknown is always safe.
  //
  // maybe_readable: false only while a read() found the socket empty (EAGAIN) and no edge has
  // come since. Then nothing at all can be read: no byte, no end of stream.
  bool maybe_readable = true;
  // quiet: true while the last read() returned fewer bytes than it asked for, or found nothing,
  // and no edge has come since: no byte is waiting. An end of stream or an error may be, when
  // the peer's FIN came with its last bytes (one edge for both, seen before that read).
  bool quiet = false;

  // A read() on the socket returned n > 0 bytes of the `asked`.
  void note_read(std::size_t n, std::size_t asked) {
    if (n < asked) quiet = install();
    else quiet = false;
  }
  // A read() found the socket empty (EAGAIN). From now on the watch must see every edge: it is
  // queued now, in the same turn as the read, so no edge can have come and gone unseen.
  void note_drained() {
    const bool watched = install();
    maybe_readable = !watched;
    quiet = watched;
  }
  // A read() reported the end of the stream or an error: the next one reports it again.
  void note_ended() {
    maybe_readable = true;
    quiet = false;
  }

  // Calls h(success) once the socket may be readable: at once (posted) when maybe_readable,
  // else at the next edge. h gets operation_aborted when the socket's operations are cancelled
  // (cancel(), release()) or it is closed, and bad_descriptor if it already is. One wait at a
  // time; asio's own read operations must not be used on the same socket while one is queued.
  template <class Token>
  auto async_wait(Token&& token) {
    return initiate(std::forward<Token>(token), false);
  }
  // The same, but trusting `quiet`: waits for an edge unless bytes may be waiting. Only for a
  // wait that learns of a close some other way (an idle client connection: the idle sweep).
  template <class Token>
  auto async_wait_quiet(Token&& token) {
    return initiate(std::forward<Token>(token), true);
  }

 private:
  friend class EdgeWatch;
  template <class Token>
  auto initiate(Token&& token, bool trust_quiet) {
    return asio::async_initiate<Token, void(error_code)>(
        [this, trust_quiet](auto handler) {
          // Not by assignment: Boost 1.81's move assignment wraps the handler in itself, without end.
          asio::any_completion_handler<void(error_code)> h(std::move(handler));
          start(std::move(h), trust_quiet);
        },
        token);
  }
  void start(asio::any_completion_handler<void(error_code)> h, bool trust_quiet);
  bool install();  // queues a watch (no system call); false if the socket is closed
  tcp_socket* sock_ = nullptr;
  EdgeWatch* watch_ = nullptr;  // queued in the reactor (or its cancellation is on the way)
};

}  // namespace portcullis::net
