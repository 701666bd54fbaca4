#pragma once
// TLS contexts built from a named bundle of the config. Contexts are built once per certificate
// version and shared read-only by all workers (a rotation builds a new one).
#include <openssl/ssl.h>

#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>

#include "certs/identity.hpp"

namespace portcullis::certs {

struct BundleSpec {
  std::string name;
  std::string cert;  // PEM chain (leaf first); may be empty for a client bundle that sends no cert
  std::string key;
  std::string ca;    // trust anchors for the peer's certificate
  std::string crl;   // optional
  int min_version = 12;  // 12 = TLS 1.2, 13 = TLS 1.3
  int verify_depth = 4;
  int expiry_warning_days = 7;
};

enum class ClientCertMode { required, optional, none };

struct TlsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using SslCtxPtr = std::shared_ptr<SSL_CTX>;

// A server context for a listener: the bundle's chain and key, peers verified against its CA.
// alpn: the protocols we serve, in preference order (e.g. {"http/1.1"}); empty = no ALPN.
// Throws TlsError naming the file at fault.
SslCtxPtr make_server_context(const BundleSpec& bundle, ClientCertMode mode,
                              std::span<const std::string> alpn);

// A client context for originating TLS upstream: verifies the server against bundle.ca (or the
// system store when ca is empty), presents bundle.cert/key when given. Throws TlsError.
SslCtxPtr make_client_context(const BundleSpec& bundle, std::span<const std::string> alpn);

// After a successful handshake: the identity of a peer whose certificate verified, or nullopt
// when the peer sent none.
std::optional<Identity> peer_identity(const SSL* ssl);

// Identity of one certificate (no verification: the caller has verified the chain).
Identity identity_from_x509(X509* cert);

}  // namespace portcullis::certs
