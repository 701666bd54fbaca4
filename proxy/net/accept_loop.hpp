#pragma once
// Accepts until the acceptor is closed and runs serve(socket) as its own coroutine for each
// connection: the loop of the low-volume plaintext/TLS side listeners (webhook, probes).
#include <spdlog/spdlog.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace portcullis::net {

template <class Acceptor, class Serve>
boost::asio::awaitable<void> accept_each(Acceptor& acceptor, const char* listener, Serve serve) {
  namespace asio = boost::asio;
  for (;;) {
    auto [ec, sock] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
    if (ec) {
      spdlog::warn("{} listener: accept failed: {}", listener, ec.message());
      continue;
    }
    asio::co_spawn(acceptor.get_executor(), serve(std::move(sock)), asio::detached);
  }
}

}  // namespace portcullis::net
