#pragma once
// One deadline per connection bounds every wait: arm() before a read or write, and when the time
// passes, on_expire closes the sockets so the pending operation completes with an error.
// Cheaper than a timer per operation, and no wait can be left unbounded by mistake.
//
// A Deadline is not an asio timer. Each io_context has one timer (DeadlineService) and an
// intrusive ordered set of the deadlines armed on it: a Deadline is a node inside its owner, with
// no allocation and no pending operation of its own, so an idle connection stays small.
// Lazy: an arm() that moves a deadline later only records the time; when its place in the set
// comes due it is put back at the recorded time. Only an arm() that moves it earlier re-sorts
// it, and only one earlier than every other deadline touches the timer.
// A Deadline is used on its io_context's thread only (as everything of one connection is).
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/intrusive/set.hpp>
#include <chrono>
#include <stdexcept>

#include "proxy/net/exact_allocator.hpp"

namespace portcullis::net {

class DeadlineService;

inline boost::asio::io_context& io_context_of(const boost::asio::any_io_executor& ex) {
  const auto* io = ex.target<boost::asio::io_context::executor_type>();
  if (!io) throw std::logic_error("net::Deadline needs an io_context executor");
  return io->context();
}

class Deadline : public boost::intrusive::set_base_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>,
                                                         boost::intrusive::optimize_size<true>> {
 public:
  using clock = std::chrono::steady_clock;

  // on_expire(context) closes what the owner waits on; context outlives the deadline. Two
  // pointers instead of a std::function: 16 bytes fewer in every connection.
  Deadline(const boost::asio::any_io_executor& ex, void (*on_expire)(void*), void* context);
  ~Deadline() { stop(); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  void arm(std::chrono::milliseconds d);
  // `what` names the wait for logs ("header timeout"); a static string.
  void arm(std::chrono::milliseconds d, const char* what) {
    arm(d);
    what_ = what;
  }
  // No deadline until the next arm(); the node stays in the set and is dropped when its place
  // comes due.
  void disarm() { due_ = clock::time_point::max(); }
  bool expired() const { return expired_; }
  const char* what() const { return what_; }
  // For good: later arm() calls do nothing.
  void stop() {
    stopped_ = true;
    unlink();
  }

  bool operator<(const Deadline& o) const { return queued_ < o.queued_; }

 private:
  friend class DeadlineService;
  DeadlineService* service_;
  void (*on_expire_)(void*);
  void* context_;
  clock::time_point due_ = clock::time_point::max();     // when it expires
  clock::time_point queued_ = clock::time_point::max();  // its key in the set (<= due_ while in it)
  const char* what_ = nullptr;
  bool expired_ = false;
  bool stopped_ = false;
};

class DeadlineService : public boost::asio::io_context::service {
 public:
  using clock = Deadline::clock;
  inline static boost::asio::io_context::id id;

  // The timer is made here, so that asio's timer service is registered before this one and
  // therefore shut down and destroyed after it.
  explicit DeadlineService(boost::asio::io_context& ioc) : service(ioc), timer_(ioc) {}

  void insert(Deadline& d) {
    set_.insert(d);
    if (d.queued_ < wake_at_) rearm(d.queued_);
  }

 private:
  using Set = boost::intrusive::multiset<Deadline, boost::intrusive::constant_time_size<false>>;

  void shutdown() override { set_.clear(); }

  // One wait at a time: expires_at() cancels the previous one (its handler sees
  // operation_aborted and does nothing).
  void rearm(clock::time_point t) {
    wake_at_ = t;
    timer_.expires_at(t);
    timer_.async_wait(boost::asio::bind_allocator(ExactAllocator<void>(), [this](const boost::system::error_code& ec) {
      if (!ec) on_wake();
    }));
  }

  void on_wake() {
    const auto now = clock::now();
    while (!set_.empty() && set_.begin()->queued_ <= now) {
      Deadline& d = *set_.begin();
      set_.erase(set_.begin());
      if (d.due_ > now) {
        // Moved later since it was queued (or disarmed, then dropped).
        if (d.due_ != clock::time_point::max()) {
          d.queued_ = d.due_;
          set_.insert(d);
        }
        continue;
      }
      d.due_ = clock::time_point::max();
      d.expired_ = true;
      d.on_expire_(d.context_);  // closes sockets; pending operations complete later, with an error
    }
    wake_at_ = clock::time_point::max();  // the wait that called us is over
    if (!set_.empty()) rearm(set_.begin()->queued_);
  }

  boost::asio::steady_timer timer_;
  clock::time_point wake_at_ = clock::time_point::max();
  Set set_;
};

inline Deadline::Deadline(const boost::asio::any_io_executor& ex, void (*on_expire)(void*), void* context)
    : service_(&boost::asio::use_service<DeadlineService>(io_context_of(ex))), on_expire_(on_expire), context_(context) {}

// A Deadline that keeps its own callable (a lambda): for deadlines on a coroutine's frame.
template <class F>
class DeadlineWith : public Deadline {
 public:
  DeadlineWith(const boost::asio::any_io_executor& ex, F on_expire)
      : Deadline(ex, [](void* self) { static_cast<DeadlineWith*>(self)->f_(); }, this), f_(std::move(on_expire)) {}

 private:
  F f_;
};

inline void Deadline::arm(std::chrono::milliseconds d) {
  what_ = nullptr;
  expired_ = false;
  if (stopped_) return;
  due_ = clock::now() + d;
  if (is_linked()) {
    if (due_ >= queued_) return;  // later: recorded, re-sorted when its place comes due
    unlink();
  }
  queued_ = due_;
  service_->insert(*this);
}

}  // namespace portcullis::net
