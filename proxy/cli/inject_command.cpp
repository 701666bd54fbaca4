// `portcullis inject -f FILE|- [-o FILE]`: adds the sidecar to Kubernetes
// manifests (proxy/inject/, docs/deploy.md). Exit codes: 0 success, 1 invalid
// input (malformed YAML, FILE:LINE:COL: message), 2 an output file that cannot
// be written.
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "proxy/cli/commands.hpp"
#include "proxy/inject/inject.hpp"

namespace portcullis::cli {

namespace {

void add_inject_options(CLI::App& command, inject::Options& options) {
  command.add_option("--image", options.image, "the Portcullis image for the init container and the sidecar")
      ->capture_default_str();
  command.add_option("--config-map", options.config_map, "ConfigMap holding the sidecar config")->capture_default_str();
  command.add_option("--config-key", options.config_key, "the config's key in that ConfigMap")->capture_default_str();
  command.add_option("--secret", options.secret, "Secret with tls.crt, tls.key and ca.crt (cert-manager layout)")
      ->capture_default_str();
}

}  // namespace

void register_inject_command(CLI::App& app) {
  struct Args {
    std::string input;
    std::string output;
    inject::Options options;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("inject", "add the Portcullis sidecar to Kubernetes manifests");
  cmd->add_option("-f,--filename", args->input, "manifest file (multi-document YAML or a List); - for stdin")
      ->required();
  cmd->add_option("-o,--output", args->output, "write here instead of stdout");
  add_inject_options(*cmd, args->options);
  cmd->callback([args] {
    std::string text;
    std::string name = args->input;
    if (args->input == "-") {
      name = "<stdin>";
      text.assign(std::istreambuf_iterator<char>(std::cin), {});
    } else {
      std::ifstream in(args->input, std::ios::binary);
      if (!in) {
        std::cerr << "portcullis inject: cannot read " << args->input << "\n";
        throw CLI::RuntimeError(1);
      }
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    std::string out;
    try {
      out = inject::inject_manifests(text, name, args->options);
    } catch (const std::exception& e) {
      std::cerr << e.what() << "\n";
      throw CLI::RuntimeError(1);
    }
    if (args->output.empty()) {
      std::cout << out;
      return;
    }
    std::ofstream file(args->output, std::ios::binary | std::ios::trunc);
    file << out;
    file.close();
    if (!file) {
      std::cerr << "portcullis inject: cannot write " << args->output << "\n";
      throw CLI::RuntimeError(2);
    }
  });
}

}  // namespace portcullis::cli
