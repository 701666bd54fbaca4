#include "proxy/server.hpp"

#include <linux/capability.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <future>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include "firewall/netlink.hpp"
#include "firewall/ruleset.hpp"
#include "proxy/observe/access_log.hpp"
#include "proxy/observe/admin.hpp"
#include "proxy/privileges.hpp"

namespace portcullis {
namespace asio = boost::asio;
namespace {
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// After run_as the kernel refuses every nftables change (no CAP_NET_ADMIN): a reload that leaves
// the firewall section as it was must not fail for that; the table stays as applied at startup.
// With the capability, an unchanged section is still sent (it repairs a table that drifted).
bool firewall_reload_needed(const config::Config& current, const config::Config& next) {
  if (!current.firewall || !next.firewall || has_capability(CAP_NET_ADMIN)) return true;
  try {
    return firewall::render_nft(firewall::build_ruleset(*current.firewall)) !=
           firewall::render_nft(firewall::build_ruleset(*next.firewall));
  } catch (const std::exception&) {
    return true;  // the reload path reports it
  }
}
}

struct Server::ListenerGroup final : ConnectionOwner {
  Server* server = nullptr;
  std::string name;
  std::string labels;   // {listener="name"}: the connection metrics' label set, rendered once
  std::string address;  // as bound: host:port
  config::Protocol protocol;
  std::uint64_t max_connections;
  std::shared_ptr<std::atomic<std::uint64_t>> active = std::make_shared<std::atomic<std::uint64_t>>(0);
  // acceptors[i] belongs to worker i and is only touched on its thread once running.
  std::vector<std::unique_ptr<net::tcp_acceptor>> acceptors;

  void connection_ended(Worker& on) override {
    on.metrics.add(observe::Metric::connections_active, labels, -1);
    server->connection_ended(on, *this);
  }
};

Server::Server(std::shared_ptr<const Snapshot> snapshot, RunOptions options)
    : snapshot_(std::move(snapshot)), options_(options) {
  set_connection_cap(snapshot_->config);
  for (unsigned i = 0; i < snapshot_->config.workers; ++i) {
    auto w = std::make_unique<Worker>();
    w->index = i;
    w->snapshot = snapshot_;
    workers_.push_back(std::move(w));
  }
  if (options_.firewall_applied)
    main_metrics_.add(observe::Metric::firewall_applies_total, observe::labels({{"result", "success"}}));
}

Server::~Server() {
  for (auto& w : workers_) w->ioc.stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

// A proxied connection holds up to two descriptors (client and upstream): without an explicit
// cap, stop at half of what RLIMIT_NOFILE allows (raised to its hard limit first), keeping some
// for listeners, logs and the admin endpoint, so a flood is refused before accept() hits EMFILE.
void Server::set_connection_cap(const config::Config& cfg) {
  std::uint64_t cap = cfg.max_connections;
  if (cap == 0) {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
      if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
        ::getrlimit(RLIMIT_NOFILE, &rl);
      }
      std::uint64_t fds = rl.rlim_cur == RLIM_INFINITY ? 2'000'000 : rl.rlim_cur;
      cap = fds > 256 ? (fds - 128) / 2 : 64;
    } else {
      cap = 10000;
    }
  }
  if (max_total_.exchange(cap) != cap) spdlog::info("process-wide connection cap: {}", cap);
}

std::shared_ptr<Server::ListenerGroup> Server::bind_listener(const ListenerRuntime& l) {
  auto g = std::make_shared<ListenerGroup>();
  g->server = this;
  g->name = l.cfg.name;
  g->labels = observe::labels({{"listener", g->name}});
  g->protocol = l.cfg.protocol;
  g->max_connections = l.cfg.limits.max_connections;
  auto addr = asio::ip::make_address(l.cfg.address.host);
  std::uint16_t port = l.cfg.address.port;
  // Opens `a` and binds it to addr:at_port, with SO_REUSEPORT when reuse_port.
  auto bind_to = [&addr](net::tcp_acceptor& a, std::uint16_t at_port, bool reuse_port) {
    net::tcp::endpoint ep(addr, at_port);
    boost::system::error_code ec;
    a.open(ep.protocol(), ec);
    if (!ec) a.set_option(net::tcp::acceptor::reuse_address(true), ec);
    if (!ec && reuse_port) {
      int one = 1;
      if (::setsockopt(a.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0)
        ec.assign(errno, boost::system::system_category());
    }
    if (!ec && addr.is_v6()) a.set_option(asio::ip::v6_only(true), ec);
    if (!ec) a.bind(ep, ec);
    return ec;
  };
  auto cannot_listen = [&l](const std::string& why) {
    return std::runtime_error("listener '" + l.cfg.name + "': cannot listen on " + l.cfg.address.str() + ": " + why);
  };
  // SO_REUSEPORT (one listening socket per worker) would also let any other process of this
  // user bind the same address beside us, and the kernel would split the connections between
  // the two: a second Portcullis started by mistake, with another policy, would serve part of
  // the traffic and nobody would be told. So the address must first be free of everyone else,
  // as nginx insists (its `reuseport` is opt-in). An address this process already listens on
  // (a reload that renames a listener or changes its protocol) is ours to bind again.
  const bool ours = std::any_of(groups_.begin(), groups_.end(),
                                [&](const auto& held) { return held.second->address == l.cfg.address.str(); });
  if (port != 0 && !ours) {
    net::tcp_acceptor probe(workers_.front()->ioc);
    auto ec = bind_to(probe, port, false);
    if (ec == asio::error::address_in_use)
      throw cannot_listen("another process is listening there (another portcullis?); two would share its connections");
    if (ec) throw cannot_listen(ec.message());
  }  // the probe closes here, before the workers bind
  for (auto& w : workers_) {
    auto acc = std::make_unique<net::tcp_acceptor>(w->ioc);
    auto ec = bind_to(*acc, port, true);
    if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw cannot_listen(ec.message());
    // Port 0 picks a free port once; the other workers share it.
    port = acc->local_endpoint().port();
    g->acceptors.push_back(std::move(acc));
  }
  config::Address bound = l.cfg.address;
  bound.port = port;
  g->address = bound.str();
  return g;
}

std::uint16_t Server::bound_port(const std::string& listener) const {
  auto it = groups_.find(listener);
  if (it == groups_.end() || it->second->acceptors.empty()) return 0;
  boost::system::error_code ec;
  auto ep = it->second->acceptors.front()->local_endpoint(ec);
  return ec ? 0 : ep.port();
}

void Server::bind() {
  for (const auto& [name, l] : snapshot_->listeners) groups_[name] = bind_listener(l);
  // The admin listener is for operators and scrapers; if its address is taken the proxy still
  // serves traffic and says so loudly (a reload to a free address brings it back).
  try {
    admin_ = bind_admin(snapshot_->config.admin, admin_address_);
  } catch (const std::exception& e) {
    spdlog::error("{}; /metrics, /healthz and /readyz are not served", e.what());
  }
}

std::unique_ptr<net::tcp::acceptor> Server::bind_admin(const config::Address& a, std::string& bound_address) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(a.host, ec);
  auto acc = std::make_unique<net::tcp::acceptor>(main_ioc_);
  net::tcp::endpoint ep(addr, a.port);
  if (!ec) acc->open(ep.protocol(), ec);
  if (!ec) acc->set_option(net::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acc->bind(ep, ec);
  if (!ec) acc->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("admin listener: cannot listen on " + a.str() + ": " + ec.message());
  config::Address bound = a;
  bound.port = acc->local_endpoint().port();
  bound_address = bound.str();
  return acc;
}

void Server::start_admin() {
  asio::co_spawn(main_ioc_, observe::admin_accept_loop(*admin_, admin_handlers_), asio::detached);
  spdlog::info("listener 'admin' ready on {}", admin_address_);
}

std::string Server::not_ready() {
  if (stopping_) return "draining (SIGTERM received)";
  if (!ready_) return "starting";
  const auto& fw = snapshot_->config.firewall;
  if (fw && !options_.no_firewall) {
    // The table we applied must still be there (someone may have flushed the ruleset). Without
    // CAP_NET_ADMIN (after run_as) the kernel will not tell us: that is not a failure.
    if (firewall::table_installed(fw->table).error == ENOENT) return "firewall table inet " + fw->table + " is not installed (removed after it was applied?)";
  }
  return {};
}

std::string Server::scrape() {
  observe::MetricSet total;
  // Each worker copies its own counters on its own thread; a worker that does not answer
  // within a second (stopped, or stuck) is left out of this scrape rather than blocking it.
  std::vector<std::future<observe::MetricSet>> copies;
  for (auto& w : workers_) {
    auto p = std::make_shared<std::promise<observe::MetricSet>>();
    copies.push_back(p->get_future());
    asio::post(w->ioc, [p, wp = w.get()] { p->set_value(wp->metrics); });
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (auto& f : copies)
    if (f.wait_until(deadline) == std::future_status::ready) total.merge(f.get());
  total.merge(main_metrics_);
  // Certificate expiry, per bundle presented by a listener or an upstream client.
  std::time_t now = std::time(nullptr);
  std::set<std::string> seen;
  auto expiry = [&](const std::string& bundle, SSL_CTX* ctx) {
    if (!ctx || bundle.empty() || !seen.insert(bundle).second) return;
    for (const auto& c : certs::certificate_expiry(ctx, now))
      total.set(observe::Metric::certificate_expiry_seconds,
                observe::labels({{"bundle", bundle}, {"subject", c.subject}, {"serial", c.serial}}), c.seconds_left);
  };
  for (const auto& [name, l] : snapshot_->listeners) expiry(l.cfg.tls, l.server_ctx.get());
  for (const auto& [name, u] : snapshot_->upstreams) expiry(u.cfg.tls, u.client_ctx.get());
  // Drops counted by our nftables rules, read back from the kernel (one netlink dump).
  if (const auto& fw = snapshot_->config.firewall) {
    std::vector<firewall::RuleCounter> counters;
    if (firewall::read_counters(fw->table, counters).ok()) {
      std::map<std::string, std::pair<std::int64_t, std::int64_t>> drops;  // chain -> packets, bytes
      for (const auto& c : counters)
        if (c.verdict == "drop") {
          auto& d = drops[c.chain];
          d.first += static_cast<std::int64_t>(c.packets);
          d.second += static_cast<std::int64_t>(c.bytes);
        }
      for (const auto& [chain, d] : drops) {
        auto l = observe::labels({{"table", fw->table}, {"chain", chain}});
        total.set(observe::Metric::firewall_dropped_packets_total, l, d.first);
        total.set(observe::Metric::firewall_dropped_bytes_total, l, d.second);
      }
    }
  }
  return observe::render(total);
}

void Server::spawn_connection(Worker& w, const std::shared_ptr<ListenerGroup>& g, net::tcp_socket sock) {
  w.metrics.add(observe::Metric::connections_total, g->labels);
  w.metrics.add(observe::Metric::connections_active, g->labels);
  ConnectionEnded ended = g;
  if (g->protocol != config::Protocol::tcp) {
    serve_http(w, g->name, std::move(sock), std::move(ended));
    return;
  }
  asio::co_spawn(w.ioc, serve_tcp(w, g->name, std::move(sock)), [ended, &w](std::exception_ptr e) {
    ended->connection_ended(w);
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        spdlog::error("connection ended by an unexpected exception: {}", ex.what());
      } catch (...) {
        // Not from std::exception: rethrown out of this handler it would end the worker's
        // io_context::run(), and with it the process (std::terminate).
        spdlog::error("connection ended by an unexpected exception");
      }
    }
  });
}

void Server::connection_ended(Worker& w, ListenerGroup& g) {
  g.active->fetch_sub(1, std::memory_order_relaxed);
  total_active_.fetch_sub(1, std::memory_order_relaxed);
  w.active.fetch_sub(1, std::memory_order_relaxed);
}

void Server::start_accepting(const std::shared_ptr<ListenerGroup>& g) {
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    Worker& w = *workers_[i];
    net::tcp_acceptor* acc = g->acceptors[i].get();
    asio::co_spawn(
        w.ioc,
        [this, &w, acc, g]() -> asio::awaitable<void> {
          std::chrono::steady_clock::time_point last_warning{};
          // During a flood, one warning a second per worker and listener, not one per connection.
          auto warn_refused = [&](const char* limit, std::uint64_t cap) {
            w.metrics.add(observe::Metric::limit_hits_total, observe::labels({{"listener", g->name}, {"limit", limit}}));
            auto now = std::chrono::steady_clock::now();
            if (now - last_warning < std::chrono::seconds(1)) return;
            last_warning = now;
            spdlog::warn("listener '{}': {} ({}) reached; refusing new connections", g->name, limit, cap);
          };
          for (;;) {
            auto [ec, sock] = co_await acc->async_accept(use_tuple);
            if (ec == asio::error::operation_aborted || !acc->is_open()) co_return;
            if (ec) {
              // Out of descriptors and the like: back off briefly instead of spinning.
              spdlog::warn("listener '{}': accept failed: {}", g->name, ec.message());
              asio::steady_timer t(w.ioc, std::chrono::milliseconds(50));
              co_await t.async_wait(use_tuple);
              continue;
            }
            if (w.draining) continue;  // sock closes as it goes out of scope
            if (g->active->load(std::memory_order_relaxed) >= g->max_connections) {
              warn_refused("max_connections", g->max_connections);
              continue;
            }
            if (total_active_.load(std::memory_order_relaxed) >= max_total_.load(std::memory_order_relaxed)) {
              warn_refused("process_max_connections", max_total_.load(std::memory_order_relaxed));
              continue;
            }
            // SO_REUSEPORT spreads connections over the workers by a hash of their addresses, so
            // one worker can hold many more than another (and its clients wait longer). A
            // connection goes to the worker with the fewest; ties stay where they were accepted.
            Worker* target = &w;
            for (auto& o : workers_)
              if (o->active.load(std::memory_order_relaxed) < target->active.load(std::memory_order_relaxed))
                target = o.get();
            total_active_.fetch_add(1, std::memory_order_relaxed);
            g->active->fetch_add(1, std::memory_order_relaxed);
            target->active.fetch_add(1, std::memory_order_relaxed);
            if (target == &w) {
              spawn_connection(w, g, std::move(sock));
              continue;
            }
            boost::system::error_code hec;
            const auto protocol = sock.local_endpoint(hec).protocol();
            const int fd = hec ? -1 : sock.release(hec);
            if (hec || fd < 0) {
              connection_ended(*target, *g);
              continue;  // sock closes as it goes out of scope
            }
            spdlog::debug("listener '{}': connection handed from worker {} to worker {} (fewer connections)", g->name,
                          w.index, target->index);
            asio::post(target->ioc, [this, target, g, protocol, fd] {
              net::tcp_socket s(target->ioc);
              boost::system::error_code aec;
              if (!target->draining) s.assign(protocol, fd, aec);
              if (target->draining || aec) {
                ::close(fd);
                connection_ended(*target, *g);
                return;
              }
              spawn_connection(*target, g, std::move(s));
            });
          }
        },
        asio::detached);
  }
}

void Server::install_snapshot(std::shared_ptr<const Snapshot> s) {
  snapshot_ = s;
  set_connection_cap(s->config);
  for (auto& w : workers_) asio::post(w->ioc, [wp = w.get(), s] { wp->snapshot = s; });
}

void Server::reload(const std::string& why) {
  bool ok = try_reload(why);
  main_metrics_.add(observe::Metric::config_reloads_total, observe::labels({{"result", ok ? "success" : "failure"}}));
}

bool Server::try_reload(const std::string& why) {
  spdlog::info("reloading {} ({})", snapshot_->config.path, why);
  std::shared_ptr<const Snapshot> next;
  try {
    next = build_snapshot(config::load_file(snapshot_->config.path));
  } catch (const config::ConfigError& e) {
    for (const auto& d : e.diagnostics) spdlog::error("reload rejected, the previous config stays in force: {}", d.str());
    return false;
  } catch (const std::exception& e) {
    spdlog::error("reload rejected, the previous config stays in force: {}", e.what());
    return false;
  }
  // The firewall follows the config: an element diff when only sets changed, else a full
  // replace of our table, in one transaction. If the kernel refuses it, nothing changes.
  if (!options_.no_firewall && next->config.firewall && firewall_reload_needed(snapshot_->config, next->config)) {
    try {
      auto desired = firewall::build_ruleset(*next->config.firewall);
      auto result = snapshot_->config.firewall
                        ? firewall::update(firewall::build_ruleset(*snapshot_->config.firewall), desired)
                        : firewall::apply(desired);
      main_metrics_.add(observe::Metric::firewall_applies_total,
                        observe::labels({{"result", result.ok() ? "success" : "failure"}}));
      if (!result.ok()) {
        spdlog::error("reload rejected, the previous config stays in force: firewall: {}", result.message);
        return false;
      }
    } catch (const std::exception& e) {
      main_metrics_.add(observe::Metric::firewall_applies_total, observe::labels({{"result", "failure"}}));
      spdlog::error("reload rejected, the previous config stays in force: firewall: {}", e.what());
      return false;
    }
  }
  // Listeners: keep unchanged ones (their connections are untouched), bind new ones first so a
  // bind failure leaves everything as it was, then close the removed ones.
  std::map<std::string, std::shared_ptr<ListenerGroup>> next_groups, added;
  try {
    for (const auto& [name, l] : next->listeners) {
      auto it = groups_.find(name);
      auto old = snapshot_->listeners.find(name);
      if (it != groups_.end() && old != snapshot_->listeners.end() &&
          old->second.cfg.address.str() == l.cfg.address.str() && old->second.cfg.protocol == l.cfg.protocol) {
        next_groups[name] = it->second;
      } else {
        added[name] = next_groups[name] = bind_listener(l);
      }
    }
  } catch (const std::exception& e) {
    spdlog::error("reload rejected, the previous config stays in force: {}", e.what());
    return false;
  }
  // A new admin address is bound before anything changes, like a new listener.
  std::unique_ptr<net::tcp::acceptor> next_admin;
  std::string next_admin_address;
  const bool admin_moved = next->config.admin.str() != snapshot_->config.admin.str();
  if (admin_moved || !admin_) {
    try {
      next_admin = bind_admin(next->config.admin, next_admin_address);
    } catch (const std::exception& e) {
      if (admin_moved) {
        spdlog::error("reload rejected, the previous config stays in force: {}", e.what());
        return false;
      }
      spdlog::error("{}; /metrics, /healthz and /readyz are still not served", e.what());
    }
  }
  for (auto& [name, g] : groups_) {
    if (next_groups.count(name) && next_groups[name] == g) continue;
    for (std::size_t i = 0; i < workers_.size(); ++i)
      asio::post(workers_[i]->ioc, [g, i] {
        boost::system::error_code ec;
        g->acceptors[i]->close(ec);
      });
  }
  install_snapshot(next);
  groups_ = next_groups;
  for (auto& [name, g] : added) {
    start_accepting(g);
    spdlog::info("listener '{}' ready on {}", name, g->address);
  }
  if (next_admin) {
    boost::system::error_code ignored;
    if (admin_) admin_->close(ignored);  // its accept loop ends; open admin connections finish
    admin_ = std::move(next_admin);
    admin_address_ = next_admin_address;
    start_admin();
  }
  spdlog::info("reload complete: config generation {}", next->generation);
  watch_files();
  return true;
}

// Reload when the config file or a file a TLS bundle names changes (in place, renamed over, or
// by a Kubernetes ..data symlink swap). The watcher thread only posts to the main io_context.
void Server::watch_files() {
  std::vector<std::filesystem::path> files{snapshot_->config.path};
  for (const auto& [name, bundle] : snapshot_->config.tls)
    for (const std::string* f : {&bundle.cert, &bundle.key, &bundle.ca, &bundle.crl})
      if (!f->empty()) files.emplace_back(*f);
  file_watch_.reset();  // the files may differ after a reload: stop the old watcher first
  try {
    file_watch_ = std::make_unique<certs::WatchThread>(files, [this](const std::vector<std::filesystem::path>& changed) {
      asio::post(main_ioc_, [this, why = changed.front().string() + " changed"] {
        if (!stopping_) reload(why);
      });
    });
  } catch (const std::exception& e) {
    spdlog::warn("config and certificate files are not watched (reload with SIGHUP): {}", e.what());
  }
}

void Server::wait_signal() {
  signals_->async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    handle_signal(sig);
    if (!stopping_) wait_signal();
  });
}

void Server::stop() {
  asio::post(main_ioc_, [this] { handle_signal(SIGTERM); });
}

void Server::handle_signal(int sig) {
  if (sig == SIGHUP) {
    reload("SIGHUP");
  } else if (sig == SIGUSR1) {
    if (observe::reopen_access_log()) spdlog::info("access log reopened");
  } else if (!stopping_) {
    stopping_ = true;
    // The drain_timeout_ms of the config in force now (a reload may have changed it).
    const std::chrono::milliseconds drain_timeout(snapshot_->config.drain_timeout_ms);
    spdlog::info("{}: stop accepting, draining for up to {} ms", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 drain_timeout.count());
    for (auto& [name, g] : groups_)
      for (std::size_t i = 0; i < workers_.size(); ++i)
        asio::post(workers_[i]->ioc, [g, i] {
          boost::system::error_code ignored;
          g->acceptors[i]->close(ignored);
        });
    for (auto& w : workers_) asio::post(w->ioc, [wp = w.get()] { wp->drain(); });
    ready_ = false;
    if (options_.on_drain) options_.on_drain();
    drain_deadline_ = std::chrono::steady_clock::now() + drain_timeout;
    drain_tick_ = std::make_unique<asio::steady_timer>(main_ioc_);
    poll_drain();
  }
}

// The end of the drain: every connection closed, or the drain deadline passed.
void Server::poll_drain() {
  drain_tick_->expires_after(std::chrono::milliseconds(50));
  drain_tick_->async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    std::uint64_t active = 0;
    for (auto& w : workers_) active += w->active.load();
    if (active == 0 || std::chrono::steady_clock::now() >= drain_deadline_) {
      if (active) spdlog::warn("drain timeout: closing {} connection(s)", active);
      signals_->cancel();
      main_ioc_.stop();
      return;
    }
    poll_drain();
  });
}

namespace {
// glibc gives the top of a heap back to the kernel whenever more than 128 KiB of it is free.
// Each request takes a 64 KiB head buffer, an upstream response buffer and OpenSSL's record
// buffers, and frees them when the connection goes idle (an idle connection holds none), so
// every request crossed that line: madvise, page faults on the next request, and a TLB
// shootdown across the worker threads. That cost keep-alive throughput 60 % (12k against 30k
// requests/s in benchmarks/compare.sh). Keep up to 32 MiB free per arena instead, and serve
// buffers up to the largest head buffer (header_bytes <= 16 MiB) from the heap, not from mmap.
void keep_freed_memory() {
#ifdef __GLIBC__
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  mallopt(M_MMAP_THRESHOLD, (16 << 20) + (1 << 20));
#endif
}
}  // namespace

int Server::run() {
  keep_freed_memory();
  for (auto& [name, g] : groups_) start_accepting(g);
  for (auto& w : workers_) {
    threads_.emplace_back([wp = w.get()] {
      auto guard = asio::make_work_guard(wp->ioc);
      wp->ioc.run();
    });
  }

  signals_ = std::make_unique<asio::signal_set>(main_ioc_, SIGINT, SIGTERM, SIGHUP);
  signals_->add(SIGUSR1);
  wait_signal();
  watch_files();
  // Announced only once signals are handled: a test may send SIGHUP as soon as it reads this.
  for (auto& [name, g] : groups_) spdlog::info("listener '{}' ready on {}", name, g->address);
  ready_ = true;
  auto handlers = std::make_shared<observe::AdminHandlers>();
  handlers->not_ready = [this] { return not_ready(); };
  handlers->metrics = [this] { return scrape(); };
  handlers->config_json = [this] { return observe::config_to_json(snapshot_->config); };
  admin_handlers_ = handlers;
  if (admin_) start_admin();
  main_ioc_.run();
  if (admin_) {
    boost::system::error_code ignored;
    admin_->close(ignored);
  }
  file_watch_.reset();
  for (auto& w : workers_) w->ioc.stop();
  for (auto& t : threads_) t.join();
  threads_.clear();
  spdlog::info("stopped");
  return 0;
}

}  // namespace portcullis
