#include "proxy/net/cold_poll.hpp"

#include <sys/epoll.h>
#include <unistd.h>

#include <boost/asio/bind_allocator.hpp>

#include "proxy/net/exact_allocator.hpp"

namespace portcullis::net {

ColdPoll::ColdPoll(boost::asio::io_context& ioc, void (*on_ready)(void*, void*), void* context)
    : ep_(ioc.get_executor()), on_ready_(on_ready), context_(context) {
  int fd = ::epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return;  // ok() is false: connections stay in asio's reactor
  boost::system::error_code ec;
  ep_.assign(fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  wait();
}

ColdPoll::~ColdPoll() {
  boost::system::error_code ignored;
  ep_.close(ignored);  // the pending wait completes with operation_aborted and touches nothing
}

bool ColdPoll::add(int fd, void* item) {
  if (!ok()) {
    errno = EBADF;
    return false;
  }
  epoll_event ev{};
  // Level-triggered: a member stays reported until its owner takes it out.
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.ptr = item;
  return ::epoll_ctl(ep_.native_handle(), EPOLL_CTL_ADD, fd, &ev) == 0;
}

void ColdPoll::remove(int fd) {
  if (ok()) ::epoll_ctl(ep_.native_handle(), EPOLL_CTL_DEL, fd, nullptr);
}

void ColdPoll::wait() {
  ep_.async_wait(boost::asio::posix::descriptor_base::wait_read,
                 boost::asio::bind_allocator(ExactAllocator<void>(), [this](const boost::system::error_code& ec) {
                   if (ec) return;  // closed: this object may be gone
                   epoll_event events[64];
                   int n;
                   do {
                     n = ::epoll_wait(ep_.native_handle(), events, 64, 0);
                     for (int i = 0; i < n; ++i) on_ready_(context_, events[i].data.ptr);
                   } while (n == 64);
                   wait();
                 }));
}

}  // namespace portcullis::net
