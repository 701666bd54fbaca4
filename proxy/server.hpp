#pragma once
// The running proxy: workers, their acceptors, signals, reload and graceful shutdown.
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "certs/file_watcher.hpp"
#include "proxy/observe/admin.hpp"
#include "proxy/observe/metrics.hpp"
#include "proxy/worker.hpp"

namespace portcullis {

struct RunOptions {
  bool no_firewall = false;
  bool firewall_applied = false;  // main applied the firewall section before the Server started
  std::function<void()> on_drain;  // called on the main thread when the drain starts (SIGTERM, SIGINT)
};

class Server {
 public:
  Server(std::shared_ptr<const Snapshot> snapshot, RunOptions options);
  ~Server();
  // Binds every listener (SO_REUSEPORT, one acceptor per worker). Throws with a clear message.
  void bind();
  // Runs until SIGTERM/SIGINT, then drains. Returns the process exit code.
  int run();
  // Same as SIGTERM: stop accepting, drain, return from run(). Thread-safe.
  void stop();
  // The port a listener is bound to (after bind()), 0 if unknown. For port-0 configs.
  std::uint16_t bound_port(const std::string& listener) const;

 private:
  void handle_signal(int sig);
  void wait_signal();
  struct ListenerGroup;
  std::shared_ptr<ListenerGroup> bind_listener(const ListenerRuntime& l);
  void start_accepting(const std::shared_ptr<ListenerGroup>& g);
  // Runs an accepted connection on worker w, on w's thread (the accept loop raised the counters).
  void spawn_connection(Worker& w, const std::shared_ptr<ListenerGroup>& g, net::tcp_socket sock);
  void connection_ended(Worker& w, ListenerGroup& g);  // lowers the counters again
  void reload(const std::string& why);
  bool try_reload(const std::string& why);  // false: rejected, the old config stays
  // Binds admin.address; throws with a clear message when it cannot.
  std::unique_ptr<boost::asio::ip::tcp::acceptor> bind_admin(const config::Address& a, std::string& bound);
  void start_admin();
  std::string not_ready();  // /readyz: empty when ready
  std::string scrape();  // main thread: sums every worker's metrics
  void install_snapshot(std::shared_ptr<const Snapshot> s);
  void watch_files();

  std::shared_ptr<const Snapshot> snapshot_;
  RunOptions options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::map<std::string, std::shared_ptr<ListenerGroup>> groups_;  // by listener name
  boost::asio::io_context main_ioc_{1};
  std::unique_ptr<boost::asio::signal_set> signals_;
  bool stopping_ = false;
  // From SIGTERM on: checks every 50 ms whether the drain is over (no timer before that, so an
  // idle proxy's main thread sleeps).
  std::unique_ptr<boost::asio::steady_timer> drain_tick_;
  std::chrono::steady_clock::time_point drain_deadline_{};
  void poll_drain();
  std::unique_ptr<certs::WatchThread> file_watch_;  // config + certificate files -> reload()
  std::unique_ptr<boost::asio::ip::tcp::acceptor> admin_;  // on main_ioc_; null if it could not bind
  std::string admin_address_;
  std::shared_ptr<const observe::AdminHandlers> admin_handlers_;
  bool ready_ = false;
  observe::MetricSet main_metrics_;  // counted on the main thread (reloads)
  // Process-wide connection cap (`max_connections` at the top of the config, else derived from
  // RLIMIT_NOFILE): every listener's connections count against it; beyond it new ones are closed.
  std::atomic<std::uint64_t> total_active_{0};
  std::atomic<std::uint64_t> max_total_{0};
  void set_connection_cap(const config::Config& cfg);
};

}  // namespace portcullis
