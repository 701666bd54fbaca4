#pragma once
// The socket types both sides of the proxy use.
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>

namespace portcullis::net {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
// Sockets are bound to their worker's io_context, not to any_io_executor: the executor is 8 bytes
// instead of 56 in every socket and in every operation pending on one (a tcp socket is 40 bytes
// instead of 88), which an idle connection holds two or three of.
using executor = asio::io_context::executor_type;
using tcp_socket = asio::basic_stream_socket<tcp, executor>;
using tcp_acceptor = asio::basic_socket_acceptor<tcp, executor>;
using unix_socket = asio::basic_stream_socket<asio::local::stream_protocol, executor>;
using error_code = boost::system::error_code;
template <class T>
using awaitable = asio::awaitable<T>;

}  // namespace portcullis::net
