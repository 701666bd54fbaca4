#pragma once
// One timer per connection bounds every wait: arm() before a read or write, and when the time
// passes, on_expire closes the sockets so the pending operation completes with an error.
// Cheaper than a timer per operation, and no wait can be left unbounded by mistake.
// Lazy: an arm() that moves the deadline later only records it (no timer cancel, no timerfd
// syscall, no coroutine wake-up); when the timer fires early, watch() re-arms it for the
// recorded time. Only an arm() that moves the deadline earlier touches the timer.
// The timer's handler is a plain callback, not a coroutine: an idle connection carries no
// coroutine frame for its deadline.
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>

#include "proxy/net/exact_allocator.hpp"

namespace portcullis::net {

class Deadline {
 public:
  Deadline(boost::asio::any_io_executor ex, std::function<void()> on_expire)
      : state_(std::make_shared<State>(ex, std::move(on_expire))) {
    state_->timer.expires_at(std::chrono::steady_clock::time_point::max());
    wait(state_);
  }
  ~Deadline() { stop(); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  void arm(std::chrono::milliseconds d) {
    state_->what = nullptr;
    state_->expired = false;
    state_->due = std::chrono::steady_clock::now() + d;
    if (state_->due < state_->timer.expiry()) state_->timer.expires_at(state_->due);  // wakes on_timer()
  }
  // `what` names the wait for logs ("header timeout"); a static string.
  void arm(std::chrono::milliseconds d, const char* what) {
    arm(d);
    state_->what = what;
  }
  void disarm() { state_->due = std::chrono::steady_clock::time_point::max(); }
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
    std::chrono::steady_clock::time_point due = std::chrono::steady_clock::time_point::max();
  };
  static void wait(const std::shared_ptr<State>& s) {
    // Pending for as long as the connection lives: exactly sized (exact_allocator.hpp).
    s->timer.async_wait(boost::asio::bind_allocator(ExactAllocator<void>(), [s](const boost::system::error_code&) { on_timer(s); }));
  }
  static void on_timer(const std::shared_ptr<State>& s) {
    if (s->stopped) return;
    auto now = std::chrono::steady_clock::now();
    if (s->timer.expiry() <= now) {
      if (s->due > now) {
        s->timer.expires_at(s->due);  // the deadline moved later (or was disarmed) since
      } else {
        // Fired: run on_expire once, then keep waiting so a later arm() still bounds its wait.
        s->expired = true;
        s->due = std::chrono::steady_clock::time_point::max();
        s->timer.expires_at(std::chrono::steady_clock::time_point::max());
        s->on_expire();
        if (s->stopped) return;
      }
    }
    // else: woken by an arm() that moved the expiry earlier; wait for the new expiry.
    wait(s);
  }
  std::shared_ptr<State> state_;
};

}  // namespace portcullis::net
