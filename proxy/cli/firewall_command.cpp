// `portcullis firewall plan|apply|show|delete -c FILE`, and the firewall step of `portcullis run`.
// Exit codes: 0 success, 1 invalid config, 2 the kernel refused (or CAP_NET_ADMIN is missing).
#include <spdlog/spdlog.h>

#include <charconv>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "firewall/netlink.hpp"
#include "firewall/ruleset.hpp"
#include "proxy/cli/commands.hpp"
#include "proxy/config.hpp"
#include "proxy/firewall_glue.hpp"

namespace portcullis {
namespace {

firewall::Spec load_spec(const std::string& path) {
  try {
    auto cfg = config::load_file(path);
    if (!cfg.firewall) {
      std::cerr << path << ": the config has no firewall: section\n";
      throw CLI::RuntimeError(1);
    }
    return *cfg.firewall;
  } catch (const config::ConfigError& e) {
    for (const auto& d : e.diagnostics) std::cerr << d.str() << "\n";
    throw CLI::RuntimeError(1);
  }
}

// Per-pod settings that `portcullis inject` passes to the firewall init container (from the
// annotations portcullis.io/inbound-ports and portcullis.io/exclude-outbound-ports).
struct InterceptOverrides {
  std::optional<std::string> inbound_ports;           // replaces intercept.inbound.ports ("" = none)
  std::optional<std::string> exclude_outbound_ports;  // added to intercept.outbound.exclude_ports
};

std::vector<std::uint16_t> port_list(const std::string& text, const char* flag) {
  std::vector<std::uint16_t> ports;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    unsigned v = 0;
    auto [p, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (ec != std::errc() || p != item.data() + item.size() || v == 0 || v > 65535) {
      std::cerr << "portcullis firewall: " << flag << ": '" << item << "' is not a port number (1-65535)\n";
      throw CLI::RuntimeError(1);
    }
    ports.push_back(static_cast<std::uint16_t>(v));
  }
  return ports;
}

void apply_overrides(firewall::Spec& spec, const InterceptOverrides& o, const std::string& path) {
  if (o.inbound_ports) {
    if (!spec.intercept_inbound) {
      std::cerr << path << ": --inbound-ports needs firewall.intercept.inbound (its `to` port) in the config\n";
      throw CLI::RuntimeError(1);
    }
    spec.intercept_inbound->ports = port_list(*o.inbound_ports, "--inbound-ports");
    // A pod that serves no port: nothing to redirect (ingress still drops what it does not allow).
    if (spec.intercept_inbound->ports.empty()) spec.intercept_inbound.reset();
  }
  // Without outbound interception nothing is redirected, so there is nothing to exclude.
  if (o.exclude_outbound_ports && spec.intercept_outbound)
    for (auto p : port_list(*o.exclude_outbound_ports, "--exclude-outbound-ports"))
      spec.intercept_outbound->exclude_ports.push_back(p);
}

firewall::Ruleset load_ruleset(const std::string& path, const InterceptOverrides& overrides = {}) {
  try {
    auto spec = load_spec(path);
    apply_overrides(spec, overrides, path);
    return firewall::build_ruleset(spec);
  } catch (const firewall::SpecError& e) {
    std::cerr << path << ": " << e.what() << "\n";
    throw CLI::RuntimeError(1);
  }
}

void check(const firewall::ApplyResult& r) {
  if (r.ok()) return;
  std::cerr << "portcullis firewall: " << r.message << "\n";
  throw CLI::RuntimeError(2);
}

}  // namespace

int apply_firewall_at_startup(const Snapshot& snap) {
  if (!snap.config.firewall) return 0;
  firewall::Ruleset rs;
  try {
    rs = firewall::build_ruleset(*snap.config.firewall);
  } catch (const firewall::SpecError& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  const auto r = firewall::apply(rs);
  if (!r.ok()) {
    spdlog::error("{}", r.message);  // names the rejected object, or CAP_NET_ADMIN
    return 2;
  }
  spdlog::info("firewall: table inet {} applied ({} messages, {} bytes, one transaction)", rs.table, r.messages,
               r.bytes);
  return 0;
}

namespace cli {

void register_firewall_commands(CLI::App& app) {
  auto* fw = app.add_subcommand("firewall", "the nftables table derived from the config: plan|apply|show|delete");
  fw->require_subcommand(1);
  auto path = std::make_shared<std::string>();
  auto sub = [&](const char* name, const char* help) {
    auto* c = fw->add_subcommand(name, help);
    c->add_option("-c,--config", *path, "config file")->required();
    return c;
  };
  auto overrides = std::make_shared<InterceptOverrides>();
  auto intercept_options = [overrides](CLI::App* c) {
    c->add_option("--inbound-ports", overrides->inbound_ports,
                  "comma-separated ports replacing firewall.intercept.inbound.ports (set by portcullis inject)");
    c->add_option("--exclude-outbound-ports", overrides->exclude_outbound_ports,
                  "comma-separated ports added to firewall.intercept.outbound.exclude_ports");
    return c;
  };
  intercept_options(sub("plan", "print the nft ruleset that apply would install"))->callback([path, overrides] {
    std::cout << firewall::render_nft(load_ruleset(*path, *overrides));
  });
  intercept_options(sub("apply", "install the ruleset as one atomic transaction (replaces only our table)"))
      ->callback([path, overrides] {
    const auto rs = load_ruleset(*path, *overrides);
    const auto r = firewall::apply(rs);
    check(r);
    std::cout << "table inet " << rs.table << " applied (" << r.messages << " messages, " << r.bytes
              << " bytes, one transaction)\n";
  });
  sub("show", "print what is installed in our table")->callback([path] {
    std::string out;
    const auto spec = load_spec(*path);
    const auto r = firewall::show_table(spec.table, out);
    std::cout << out;
    check(r);
  });
  sub("delete", "remove our table (nothing else)")->callback([path] {
    const auto spec = load_spec(*path);
    check(firewall::delete_table(spec.table));
    std::cout << "table inet " << spec.table << " deleted\n";
  });
}

}  // namespace cli
}  // namespace portcullis
