// net::ColdPoll on a real io_context and real sockets: the epoll set idle connections wait in
// outside asio's reactor. A member is reported when it becomes readable (a byte or an end of
// stream), as often as it stays there, and never after it is removed.
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <vector>

#include "proxy/net/cold_poll.hpp"

namespace asio = boost::asio;
using portcullis::net::ColdPoll;
using namespace std::chrono_literals;

namespace {
struct Seen {
  ColdPoll* poll = nullptr;
  std::vector<void*> items;
  std::vector<int> fds;  // removed when reported, as a connection's owner does
};

void on_ready(void* ctx, void* item) {
  auto& seen = *static_cast<Seen*>(ctx);
  seen.items.push_back(item);
  int fd = *static_cast<int*>(item);
  seen.poll->remove(fd);
}

void run_a_while(asio::io_context& ioc) {
  ioc.restart();
  ioc.run_for(50ms);
}

struct Pair {
  int sv[2];
  Pair() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0); }
  Pair(const Pair&) = delete;
  ~Pair() {
    if (sv[0] >= 0) ::close(sv[0]);
    if (sv[1] >= 0) ::close(sv[1]);
  }
};
}  // namespace

TEST_CASE("cold poll: a silent member is not reported, a byte or an end of stream is, until it is removed") {
  asio::io_context ioc;
  Seen seen;
  ColdPoll poll(ioc, on_ready, &seen);
  seen.poll = &poll;
  REQUIRE(poll.ok());
  Pair a, b;
  REQUIRE(poll.add(a.sv[0], &a.sv[0]));
  REQUIRE(poll.add(b.sv[0], &b.sv[0]));
  run_a_while(ioc);
  CHECK(seen.items.empty());

  REQUIRE(::write(a.sv[1], "x", 1) == 1);
  run_a_while(ioc);
  REQUIRE(seen.items.size() == 1);
  CHECK(seen.items[0] == &a.sv[0]);

  // Removed: more bytes are not reported; the byte is still there for the owner to read.
  REQUIRE(::write(a.sv[1], "y", 1) == 1);
  run_a_while(ioc);
  CHECK(seen.items.size() == 1);
  char buf[4];
  CHECK(::read(a.sv[0], buf, sizeof buf) == 2);

  // The peer going away is reported too.
  ::close(b.sv[1]);
  b.sv[1] = -1;
  run_a_while(ioc);
  REQUIRE(seen.items.size() == 2);
  CHECK(seen.items[1] == &b.sv[0]);
}

TEST_CASE("cold poll: members readable when added are reported at once, more than one epoll_wait holds") {
  asio::io_context ioc;
  Seen seen;
  ColdPoll poll(ioc, on_ready, &seen);
  seen.poll = &poll;
  std::vector<Pair> pairs(150);  // more than one epoll_wait's worth (64)
  for (auto& p : pairs) {
    REQUIRE(::write(p.sv[1], "x", 1) == 1);
    REQUIRE(poll.add(p.sv[0], &p.sv[0]));
  }
  run_a_while(ioc);
  CHECK(seen.items.size() == pairs.size());
}

TEST_CASE("cold poll: refuses a descriptor twice and a closed one, and is destroyed with its wait pending") {
  asio::io_context ioc;
  Seen seen;
  Pair a;
  {
    ColdPoll poll(ioc, on_ready, &seen);
    seen.poll = &poll;
    REQUIRE(poll.add(a.sv[0], &a.sv[0]));
    CHECK_FALSE(poll.add(a.sv[0], &a.sv[0]));
    CHECK_FALSE(poll.add(-1, nullptr));
  }
  REQUIRE(::write(a.sv[1], "x", 1) == 1);
  run_a_while(ioc);  // the aborted wait runs after its poll is gone, and touches nothing
  CHECK(seen.items.empty());
}
