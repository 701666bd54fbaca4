#pragma once
// A connected pair of loopback TCP sockets on one io_context, for the net tests: `ours` is what
// a Stream wraps, `peer` is driven synchronously by the test.
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "proxy/net/socket_types.hpp"

namespace portcullis::net::testing {

struct LoopbackPair {
  boost::asio::io_context ioc;
  tcp_socket ours{ioc.get_executor()};
  boost::asio::ip::tcp::socket peer{ioc};
  LoopbackPair() {
    boost::asio::ip::tcp::acceptor acc(ioc, {boost::asio::ip::address_v4::loopback(), 0});
    peer.connect(acc.local_endpoint());
    acc.accept(ours);
  }
  // Runs whatever is ready (and what it leads to) for 50 ms.
  void run_a_while() {
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(50));
  }
  // Sends s from the peer; on loopback the bytes are in our receive queue 10 ms later.
  void send(const std::string& s) {
    boost::asio::write(peer, boost::asio::buffer(s));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
};

}  // namespace portcullis::net::testing
