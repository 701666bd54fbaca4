#include "proxy/net/edge_wait.hpp"

#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <type_traits>
#include <utility>

namespace portcullis::net {
namespace {
namespace adetail = boost::asio::detail;
static_assert(std::is_same_v<adetail::reactor, adetail::epoll_reactor>,
              "EdgeReadiness queues its operation in asio's epoll reactor (not io_uring, not select)");

// basic_socket keeps its implementation (descriptor and reactor data) protected: a pointer to
// that member, formed in a derived class, reaches it.
struct SocketAccess : tcp_socket {
  static auto& impl(tcp_socket& s) { return (s.*(&SocketAccess::impl_)).get_implementation(); }
};

using handler_type = asio::any_completion_handler<void(error_code)>;

void post_result(executor ex, handler_type h, error_code ec) {
  asio::post(ex, [h = std::move(h), ec]() mutable { std::move(h)(ec); });
}
}  // namespace

// The operation queued in the reactor's read queue. The reactor calls perform() at every edge
// (EPOLLIN, EPOLLHUP, EPOLLERR); it answers "not done", so it stays queued and sees the next
// one. It completes only when asio ends it: cancel(), release() or close() of the socket
// (operation_aborted), or the io_context's destruction (destroyed, not called). It is freed
// when neither the reactor nor a posted wake-up refers to it any more.
class EdgeWatch final : public adetail::reactor_op {
 public:
  EdgeWatch(EdgeReadiness* owner, executor ex)
      : reactor_op(error_code(), &EdgeWatch::perform_edge, &EdgeWatch::complete), owner_(owner), ex_(ex) {}

  EdgeReadiness* owner_;  // null once the owner is gone or watches another socket
  executor ex_;
  bool installing_ = false;  // the reactor's speculative first call is not an edge
  handler_type waiter_;

 private:
  int refs_ = 1;  // the reactor's, and one per wake-up posted and not yet run

  // A wake-up posted at an edge. When it runs, the owner may have been destroyed or moved on to
  // another socket meanwhile (a connection closed and replaced): the waiter then gets
  // operation_aborted, never a "readable" about a socket that is no longer the one it waited on.
  struct WakeUp {
    EdgeWatch* w;
    handler_type h;
    WakeUp(EdgeWatch* w, handler_type h) : w(w), h(std::move(h)) { ++w->refs_; }
    WakeUp(WakeUp&& o) noexcept : w(std::exchange(o.w, nullptr)), h(std::move(o.h)) {}
    WakeUp& operator=(WakeUp&&) = delete;
    ~WakeUp() {
      if (w) release(w);
    }
    void operator()() {
      const error_code ec = w->owner_ ? error_code{} : error_code(asio::error::operation_aborted);
      release(std::exchange(w, nullptr));
      std::move(h)(ec);
    }
  };

  static void release(EdgeWatch* w) {
    if (--w->refs_ == 0) delete w;
  }

  static status perform_edge(reactor_op* base) {
    auto* w = static_cast<EdgeWatch*>(base);
    if (w->installing_) return not_done;
    if (w->owner_) w->owner_->note_ended();  // an edge: anything may be waiting
    // Posted, not called: the reactor is walking this descriptor's queues, which the waiter's
    // code (a close, say) would change under it.
    if (w->waiter_) asio::post(w->ex_, WakeUp(w, std::move(w->waiter_)));
    return not_done;
  }

  static void complete(void* scheduler, adetail::scheduler_operation* base, const error_code&, std::size_t) {
    auto* w = static_cast<EdgeWatch*>(base);
    handler_type h(std::move(w->waiter_));
    const error_code ec = w->ec_ ? w->ec_ : error_code(asio::error::operation_aborted);
    if (w->owner_) {
      w->owner_->watch_ = nullptr;
      w->owner_->note_ended();  // edges are no longer seen: nothing known may be trusted
      w->owner_ = nullptr;
    }
    release(w);
    if (scheduler && h) std::move(h)(ec);  // without a scheduler: destroyed with the io_context
  }
};

EdgeReadiness::EdgeReadiness(EdgeReadiness&& o) noexcept
    : maybe_readable(o.maybe_readable), quiet(o.quiet), sock_(o.sock_), watch_(std::exchange(o.watch_, nullptr)) {
  if (watch_) watch_->owner_ = this;
}

EdgeReadiness& EdgeReadiness::operator=(EdgeReadiness&& o) noexcept {
  if (this != &o) {
    if (watch_) watch_->owner_ = nullptr;  // its socket is being replaced (and closed) too
    watch_ = std::exchange(o.watch_, nullptr);
    maybe_readable = o.maybe_readable;
    quiet = o.quiet;
    sock_ = o.sock_;
    if (watch_) watch_->owner_ = this;
  }
  return *this;
}

// The socket is closed after this (it is declared before us in its owner), which ends the watch.
EdgeReadiness::~EdgeReadiness() {
  if (watch_) watch_->owner_ = nullptr;
}

bool EdgeReadiness::install() {
  if (watch_) return true;
  if (!sock_ || !sock_->is_open()) return false;
  auto* w = new EdgeWatch(this, sock_->get_executor());
  watch_ = w;
  auto& impl = SocketAccess::impl(*sock_);
  auto& reactor = asio::use_service<adetail::epoll_reactor>(sock_->get_executor().context());
  w->installing_ = true;
  reactor.start_op(adetail::epoll_reactor::read_op, impl.socket_, impl.reactor_data_, w, false, true);
  w->installing_ = false;  // still allocated: at worst its completion was posted, not run
  return true;
}

void EdgeReadiness::start(handler_type h, bool trust_quiet) {
  executor ex = sock_->get_executor();  // owners bind() before any wait
  if (!sock_->is_open()) return post_result(ex, std::move(h), asio::error::bad_descriptor);
  // Readable now, or unknown (no watch has seen the socket since it was last found empty).
  const bool wait = trust_quiet ? quiet : !maybe_readable;
  if (!wait || !watch_) return post_result(ex, std::move(h), error_code{});
  if (watch_->waiter_) return post_result(ex, std::move(h), asio::error::already_started);
  watch_->waiter_.swap(h);  // not by assignment: Boost 1.81's move assignment recurses
}

}  // namespace portcullis::net
