#pragma once
// Everything a request needs, compiled from one validated config: TLS contexts, policies,
// upstreams. Immutable once built; workers hold a shared_ptr and swap it on reload.
#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "certs/tls.hpp"
#include "proxy/config.hpp"

namespace portcullis {

struct UpstreamRuntime {
  config::Upstream cfg;
  certs::SslCtxPtr client_ctx;  // tls:// and original_dst
};

struct ListenerRuntime {
  config::Listener cfg;
  certs::SslCtxPtr server_ctx;  // null: plaintext
  std::shared_ptr<const policy::Policy> policy;
  const UpstreamRuntime* upstream = nullptr;
};

struct Snapshot {
  config::Config config;
  std::map<std::string, UpstreamRuntime> upstreams;
  std::map<std::string, ListenerRuntime> listeners;
  std::uint64_t generation = 0;
};

// Builds TLS contexts and wires names to objects. Throws config::ConfigError (with the
// location of the bundle at fault) when a certificate or key cannot be used.
std::shared_ptr<const Snapshot> build_snapshot(config::Config cfg);

}  // namespace portcullis
