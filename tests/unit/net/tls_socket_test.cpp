// net::TlsSocket after its socket is closed: OpenSSL reads and writes the descriptor by number,
// and a closed socket's number is handed to the next socket the process opens. A connection
// closed by a deadline or a drain still runs its clean end (close_notify) and may still try to
// write a response; none of that may reach the descriptor that now has its number.
#include <signal.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <catch2/catch.hpp>
#include <cerrno>
#include <optional>
#include <string>

#include "certs/tls.hpp"
#include "proxy/net/stream.hpp"
#include "tests/unit/certs/test_support.hpp"

namespace asio = boost::asio;
using namespace portcullis::certs;
using namespace portcullis::certs::testing;
using portcullis::net::Stream;
using portcullis::net::tcp_socket;
using namespace std::chrono_literals;

namespace {
const std::vector<std::string> http11{"http/1.1"};

// A server and a client Stream over loopback TCP, TLS 1.3 handshake done.
struct TlsPair {
  ScratchDir scratch;
  asio::io_context ioc;
  SslCtxPtr server_ctx, client_ctx;
  Stream server, client;

  TlsPair() {
    ::signal(SIGPIPE, SIG_IGN);  // as the proxy does (proxy/main.cpp)
    auto ca = make_ca(scratch);
    IssueOptions so;
    so.name = "server";
    so.dns = {"localhost"};
    so.client = false;
    IssueOptions co;
    co.name = "client";
    co.cn = "alice";
    co.server = false;
    server_ctx = make_server_context(issue_bundle(ca, scratch.path, so), ClientCertMode::required, http11);
    client_ctx = make_client_context(issue_bundle(ca, scratch.path, co), http11);
    asio::ip::tcp::acceptor acc(ioc, {asio::ip::address_v4::loopback(), 0});
    tcp_socket a(ioc.get_executor()), b(ioc.get_executor());
    b.connect(acc.local_endpoint());
    acc.accept(a);
    server = Stream(Stream::tls_over, std::move(a), server_ctx.get(), true);
    client = Stream(Stream::tls_over, std::move(b), client_ctx.get(), false);
    std::optional<boost::system::error_code> s_ec, c_ec;
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> { s_ec = co_await server.tls()->handshake(); }, asio::detached);
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> { c_ec = co_await client.tls()->handshake(); }, asio::detached);
    ioc.run_for(5s);
    REQUIRE(s_ec.has_value());
    REQUIRE(c_ec.has_value());
    REQUIRE(!*s_ec);
    REQUIRE(!*c_ec);
  }

  void run(asio::awaitable<void> a) {
    ioc.restart();
    asio::co_spawn(ioc, std::move(a), asio::detached);
    ioc.run_for(1s);
  }
};

// Bytes waiting on fd, without blocking (0 when none).
long waiting(int fd) {
  char buf[256];
  long n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
  return n;
}
}  // namespace

TEST_CASE("a closed TLS socket sends nothing to the descriptor that reuses its number") {
  TlsPair p;
  const int old_fd = static_cast<int>(p.server.tcp()->native_handle());
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  // Non-blocking, so that a read OpenSSL wrongly makes there fails here rather than hangs (in
  // the proxy it could block a whole worker: an accepted socket is blocking until asio's first
  // operation on it).
  REQUIRE(::fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
  p.server.close();
  // Another connection gets the number OpenSSL still holds (as accept() or connect() in another
  // worker thread may, at any moment): here placed there by dup2.
  REQUIRE(::dup2(sv[0], old_fd) == old_fd);
  ::close(sv[0]);
  sv[0] = old_fd;

  std::optional<boost::system::error_code> write_ec, read_ec;
  bool shut = false;
  p.run([&]() -> asio::awaitable<void> {
    write_ec = co_await p.server.write_all(asio::buffer(std::string("HTTP/1.1 504 Gateway Timeout\r\n\r\n")));
    char buf[64];
    auto [ec, n] = co_await p.server.read_some(asio::buffer(buf));
    read_ec = ec;
    co_await p.server.shutdown_send();  // the clean end a session runs after a deadline closed it
    shut = true;
  }());
  CHECK(shut);
  REQUIRE(write_ec.has_value());
  CHECK(*write_ec == asio::error::bad_descriptor);
  REQUIRE(read_ec.has_value());
  CHECK(*read_ec == asio::error::bad_descriptor);
  CHECK(waiting(sv[1]) == 0);  // no record, no close_notify in someone else's connection
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST_CASE("an open TLS socket still sends close_notify and data") {
  TlsPair p;
  std::optional<boost::system::error_code> write_ec;
  std::string got;
  p.run([&]() -> asio::awaitable<void> {
    write_ec = co_await p.server.write_all(asio::buffer(std::string("hello")));
    co_await p.server.shutdown_send();
    char buf[64];
    auto [ec, n] = co_await p.client.read_some(asio::buffer(buf));
    got.assign(buf, n);
    auto [ec2, n2] = co_await p.client.read_some(asio::buffer(buf));
    CHECK(ec2 == asio::error::eof);  // the close_notify arrived
  }());
  REQUIRE(write_ec.has_value());
  CHECK(!*write_ec);
  CHECK(got == "hello");
}
