// net::Deadline on a real io_context: what fires, in which order, and what never fires.
// Timers never fire early, so "not yet" checks are lower bounds; nothing here asserts speed.
#include "proxy/net/deadline.hpp"

#include <boost/asio/thread_pool.hpp>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

using portcullis::net::Deadline;
using portcullis::net::DeadlineWith;
using namespace std::chrono_literals;

namespace {
// Runs ioc until `done` or 5 s pass.
template <class Done>
void run_until(boost::asio::io_context& ioc, Done done) {
  const auto give_up = std::chrono::steady_clock::now() + 5s;
  while (!done() && std::chrono::steady_clock::now() < give_up) {
    ioc.restart();
    ioc.run_for(5ms);
  }
}
}  // namespace

TEST_CASE("deadline: fires once, in deadline order, and reports what expired") {
  boost::asio::io_context ioc;
  std::vector<std::string> fired;
  DeadlineWith late(ioc.get_executor(), [&] { fired.push_back("late"); });
  DeadlineWith early(ioc.get_executor(), [&] { fired.push_back("early"); });
  late.arm(60ms, "late wait");
  early.arm(10ms, "early wait");
  run_until(ioc, [&] { return fired.size() == 2; });
  REQUIRE(fired == std::vector<std::string>{"early", "late"});
  CHECK(early.expired());
  CHECK(std::string(late.what()) == "late wait");
  ioc.restart();
  ioc.run_for(50ms);
  CHECK(fired.size() == 2);  // once each
}

TEST_CASE("deadline: moving it later postpones it, and moving it earlier brings it forward") {
  boost::asio::io_context ioc;
  int later_fired = 0, earlier_fired = 0, other_fired = 0;
  DeadlineWith later(ioc.get_executor(), [&] { ++later_fired; });
  DeadlineWith earlier(ioc.get_executor(), [&] { ++earlier_fired; });
  DeadlineWith other(ioc.get_executor(), [&] { ++other_fired; });
  later.arm(10ms);
  later.arm(300ms);  // lazily recorded: its old place comes due first and must not fire it
  other.arm(150ms);
  earlier.arm(10s);
  earlier.arm(20ms);  // re-sorted, and the service's timer brought forward
  run_until(ioc, [&] { return other_fired == 1; });
  CHECK(earlier_fired == 1);
  CHECK(later_fired == 0);
  CHECK_FALSE(later.expired());
  run_until(ioc, [&] { return later_fired == 1; });
  CHECK(later_fired == 1);
}

TEST_CASE("deadline: disarm and stop keep it from firing, and arm after expiry bounds the next wait") {
  boost::asio::io_context ioc;
  int disarmed = 0, stopped = 0, rearmed = 0, witness = 0;
  DeadlineWith d1(ioc.get_executor(), [&] { ++disarmed; });
  DeadlineWith d2(ioc.get_executor(), [&] { ++stopped; });
  DeadlineWith d3(ioc.get_executor(), [&] { ++rearmed; });
  DeadlineWith w(ioc.get_executor(), [&] { ++witness; });
  d1.arm(10ms);
  d1.disarm();
  d2.arm(10ms);
  d2.stop();
  d2.arm(10ms);  // stopped for good
  d3.arm(10ms);
  w.arm(100ms);
  run_until(ioc, [&] { return witness == 1; });
  CHECK(disarmed == 0);
  CHECK(stopped == 0);
  REQUIRE(rearmed == 1);
  d3.arm(10ms);
  CHECK_FALSE(d3.expired());  // arm() clears it
  run_until(ioc, [&] { return rearmed == 2; });
  CHECK(rearmed == 2);
  {
    // Destroyed while armed: leaves the set; the others still fire.
    DeadlineWith gone(ioc.get_executor(), [&] { FAIL("a destroyed deadline fired"); });
    gone.arm(10ms);
  }
  w.arm(30ms);
  run_until(ioc, [&] { return witness == 2; });
  CHECK(witness == 2);
}

TEST_CASE("deadline: an expiry may arm deadlines, its own included") {
  boost::asio::io_context ioc;
  int ticks = 0;
  Deadline* self = nullptr;
  DeadlineWith d(ioc.get_executor(), [&] {
    if (++ticks < 3) self->arm(5ms);
  });
  self = &d;
  d.arm(5ms);
  run_until(ioc, [&] { return ticks == 3; });
  CHECK(ticks == 3);
}

TEST_CASE("deadline: an executor that is not an io_context's is refused clearly") {
  boost::asio::thread_pool pool(1);
  CHECK_THROWS_WITH(DeadlineWith(pool.get_executor(), [] {}), Catch::Contains("io_context"));
  pool.join();
}
