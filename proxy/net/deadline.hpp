#pragma once
// One timer per connection bounds every wait: arm() before a read or write, and when the time
// passes, on_expire closes the sockets so the pending operation completes with an error.
// Cheaper than a timer per operation, and no wait can be left unbounded by mistake.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>

namespace portcullis::net {

class Deadline {
 public:
  Deadline(boost::asio::any_io_executor ex, std::function<void()> on_expire)
      : state_(std::make_shared<State>(ex, std::move(on_expire))) {
    state_->timer.expires_at(std::chrono::steady_clock::time_point::max());
    boost::asio::co_spawn(ex, watch(state_), boost::asio::detached);
  }
  ~Deadline() { stop(); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  void arm(std::chrono::milliseconds d) {
    state_->what = nullptr;
    state_->expired = false;
    state_->timer.expires_after(d);
  }
  // `what` names the wait for logs ("header timeout"); a static string.
  void arm(std::chrono::milliseconds d, const char* what) {
    arm(d);
    state_->what = what;
  }
  void disarm() { state_->timer.expires_at(std::chrono::steady_clock::time_point::max()); }
  bool expired() const { return state_->expired; }
  const char* what() const { return state_->what; }
  void stop() {
    state_->stopped = true;
    state_->timer.cancel();
  }

 private:
  struct State {
    State(boost::asio::any_io_executor ex, std::function<void()> f) : timer(ex), on_expire(std::move(f)) {}
    boost::asio::steady_timer timer;
    std::function<void()> on_expire;
    bool stopped = false;
    bool expired = false;
    const char* what = nullptr;
  };
  static boost::asio::awaitable<void> watch(std::shared_ptr<State> s) {
    while (!s->stopped) {
      co_await s->timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (s->stopped) break;
      if (s->timer.expiry() <= std::chrono::steady_clock::now()) {
        // Fired: run on_expire once, then keep watching so a later arm() still bounds its wait.
        s->expired = true;
        s->timer.expires_at(std::chrono::steady_clock::time_point::max());
        s->on_expire();
      }
    }
  }
  std::shared_ptr<State> state_;
};

}  // namespace portcullis::net
