#include "tests/unit/certs/test_support.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <fstream>
#include <iterator>
#include <random>
#include <stdexcept>

namespace portcullis::certs::testing {

namespace fs = std::filesystem;

ScratchDir::ScratchDir() {
  std::random_device random;
  path = fs::temp_directory_path() / ("portcullis-certs-test-" + std::to_string(random()) + std::to_string(random()));
  fs::create_directories(path);
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  fs::remove_all(path, ignored);
}

fs::path make_ca(const ScratchDir& scratch, const std::string& name) {
  const fs::path dir = scratch.path / name;
  init_ca(dir);
  return dir;
}

BundleSpec issue_bundle(const fs::path& ca_dir, const fs::path& out_dir, IssueOptions options) {
  options.ca_dir = ca_dir;
  options.out_dir = out_dir;
  if (options.name.empty()) {
    options.name = "leaf";
  }
  issue(options);
  BundleSpec bundle;
  bundle.name = options.name;
  bundle.cert = (out_dir / (options.name + ".crt")).string();
  bundle.key = (out_dir / (options.name + ".key")).string();
  bundle.ca = (out_dir / "ca.crt").string();
  return bundle;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

Handshake handshake(SSL_CTX* client_ctx, SSL_CTX* server_ctx, SSL_SESSION* session, const std::string& server_name) {
  Handshake result;
  result.client.reset(SSL_new(client_ctx));
  result.server.reset(SSL_new(server_ctx));
  BIO* client_bio = nullptr;
  BIO* server_bio = nullptr;
  BIO_new_bio_pair(&client_bio, 0, &server_bio, 0);
  SSL_set_bio(result.client.get(), client_bio, client_bio);
  SSL_set_bio(result.server.get(), server_bio, server_bio);
  SSL_set_connect_state(result.client.get());
  SSL_set_accept_state(result.server.get());
  if (session != nullptr) {
    SSL_set_session(result.client.get(), session);
  }
  if (!server_name.empty()) {
    expect_server_name(result.client.get(), server_name);
  }
  // One handshake step for one side: false once that side has failed.
  auto step = [](SSL* ssl, bool& done) {
    if (done) {
      return true;
    }
    const int rc = SSL_do_handshake(ssl);
    done = rc == 1;
    return done || SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ;
  };
  bool client_done = false;
  bool server_done = false;
  // Each round moves at least one flight; a handshake needs a handful.
  for (int round = 0; round < 20 && !(client_done && server_done); ++round) {
    if (!step(result.client.get(), client_done) || !step(result.server.get(), server_done)) {
      break;
    }
  }
  // In TLS 1.3 the client finishes before the server has checked its certificate: let the client
  // read the server's verdict (an alert, or tickets) before calling it a success.
  if (client_done && server_done) {
    char byte;
    const int rc = SSL_read(result.client.get(), &byte, 1);
    const int error = SSL_get_error(result.client.get(), rc);
    result.ok = error == SSL_ERROR_WANT_READ;
  }
  ERR_clear_error();
  return result;
}

SSL_SESSION* take_session(Handshake& done) { return SSL_get1_session(done.client.get()); }

X509* load_certificate(const fs::path& pem) {
  BIO* bio = BIO_new_file(pem.c_str(), "r");
  if (bio == nullptr) {
    throw std::runtime_error("cannot read " + pem.string());
  }
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return cert;
}

}  // namespace portcullis::certs::testing
