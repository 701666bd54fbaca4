#pragma once
// Each command group registers its subcommands on the root CLI11 app (proxy/main.cpp calls these).
// A registered callback throws to fail: UsageError -> exit 1 with its message.
#include <CLI/CLI.hpp>

namespace portcullis::cli {

void register_certs_commands(CLI::App& app);     // certs init|issue|show   (proxy/cli/certs_command.cpp)
void register_firewall_commands(CLI::App& app);  // firewall plan|apply|show|delete (proxy/cli/firewall_command.cpp)
void register_explain_command(CLI::App& app);    // explain                 (proxy/cli/explain_command.cpp)
void register_inject_command(CLI::App& app);     // inject                  (proxy/cli/inject_command.cpp)
void register_webhook_command(CLI::App& app);    // webhook                 (proxy/cli/webhook_command.cpp)

}  // namespace portcullis::cli
