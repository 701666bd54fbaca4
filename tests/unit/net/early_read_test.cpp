// net::Stream's early read (start_early_read / finish_early_read) on real loopback sockets and
// a real io_context: the read a session starts on a kept upstream connection before writing a
// request. Its first recv must report bytes already waiting (an unsolicited response) and an
// end of stream at once, must wait otherwise, and its slot must outlive the stream.
#include <openssl/ssl.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "proxy/net/stream.hpp"
#include "tests/unit/net/loopback_pair.hpp"

namespace asio = boost::asio;
using portcullis::net::EarlyRead;
using portcullis::net::Stream;
using portcullis::net::tcp_socket;
using namespace std::chrono_literals;

namespace {
using Pair = portcullis::net::testing::LoopbackPair;

using Result = std::optional<std::pair<boost::system::error_code, std::string>>;

// Awaits the slot's result in a coroutine, as the session does, and puts it in `out`.
void finish_in_coroutine(asio::io_context& ioc, std::shared_ptr<EarlyRead> slot, const char* buf, Result& out) {
  asio::co_spawn(
      ioc,
      [slot, buf, &out]() -> asio::awaitable<void> {
        auto [ec, n] = co_await Stream::finish_early_read(slot);
        out.emplace(ec, std::string(buf, n));
      },
      asio::detached);
}
}  // namespace

TEST_CASE("early read: bytes already waiting complete it at once, before anything is written") {
  Pair p;
  asio::write(p.peer, asio::buffer(std::string("STRAY")));
  std::this_thread::sleep_for(20ms);  // on loopback the bytes are in our receive queue by now
  Stream s(std::move(p.ours));
  char buf[64];
  auto slot = s.start_early_read(asio::buffer(buf));
  REQUIRE(slot);
  CHECK(slot->into == buf);
  p.run_a_while();
  REQUIRE(slot->done);
  CHECK(!slot->ec);
  CHECK(std::string(buf, slot->n) == "STRAY");
}

TEST_CASE("early read: a peer that closed completes it with end of stream") {
  Pair p;
  p.peer.close();
  std::this_thread::sleep_for(20ms);
  Stream s(std::move(p.ours));
  char buf[64];
  auto slot = s.start_early_read(asio::buffer(buf));
  REQUIRE(slot);
  p.run_a_while();
  REQUIRE(slot->done);
  CHECK(slot->ec == asio::error::eof);
  CHECK(slot->n == 0);
}

TEST_CASE("early read: with nothing waiting it stays pending, and the answer arrives into it") {
  Pair p;
  Stream s(std::move(p.ours));
  char buf[64];
  auto slot = s.start_early_read(asio::buffer(buf));
  REQUIRE(slot);
  p.run_a_while();
  CHECK_FALSE(slot->done);  // a kept connection that is clean: the request may be written

  // Awaited before the answer comes: the coroutine waits, then gets exactly the answer.
  Result got;
  finish_in_coroutine(p.ioc, slot, buf, got);
  p.run_a_while();
  CHECK_FALSE(got);
  asio::write(p.peer, asio::buffer(std::string("HTTP/1.1 200 OK\r\n\r\n")));
  for (int i = 0; i < 40 && !got; ++i) p.run_a_while();
  REQUIRE(got);
  CHECK(!got->first);
  CHECK(got->second == "HTTP/1.1 200 OK\r\n\r\n");

  // Awaited after it completed: the result is returned without waiting.
  auto again = s.start_early_read(asio::buffer(buf));
  REQUIRE(again);
  asio::write(p.peer, asio::buffer(std::string("second")));
  for (int i = 0; i < 40 && !again->done; ++i) p.run_a_while();
  REQUIRE(again->done);
  Result got2;
  finish_in_coroutine(p.ioc, again, buf, got2);
  p.run_a_while();
  REQUIRE(got2);
  CHECK(got2->second == "second");
}

TEST_CASE("early read: closing the stream aborts it, and its slot outlives the stream") {
  Pair p;
  char buf[64];
  std::shared_ptr<EarlyRead> slot;
  Result got;
  {
    Stream s(std::move(p.ours));
    slot = s.start_early_read(asio::buffer(buf));
    REQUIRE(slot);
    finish_in_coroutine(p.ioc, slot, buf, got);
    p.run_a_while();
    CHECK_FALSE(got);
    s.close();
  }  // the stream is gone; the completion still has the slot
  p.run_a_while();
  REQUIRE(slot->done);
  CHECK(slot->ec == asio::error::operation_aborted);
  REQUIRE(got);
  CHECK(got->first == asio::error::operation_aborted);
  // Bytes sent afterwards go nowhere: the read is over.
  boost::system::error_code ignored;
  asio::write(p.peer, asio::buffer(std::string("late")), ignored);
  p.run_a_while();
  CHECK(slot->n == 0);
}

TEST_CASE("early read: destroyed unfinished with its io_context, it frees the coroutine waiting on it") {
  // A drain that times out: the worker's io_context is destroyed while a session waits for a
  // kept upstream connection's response. The read's handler is destroyed, not called, and the
  // slot, the coroutine and what the coroutine owns (the session, its stream) must go with it.
  char buf[64];
  auto p = std::make_unique<Pair>();
  auto stream = std::make_shared<Stream>(std::move(p->ours));
  auto slot = stream->start_early_read(asio::buffer(buf));
  REQUIRE(slot);
  auto session = std::make_shared<int>(0);  // stands for what the coroutine owns
  std::weak_ptr<int> freed = session;
  bool finished = false;
  asio::co_spawn(
      p->ioc,
      [stream, slot = std::move(slot), session = std::move(session), &finished]() mutable -> asio::awaitable<void> {
        co_await Stream::finish_early_read(std::move(slot));
        finished = true;
      },
      asio::detached);
  stream.reset();
  p->run_a_while();
  REQUIRE_FALSE(finished);  // waiting: the peer sends nothing
  CHECK_FALSE(freed.expired());
  p.reset();
  CHECK_FALSE(finished);
  CHECK(freed.expired());
}

TEST_CASE("early read: not offered on TLS or closed streams") {
  Pair p;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  REQUIRE(ctx);
  {
    Stream tls(Stream::tls_over, std::move(p.ours), ctx, false);
    char buf[16];
    CHECK_FALSE(tls.start_early_read(asio::buffer(buf)));
  }
  SSL_CTX_free(ctx);
  Stream closed;
  char buf[16];
  CHECK_FALSE(closed.start_early_read(asio::buffer(buf)));
}
