// `portcullis firewall plan|apply|show|delete -c FILE`, and the firewall step of `portcullis run`.
// Exit codes: 0 success, 1 invalid config, 2 the kernel refused (or CAP_NET_ADMIN is missing).
#include <spdlog/spdlog.h>

#include <iostream>
#include <memory>

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

firewall::Ruleset load_ruleset(const std::string& path) {
  try {
    return firewall::build_ruleset(load_spec(path));
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
  sub("plan", "print the nft ruleset that apply would install")->callback([path] {
    std::cout << firewall::render_nft(load_ruleset(*path));
  });
  sub("apply", "install the ruleset as one atomic transaction (replaces only our table)")->callback([path] {
    const auto rs = load_ruleset(*path);
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
