#pragma once
// Connecting to upstreams (tcp://, unix://, tls://, original_dst) and the per-worker pool of
// idle keep-alive connections.
#include <chrono>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/net/stream.hpp"
#include "proxy/snapshot.hpp"

namespace portcullis {

struct UpstreamConnection {
  net::error_code ec;
  std::string error;    // why it failed, for the 502 body and the log
  bool timed_out = false;
  net::Stream stream;
  std::string address;  // where we connected, for the log
};

// original_dst: required for original_dst upstreams (the destination before the redirect).
net::awaitable<UpstreamConnection> connect_upstream(const UpstreamRuntime& up,
                                                    std::chrono::milliseconds timeout,
                                                    std::optional<net::tcp::endpoint> original_dst = {});

// The destination a connection had before an nftables redirect (SO_ORIGINAL_DST).
std::optional<net::tcp::endpoint> original_destination(net::tcp_socket& s);

// Idle keep-alive upstream connections of one worker (never shared between threads).
class UpstreamPool {
 public:
  static constexpr std::size_t max_idle_per_upstream = 64;
  // key: identifies the upstream within one snapshot generation.
  std::optional<net::Stream> take(const std::string& key);
  void give(const std::string& key, net::Stream s);
  void clear() { idle_.clear(); }

 private:
  std::unordered_map<std::string, std::vector<net::Stream>> idle_;
};

}  // namespace portcullis
