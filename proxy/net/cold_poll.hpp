#pragma once
// An epoll set of a worker's own for connections that have waited a long time for their next
// request, outside asio's reactor.
//
// A socket registered with asio's reactor carries a descriptor state (168 bytes, asio's) and,
// while it waits, a wait operation (96 bytes): about 1.4 % of what an idle TLS connection
// costs, kept for as long as the connection stays open. A connection idle for over a second is
// instead released from asio (asio::basic_socket::release) and its descriptor added here, with a
// pointer to its owner as the event's data: the kernel's epoll entry is all it costs. asio waits
// on this set's one descriptor; when a member becomes readable (a byte, an end of stream, an
// error), on_ready gets the member's pointer, and its owner takes the descriptor out and hands it
// back to asio. Both moves cost a few syscalls, paid only by connections idle that long.
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace portcullis::net {

class ColdPoll {
 public:
  // on_ready(context, item) for each readable member; it must remove() the member (or close
  // its descriptor) before it returns, or it is reported again.
  ColdPoll(boost::asio::io_context& ioc, void (*on_ready)(void* context, void* item), void* context);
  ~ColdPoll();
  ColdPoll(const ColdPoll&) = delete;
  ColdPoll& operator=(const ColdPoll&) = delete;

  // False, with errno set, when the kernel refuses (the caller keeps the socket in asio).
  bool add(int fd, void* item);
  void remove(int fd);
  bool ok() const { return ep_.is_open(); }

 private:
  void wait();
  boost::asio::posix::basic_stream_descriptor<boost::asio::io_context::executor_type> ep_;
  void (*on_ready_)(void*, void*);
  void* context_;
};

}  // namespace portcullis::net
