// `portcullis certs init|issue|show` (CONFIG.md): the dev CA for demos, tests and small setups.
// Exit codes: 0 success, 1 invalid input (a bad argument, a missing CA, an unreadable file).
#include <iostream>
#include <stdexcept>

#include "certs/dev_ca.hpp"
#include "proxy/cli/commands.hpp"

namespace portcullis::cli {

namespace {

// Runs one certs command; any error is one line on stderr and exit code 1.
template <typename Command>
void run_or_exit_1(Command command) {
  try {
    command();
  } catch (const std::exception& error) {
    std::cerr << "portcullis: " << error.what() << "\n";
    throw CLI::RuntimeError(1);
  }
}

}  // namespace

void register_certs_commands(CLI::App& app) {
  auto* certs = app.add_subcommand("certs", "the dev CA: create it, issue certificates, show a certificate");
  certs->require_subcommand(1);

  // Options live as long as the app: CLI11 writes into them while parsing, callbacks read them.
  auto ca_dir = std::make_shared<std::string>();
  auto* init = certs->add_subcommand("init", "create a dev CA (ECDSA P-256): DIR/ca.crt, DIR/ca.key (0600)");
  init->add_option("--dir", *ca_dir, "directory for the CA (created if missing)")->required();
  init->callback([ca_dir] {
    run_or_exit_1([&] {
      certs::init_ca(*ca_dir);
      std::cout << "wrote " << *ca_dir << "/ca.crt and " << *ca_dir << "/ca.key\n";
    });
  });

  auto options = std::make_shared<certs::IssueOptions>();
  auto ca = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto client_only = std::make_shared<bool>(false);
  auto server_only = std::make_shared<bool>(false);
  auto* issue = certs->add_subcommand(
      "issue",
      "issue a certificate: OUT/NAME.crt, OUT/NAME.key (0600), OUT/ca.crt; clientAuth and serverAuth "
      "unless --client or --server");
  issue->add_option("--ca", *ca, "the CA directory (from `certs init`)")->required();
  issue->add_option("--out", *out, "output directory (created if missing)")->required();
  issue->add_option("--name", options->name, "file name stem: NAME.crt, NAME.key")->required();
  issue->add_option("--spiffe", options->spiffe, "SPIFFE ID (URI SAN), e.g. spiffe://cluster.local/ns/NS/sa/SA");
  issue->add_option("--cn", options->cn, "subject CN, the user (default: NAME)");
  issue->add_option("--org", options->orgs, "subject O, a group (repeatable)")->allow_extra_args(false);
  issue->add_option("--dns", options->dns, "DNS SAN (repeatable)")->allow_extra_args(false);
  issue->add_option("--ip", options->ips, "IP SAN (repeatable)")->allow_extra_args(false);
  issue->add_option("--days", options->days, "validity in days")->capture_default_str();
  auto* client_flag = issue->add_flag("--client", *client_only, "clientAuth only");
  issue->add_flag("--server", *server_only, "serverAuth only")->excludes(client_flag);
  issue->add_flag("--docker", options->docker, "also write ca.pem, cert.pem, key.pem (for DOCKER_CERT_PATH)");
  issue->callback([=] {
    run_or_exit_1([&] {
      certs::IssueOptions request = *options;
      request.ca_dir = *ca;
      request.out_dir = *out;
      // Neither flag: a certificate both sides can use (sidecars are clients and servers).
      request.client = !*server_only;
      request.server = !*client_only;
      certs::issue(request);
      std::cout << "wrote " << *out << "/" << request.name << ".crt, " << *out << "/" << request.name << ".key, "
                << *out << "/ca.crt" << (request.docker ? ", ca.pem, cert.pem, key.pem" : "") << "\n";
    });
  });

  auto file = std::make_shared<std::string>();
  auto* show = certs->add_subcommand("show", "subject, SANs, validity and fingerprint of a PEM certificate");
  show->add_option("FILE", *file, "PEM file (every certificate in it is shown)")->required();
  show->callback([file] { run_or_exit_1([&] { std::cout << certs::describe(*file); }); });
}

}  // namespace portcullis::cli
