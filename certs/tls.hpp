#pragma once
// TLS contexts built from a named bundle of the config. Contexts are built once per certificate
// version and shared read-only by all workers (a rotation builds a new one).
#include <openssl/ssl.h>

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "certs/identity.hpp"

namespace portcullis::certs {

struct BundleSpec {
  std::string name;
  std::string cert;  // PEM chain (leaf first); may be empty for a client bundle that sends no cert
  std::string key;
  std::string ca;        // trust anchors for the peer's certificate
  std::string crl;       // optional
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
SslCtxPtr make_server_context(const BundleSpec& bundle, ClientCertMode mode, std::span<const std::string> alpn);

// A client context for originating TLS upstream: verifies the server against bundle.ca (or the
// system store when ca is empty), presents bundle.cert/key when given. Throws TlsError.
SslCtxPtr make_client_context(const BundleSpec& bundle, std::span<const std::string> alpn);

// After a successful handshake: the identity of a peer whose certificate verified, or nullopt
// when the peer sent none.
std::optional<Identity> peer_identity(const SSL* ssl);

// Identity of one certificate (no verification: the caller has verified the chain).
Identity identity_from_x509(X509* cert);

// peer_identity() for many connections on one thread: the connections that present the same
// certificate (the same SHA-256 of its DER) share one Identity instead of each keeping a copy.
// An identity is a function of the certificate alone; whether the chain verified is checked on
// every lookup. Not thread-safe: one per worker.
class PeerIdentityCache {
 public:
  std::shared_ptr<const Identity> lookup(const SSL* ssl);
  std::size_t size() const { return by_fingerprint_.size(); }

 private:
  std::unordered_map<std::string, std::weak_ptr<const Identity>> by_fingerprint_;
  std::size_t inserts_since_sweep_ = 0;
};

// --- Added beyond the first interface (issue 5) ---

// Before connecting a client SSL: sends SNI and makes the handshake fail unless the server's
// certificate names `server_name` (a DNS name, or an IP address checked against IP SANs).
// Returns false (and sets nothing) when OpenSSL refuses the name. Never throws.
bool expect_server_name(SSL* ssl, const std::string& server_name) noexcept;

// One certificate a context presents (its leaf, then the rest of its chain).
struct CertificateExpiry {
  std::string subject;            // one-line RFC 2253 form, e.g. "CN=alice,O=ops"
  std::string serial;             // lowercase hex
  std::time_t not_after = 0;      // seconds since the epoch
  std::int64_t seconds_left = 0;  // negative once expired
};

// The certificates ctx presents to peers, with the time left on each (for the expiry metric
// and warnings). Empty for a context without a certificate. Never throws on odd certificates.
std::vector<CertificateExpiry> certificate_expiry(SSL_CTX* ctx, std::time_t now);

// Logs a warning for each certificate ctx presents with less than `warning_days` left (an error
// once expired), naming the bundle; returns how many it logged. Call after building a context
// and on a timer (e.g. hourly) so that a long-running process warns in time.
int warn_if_expiring(const std::string& bundle_name, SSL_CTX* ctx, int warning_days, std::time_t now);

// Why the peer's certificate was not accepted, for the log line of a failed handshake
// (e.g. "certificate has expired", "unsupported certificate purpose"); empty if it was.
std::string peer_verify_error(const SSL* ssl);

}  // namespace portcullis::certs
