// net::EdgeReadiness through net::Stream, on real loopback sockets and a real io_context: the
// standing read watch in asio's reactor that lets a TCP or TLS stream wait for its next bytes
// without an epoll_ctl, and read a kept connection without a recv() that finds nothing. What
// must hold: no byte and no end of stream is ever missed by a read, waits end when the socket
// is cancelled, closed or replaced, and a wait that trusts `quiet` waits only when nothing came.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <thread>

#include "proxy/net/stream.hpp"
#include "tests/unit/net/loopback_pair.hpp"

namespace asio = boost::asio;
using portcullis::net::Stream;
using portcullis::net::tcp_socket;
using boost::system::error_code;
using namespace std::chrono_literals;

namespace {
using Pair = portcullis::net::testing::LoopbackPair;

using Read = std::optional<std::pair<error_code, std::string>>;

// Reads once in a coroutine, as the sessions do, into `out`.
void read_in_coroutine(Pair& p, Stream& s, Read& out, bool wait = true) {
  out.reset();
  asio::co_spawn(
      p.ioc,
      [&s, &out, wait]() -> asio::awaitable<void> {
        char buf[64];
        auto [ec, n] = co_await s.read_some(asio::buffer(buf), wait);
        out.emplace(ec, std::string(buf, n));
      },
      asio::detached);
}

// A read that is expected to end within a while: its result (empty if it is still waiting).
Read read_now(Pair& p, Stream& s, bool wait = true) {
  Read got;
  read_in_coroutine(p, s, got, wait);
  p.run_a_while();
  return got;
}
}  // namespace

TEST_CASE("edge readiness: a read that found the socket empty gets the next bytes, and the ones after") {
  Pair p;
  Stream s(std::move(p.ours));
  Read got;
  read_in_coroutine(p, s, got);
  p.run_a_while();
  CHECK_FALSE(got);  // nothing yet: waiting

  p.send("first");
  p.run_a_while();
  REQUIRE(got);
  CHECK(!got->first);
  CHECK(got->second == "first");

  // Sent while nobody waits: the watch notes the edge, and the next read does not wait for another.
  p.send("second");
  p.run_a_while();
  got = read_now(p, s);
  REQUIRE(got);
  CHECK(got->second == "second");
}

TEST_CASE("edge readiness: an end of stream that came with the last bytes still ends the next read") {
  // One edge for both: the read that takes the bytes returns fewer than it asked for, and a
  // stream read to its end must still see the FIN behind them (the TCP relay's half-close).
  Pair p;
  Stream s(std::move(p.ours));
  Read got;
  read_in_coroutine(p, s, got);
  p.run_a_while();
  asio::write(p.peer, asio::buffer(std::string("tail")));
  p.peer.shutdown(asio::ip::tcp::socket::shutdown_send);
  std::this_thread::sleep_for(10ms);
  p.run_a_while();
  REQUIRE(got);
  CHECK(got->second == "tail");
  got = read_now(p, s);
  REQUIRE(got);
  CHECK(got->first == asio::error::eof);
}

TEST_CASE("edge readiness: a quiet wait waits only when the last read found nothing more") {
  Pair p;
  Stream s(std::move(p.ours));
  auto done = std::make_shared<std::optional<error_code>>();
  auto wait = [&] {
    done->reset();
    s.async_wait_quiet([done](error_code ec) { *done = ec; });
  };

  // A stream nobody has read yet: unknown, so the wait completes at once.
  wait();
  p.run_a_while();
  REQUIRE(*done);
  CHECK(!**done);

  // After reads that took everything: the wait lasts until bytes come. (The first read's own
  // edge may be reported after it: a wake-up that finds nothing, which the session's first read
  // after a wake-up, one that must not wait, turns back into idle. The second read here is that.)
  p.send("request");
  Read got = read_now(p, s);
  REQUIRE(got);
  CHECK(got->second == "request");
  got = read_now(p, s, false);
  REQUIRE(got);
  CHECK(got->first == asio::error::would_block);
  wait();
  p.run_a_while();
  CHECK_FALSE(*done);
  p.send("next");
  p.run_a_while();
  REQUIRE(*done);
  CHECK(!**done);

  got = read_now(p, s);
  REQUIRE(got);
  CHECK(got->second == "next");
}

TEST_CASE("edge readiness: cancel and close end a pending wait, and waits work again after a cancel") {
  Pair p;
  Stream s(std::move(p.ours));
  Read got;
  read_in_coroutine(p, s, got);
  p.run_a_while();
  REQUIRE_FALSE(got);
  error_code ignored;
  s.tcp()->cancel(ignored);  // what IdleParking's sweep does before moving a connection out of asio
  p.run_a_while();
  REQUIRE(got);
  CHECK(got->first == asio::error::operation_aborted);

  // The watch went with the cancel; the next read queues a new one.
  read_in_coroutine(p, s, got);
  p.run_a_while();
  CHECK_FALSE(got);
  p.send("after");
  p.run_a_while();
  REQUIRE(got);
  CHECK(got->second == "after");

  read_in_coroutine(p, s, got);
  p.run_a_while();
  REQUIRE_FALSE(got);
  s.close();
  p.run_a_while();
  REQUIRE(got);
  CHECK(got->first == asio::error::operation_aborted);
}

TEST_CASE("edge readiness: a wake-up for a stream replaced before it runs reports operation_aborted") {
  // An edge posts the waiter's wake-up; if the stream is closed and another put in its place
  // before that runs (a session swapping upstream connections), the waiter must not be told
  // that the new socket is readable.
  Pair p;
  auto s = std::make_unique<Stream>(std::move(p.ours));
  Read got = read_now(p, *s, false);  // nothing: the socket is known empty, the watch queued
  REQUIRE(got);
  REQUIRE(got->first == asio::error::would_block);

  auto done = std::make_shared<std::optional<error_code>>();
  s->async_wait_quiet([done](error_code ec) { *done = ec; });
  p.send("y");
  // One handler: the reactor's report for this socket, whose edge posts the wake-up.
  p.ioc.restart();
  REQUIRE(p.ioc.poll_one() == 1);
  REQUIRE_FALSE(*done);
  *s = Stream();  // closed and replaced before the wake-up runs
  p.run_a_while();
  REQUIRE(*done);
  CHECK(**done == asio::error::operation_aborted);
}
