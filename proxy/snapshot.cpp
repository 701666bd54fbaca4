#include "proxy/snapshot.hpp"

namespace portcullis {

std::shared_ptr<const Snapshot> build_snapshot(config::Config cfg) {
  static std::atomic<std::uint64_t> generations{0};
  auto snap = std::make_shared<Snapshot>();
  std::vector<config::Diagnostic> errors;
  auto fail = [&](const std::string& bundle, const std::string& msg) {
    auto it = cfg.tls_locations.find(bundle);
    errors.push_back({cfg.path, it == cfg.tls_locations.end() ? config::Location{} : it->second, msg, false});
  };
  static const std::vector<std::string> http_alpn{"http/1.1"};
  for (const auto& [name, up] : cfg.upstreams) {
    UpstreamRuntime rt{up, nullptr};
    if (up.kind == config::Upstream::Kind::tls || up.kind == config::Upstream::Kind::original_dst) {
      certs::BundleSpec bundle;
      if (!up.tls.empty()) bundle = cfg.tls.at(up.tls);
      try {
        rt.client_ctx = certs::make_client_context(bundle, {});
      } catch (const std::exception& e) {
        fail(up.tls, "tls." + up.tls + " (used by upstream " + name + "): " + e.what());
      }
    }
    snap->upstreams.emplace(name, std::move(rt));
  }
  for (const auto& l : cfg.listeners) {
    ListenerRuntime rt;
    rt.cfg = l;
    rt.policy = cfg.compiled_policies.at(l.policy);
    rt.upstream = &snap->upstreams.at(l.upstream);
    if (!l.tls.empty()) {
      try {
        std::vector<std::string> alpn;
        if (l.protocol != config::Protocol::tcp) alpn = http_alpn;  // we serve HTTP/1.1 only
        rt.server_ctx = certs::make_server_context(cfg.tls.at(l.tls), l.client_certs, alpn);
      } catch (const std::exception& e) {
        fail(l.tls, "tls." + l.tls + " (used by listener " + l.name + "): " + e.what());
      }
    }
    snap->listeners.emplace(l.name, std::move(rt));
  }
  if (!errors.empty()) throw config::ConfigError(std::move(errors));
  snap->config = std::move(cfg);
  snap->generation = ++generations;
  return snap;
}

}  // namespace portcullis
