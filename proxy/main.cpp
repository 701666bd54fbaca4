// portcullis: the command line (CONFIG.md). Exit codes: 0 success, 1 invalid input (config,
// arguments, certificate), 2 runtime failure.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <ctime>
#include <iostream>

#include "proxy/cli/commands.hpp"
#include "proxy/config.hpp"
#include "proxy/demo.hpp"
#include "proxy/firewall_glue.hpp"
#include "proxy/http/docker_gateway.hpp"
#include "proxy/observe/access_log.hpp"
#include "proxy/observe/probes.hpp"
#include "proxy/privileges.hpp"
#include "proxy/server.hpp"
#include "proxy/version.hpp"

namespace {

using namespace portcullis;

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_color_mt("portcullis");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(level));
}

// Prints every diagnostic as FILE:LINE:COL: message.
void print_diagnostics(const std::vector<config::Diagnostic>& ds) {
  for (const auto& d : ds) std::cerr << d.str() << "\n";
}

int cmd_check(const std::string& path) {
  try {
    auto cfg = config::load_file(path);
    auto warnings = cfg.warnings;
    for (auto& w : http::docker_config_warnings(cfg)) warnings.push_back(std::move(w));
    build_snapshot(std::move(cfg));  // builds TLS contexts: catches unusable certificates and keys
    print_diagnostics(warnings);
    std::cout << path << ": ok" << (warnings.empty() ? "" : " (with warnings)") << "\n";
    return 0;
  } catch (const config::ConfigError& e) {
    print_diagnostics(e.diagnostics);
    return 1;
  }
}

// A warning in the log for each loaded certificate closer to expiry than its bundle allows.
void warn_expiring_certificates(const Snapshot& snap) {
  auto now = std::time(nullptr);
  for (const auto& [name, l] : snap.listeners)
    if (l.server_ctx)
      certs::warn_if_expiring(l.cfg.tls, l.server_ctx.get(), snap.config.tls.at(l.cfg.tls).expiry_warning_days, now);
  for (const auto& [name, u] : snap.upstreams)
    if (u.client_ctx && !u.cfg.tls.empty())
      certs::warn_if_expiring(u.cfg.tls, u.client_ctx.get(), snap.config.tls.at(u.cfg.tls).expiry_warning_days, now);
}

int cmd_run(const std::string& path, bool no_firewall) {
  std::shared_ptr<const Snapshot> snap;
  try {
    auto cfg = config::load_file(path);
    setup_logging(cfg.log.level);
    for (const auto& w : cfg.warnings) spdlog::warn("{}", w.str());
    for (const auto& w : http::docker_config_warnings(cfg)) spdlog::warn("{}", w.str());
    snap = build_snapshot(std::move(cfg));
  } catch (const config::ConfigError& e) {
    print_diagnostics(e.diagnostics);
    return 1;
  }
  if (!observe::configure_access_log(snap->config.log.access_log)) return 1;
  warn_expiring_certificates(*snap);
  RunOptions options;
  options.no_firewall = no_firewall;
  if (snap->config.firewall && !no_firewall) {
    if (int rc = apply_firewall_at_startup(*snap); rc != 0) return rc;
    options.firewall_applied = true;
  }
  try {
    // The kubelet's probes (docs/deploy.md): bound with the listeners, served until the proxy
    // exits; the sidecar reports itself not ready from the start of a drain.
    std::unique_ptr<observe::ProbesListener> probes;
    options.on_drain = [&probes] {
      if (probes) probes->drain();
    };
    Server server(snap, options);
    server.bind();
    if (snap->config.probes) {
      std::map<std::string, observe::AppProbe> app_probes;
      if (const char* env = std::getenv("PORTCULLIS_APP_PROBES")) app_probes = observe::parse_app_probes(env);
      probes = std::make_unique<observe::ProbesListener>(*snap->config.probes, std::move(app_probes));
      spdlog::info("listener 'probes' ready on {}", probes->address());
    }
    if (const auto& ra = snap->config.run_as) {
      drop_privileges(ra->uid, ra->gid);  // after binding and the firewall: nothing later needs root
      spdlog::info("running as uid {} gid {} with no capabilities", ra->uid, ra->gid);
    }
    if (probes) probes->start();
    return server.run();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  // OpenSSL's socket BIO writes with write(2): a peer that hangs up right after the handshake
  // (before reading the TLS 1.3 session tickets) would otherwise kill the process with SIGPIPE.
  std::signal(SIGPIPE, SIG_IGN);
  CLI::App app{"Portcullis: a network policy enforcement proxy (mTLS, L7 allowlists, nftables)", "portcullis"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every command");

  std::string config_path;
  bool no_firewall = false;
  auto* run = app.add_subcommand("run", "run the proxy (foreground; logs to stderr)");
  run->add_option("-c,--config", config_path, "config file")->required();
  run->add_flag("--no-firewall", no_firewall, "do not apply the firewall section (an init step applies it)");
  int rc = 0;
  run->callback([&] { rc = cmd_run(config_path, no_firewall); });

  auto* check = app.add_subcommand("check", "validate a config; print FILE:LINE:COL: message for each problem");
  check->add_option("-c,--config", config_path, "config file")->required();
  check->callback([&] { rc = cmd_check(config_path); });

  auto* demo = app.add_subcommand("demo", "the quickstart: dev certs, an echo upstream, the proxy, allowed and denied requests");
  demo->callback([&] { rc = run_demo(); });

  auto* version = app.add_subcommand("version", "print the version");
  version->callback([&] { std::cout << "portcullis " << PORTCULLIS_VERSION << "\n"; });

  cli::register_certs_commands(app);
  cli::register_firewall_commands(app);
  cli::register_explain_command(app);
  cli::register_inject_command(app);
  cli::register_webhook_command(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    std::cerr << "portcullis: " << e.what() << "\n";
    return 1;
  }
  return rc;
}

