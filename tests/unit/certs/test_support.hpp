#pragma once
// Shared by the certs tests: a scratch directory, a dev CA in it, and TLS handshakes between two
// SSL objects over an in-memory BIO pair (no sockets, no threads).
#include <openssl/ssl.h>

#include <filesystem>
#include <memory>
#include <string>

#include "certs/dev_ca.hpp"
#include "certs/tls.hpp"

namespace portcullis::certs::testing {

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
struct ScratchDir {
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::filesystem::path path;
};

// init_ca(dir/name) and return the directory.
std::filesystem::path make_ca(const ScratchDir& scratch, const std::string& name = "ca");

// issue() with `options` (ca_dir/out_dir/name filled in when empty); returns the bundle.
BundleSpec issue_bundle(const std::filesystem::path& ca_dir, const std::filesystem::path& out_dir,
                        IssueOptions options);

std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& content);

using SslPtr = std::unique_ptr<SSL, decltype(&SSL_free)>;

struct Handshake {
  SslPtr client{nullptr, SSL_free};
  SslPtr server{nullptr, SSL_free};
  bool ok = false;
};

// Runs the handshake to completion or failure. `session` (optional) is offered for resumption;
// `server_name` (optional) is checked against the server certificate.
Handshake handshake(SSL_CTX* client_ctx, SSL_CTX* server_ctx, SSL_SESSION* session = nullptr,
                    const std::string& server_name = {});

// After a successful handshake, lets the client read the server's post-handshake messages
// (TLS 1.3 NewSessionTicket) and returns the session to resume with.
SSL_SESSION* take_session(Handshake& done);

// X509 of a PEM file's first certificate (caller frees).
X509* load_certificate(const std::filesystem::path& pem);

}  // namespace portcullis::certs::testing
