#include "certs/tls.hpp"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string_view>

#include "certs/spiffe.hpp"
#include "certs/ticket_keys.hpp"
#include "certs/x509_text.hpp"

namespace portcullis::certs {

namespace {

using detail::drain_openssl_errors;

// TLS 1.2: forward secrecy (ECDHE) and AEAD only, as in Mozilla's "intermediate" profile.
constexpr const char* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
// TLS 1.3 suites are all AEAD; listed so that a changed OpenSSL default cannot widen them.
constexpr const char* tls13_ciphersuites = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
constexpr const char* key_exchange_groups = "X25519:P-256:P-384";

[[noreturn]] void fail(const BundleSpec& bundle, const std::string& message) {
  throw TlsError("tls bundle '" + bundle.name + "': " + message);
}

[[noreturn]] void fail_with_openssl(const BundleSpec& bundle, const std::string& message) {
  fail(bundle, message + ": " + drain_openssl_errors());
}

// OpenSSL's own messages for a missing file are vague ("system lib"); check first so the
// operator reads "No such file or directory" or "Permission denied" next to the path.
void require_readable(const BundleSpec& bundle, const char* what, const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    fail(bundle, std::string(what) + " " + path + ": " + std::strerror(errno));
  }
  std::fclose(file);
}

// ALPN protocols in wire format live in ex_data so that they are freed with the SSL_CTX,
// which can outlive our shared_ptr while connections made from it are still open.
void free_alpn_protocols(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<std::string*>(ptr); }

int alpn_ex_data_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_alpn_protocols);
  return index;
}

std::string alpn_wire_format(const BundleSpec& bundle, std::span<const std::string> alpn) {
  std::string wire;
  for (const std::string& protocol : alpn) {
    if (protocol.empty() || protocol.size() > 255) {
      fail(bundle, "ALPN protocol names must be 1 to 255 bytes long");
    }
    wire.push_back(static_cast<char>(protocol.size()));
    wire += protocol;
  }
  return wire;
}

// Picks our most preferred protocol that the client also offers. A client whose offer has
// none of ours gets no ALPN extension back (NOACK) rather than a failed handshake, as nginx
// does: the HTTP layer then decides.
int select_alpn(SSL* ssl, const unsigned char** out, unsigned char* out_length, const unsigned char* offered,
                unsigned int offered_length, void*) {
  const auto* ours = static_cast<const std::string*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), alpn_ex_data_index()));
  if (ours == nullptr) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  for (std::size_t i = 0; i < ours->size(); i += 1 + static_cast<unsigned char>((*ours)[i])) {
    const std::string_view wanted(ours->data() + i + 1, static_cast<unsigned char>((*ours)[i]));
    // The client's list is untrusted: every length is checked against the buffer.
    for (unsigned int j = 0; j < offered_length;) {
      const unsigned int length = offered[j];
      if (length == 0 || j + 1 + length > offered_length) {
        return SSL_TLSEXT_ERR_NOACK;
      }
      const std::string_view candidate(reinterpret_cast<const char*>(offered + j + 1), length);
      if (candidate == wanted) {
        *out = offered + j + 1;
        *out_length = static_cast<unsigned char>(length);
        return SSL_TLSEXT_ERR_OK;
      }
      j += 1 + length;
    }
  }
  return SSL_TLSEXT_ERR_NOACK;
}

// A client's own certificate must not be a CA's (SPIFFE X509-SVID 4.1 and 4.3: cA false, no
// keyCertSign or cRLSign; go-spiffe refuses one). OpenSSL's clientAuth purpose check lets a
// leaf with cA=TRUE through when its key usage allows signing, or when it has none.
int refuse_ca_as_client(int preverify_ok, X509_STORE_CTX* store) {
  if (preverify_ok != 1 || X509_STORE_CTX_get_error_depth(store) != 0) return preverify_ok;
  X509* cert = X509_STORE_CTX_get_current_cert(store);
  if (cert == nullptr) return preverify_ok;
  const uint32_t flags = X509_get_extension_flags(cert);
  const bool signs_certificates =
      (flags & EXFLAG_KUSAGE) != 0 && (X509_get_key_usage(cert) & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) != 0;
  if ((flags & EXFLAG_CA) != 0 || signs_certificates) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_INVALID_PURPOSE);
    return 0;
  }
  return preverify_ok;
}

// A key file with a passphrase must fail to load, not prompt on the terminal.
int refuse_passphrase(char*, int, int, void*) { return 0; }

SslCtxPtr new_context(const BundleSpec& bundle, const SSL_METHOD* method) {
  SSL_CTX* raw = SSL_CTX_new(method);
  if (raw == nullptr) {
    fail_with_openssl(bundle, "cannot create a TLS context");
  }
  SslCtxPtr ctx(raw, SSL_CTX_free);

  int min_version = 0;
  if (bundle.min_version == 12) {
    min_version = TLS1_2_VERSION;
  } else if (bundle.min_version == 13) {
    min_version = TLS1_3_VERSION;
  } else {
    fail(bundle, "min_version must be 1.2 or 1.3");
  }
  if (SSL_CTX_set_min_proto_version(raw, min_version) != 1 || SSL_CTX_set_cipher_list(raw, tls12_ciphers) != 1 ||
      SSL_CTX_set_ciphersuites(raw, tls13_ciphersuites) != 1 ||
      SSL_CTX_set1_groups_list(raw, key_exchange_groups) != 1) {
    fail_with_openssl(bundle, "cannot set TLS versions and cipher suites");
  }
  SSL_CTX_set_options(raw, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  // Frees the 17 KiB record buffers of idle connections (sidecars hold many idle ones).
  SSL_CTX_set_mode(raw, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(raw, refuse_passphrase);
  if (bundle.verify_depth < 0 || bundle.verify_depth > 100) {
    fail(bundle, "verify_depth must be between 0 and 100");
  }
  SSL_CTX_set_verify_depth(raw, bundle.verify_depth);
  return ctx;
}

void load_chain_and_key(SSL_CTX* ctx, const BundleSpec& bundle) {
  require_readable(bundle, "certificate", bundle.cert);
  require_readable(bundle, "key", bundle.key);
  // Key first: loading the certificate after it drops a key that does not match (instead of
  // failing with OpenSSL's terse "key values mismatch"), which the check below then reports.
  if (SSL_CTX_use_PrivateKey_file(ctx, bundle.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    fail_with_openssl(bundle, "cannot load private key " + bundle.key + " (PEM, without a passphrase)");
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, bundle.cert.c_str()) != 1) {
    fail_with_openssl(bundle, "cannot load certificate chain " + bundle.cert);
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    fail(bundle, "key " + bundle.key + " does not match certificate " + bundle.cert);
  }
}

void load_trust_anchors(SSL_CTX* ctx, const BundleSpec& bundle) {
  require_readable(bundle, "ca", bundle.ca);
  if (SSL_CTX_load_verify_locations(ctx, bundle.ca.c_str(), nullptr) != 1) {
    fail_with_openssl(bundle, "cannot load ca " + bundle.ca);
  }
}

void load_crl(SSL_CTX* ctx, const BundleSpec& bundle) {
  if (bundle.crl.empty()) {
    return;
  }
  require_readable(bundle, "crl", bundle.crl);
  X509_LOOKUP* lookup = X509_STORE_add_lookup(SSL_CTX_get_cert_store(ctx), X509_LOOKUP_file());
  if (lookup == nullptr || X509_load_crl_file(lookup, bundle.crl.c_str(), X509_FILETYPE_PEM) <= 0) {
    fail_with_openssl(bundle, "cannot load crl " + bundle.crl);
  }
  // The leaf's issuer must have a CRL: a missing or stale CRL fails the handshake (fail closed).
  X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_CRL_CHECK);
}

// With no intermediates in the certificate file, OpenSSL builds the chain it sends from the
// trust store on every handshake: a whole X509_verify_cert, an ECDSA verification included
// (about 10% of a client-certificate handshake's instructions). Build it once here, from the same
// store (verification errors ignored, as the per-handshake build does), and turn the per-handshake
// build off. Call after the trust store is loaded.
// The self-signed root is left out (RFC 8446 4.4.2 and RFC 5246 7.4.2 allow it; nginx and
// HAProxy send what the file holds): a peer must already trust the root, so sending it only costs
// bytes and, on the peer, the parse of one more certificate per handshake (with OpenSSL 3.0,
// about as many instructions as our whole share of a handshake's request). Intermediates found
// in the store are still sent.
void build_chain_once(SSL_CTX* ctx) {
  STACK_OF(X509)* chain = nullptr;
  STACK_OF(X509)* extra = nullptr;
  if (SSL_CTX_get0_certificate(ctx) == nullptr || SSL_CTX_get0_chain_certs(ctx, &chain) != 1 ||
      sk_X509_num(chain) > 0 || (SSL_CTX_get_extra_chain_certs_only(ctx, &extra) == 1 && sk_X509_num(extra) > 0)) {
    return;  // the file's own chain is sent as it is: OpenSSL builds nothing then either
  }
  // On failure (only allocation or the security level can fail it) the per-handshake build stays on.
  if (SSL_CTX_build_cert_chain(ctx, SSL_BUILD_CHAIN_FLAG_NO_ROOT | SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR |
                                         SSL_BUILD_CHAIN_FLAG_CLEAR_ERROR) > 0) {
    SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
    // The built chain belongs to the certificate, and SSL_new copies a certificate's chain (a
    // stack of 64 bytes or more) into every connection. Sent from the context's extra chain
    // certificates instead, the same certificates go out in the same order and nothing is copied.
    STACK_OF(X509)* built = nullptr;
    if (SSL_CTX_get0_chain_certs(ctx, &built) == 1 && built != nullptr) {
      bool moved = true;
      for (int i = 0; i < sk_X509_num(built) && moved; ++i) {
        X509* cert = sk_X509_value(built, i);
        X509_up_ref(cert);
        moved = SSL_CTX_add_extra_chain_cert(ctx, cert) == 1;  // takes the reference on success
        if (!moved) X509_free(cert);
      }
      if (moved) SSL_CTX_clear_chain_certs(ctx);
      else SSL_CTX_clear_extra_chain_certs(ctx);  // keep the certificate's own chain, sent as before
    }
  }
  ERR_clear_error();
}

void set_alpn_protocols(SSL_CTX* ctx, const BundleSpec& bundle, std::span<const std::string> alpn, bool server) {
  if (alpn.empty()) {
    return;
  }
  auto wire = std::make_unique<std::string>(alpn_wire_format(bundle, alpn));
  if (server) {
    if (SSL_CTX_set_ex_data(ctx, alpn_ex_data_index(), wire.get()) != 1) {
      fail_with_openssl(bundle, "cannot store ALPN protocols");
    }
    wire.release();  // now owned by ctx, freed by free_alpn_protocols
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, nullptr);
  } else if (SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire->data()),
                                     static_cast<unsigned int>(wire->size())) != 0) {  // 0 = success here
    fail_with_openssl(bundle, "cannot set ALPN protocols");
  }
}

// Sessions resume only on a context with the same bundle, trust anchors and client-cert mode:
// a ticket from one listener's peers must not let them skip verification on another. The CA and
// CRL files count by their contents: after a reload that revokes a certificate (or drops a CA),
// a session verified before it is not resumed but handshaken again, and refused.
void set_session_id_context(SSL_CTX* ctx, const BundleSpec& bundle, ClientCertMode mode) {
  std::string scope = "portcullis";
  scope.push_back('\0');
  scope += bundle.name;
  for (const std::string* file : {&bundle.ca, &bundle.crl}) {
    scope.push_back('\0');
    scope += *file;
    if (file->empty()) continue;
    std::ifstream in(*file, std::ios::binary);
    scope.push_back('\0');
    scope.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  scope.push_back(static_cast<char>('0' + static_cast<int>(mode)));
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int digest_length = 0;
  if (EVP_Digest(scope.data(), scope.size(), digest.data(), &digest_length, EVP_sha256(), nullptr) != 1 ||
      SSL_CTX_set_session_id_context(ctx, digest.data(),
                                     std::min<unsigned int>(digest_length, SSL_MAX_SID_CTX_LENGTH)) != 1) {
    fail_with_openssl(bundle, "cannot set the session id context");
  }
}

bool is_safe_text(std::string_view text) {
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      return false;
    }
  }
  return true;
}

// UTF-8 value of a name entry, or nullopt when it cannot be converted or holds control bytes
// (a CR/LF in a CN must never reach a forwarded header or a log line).
std::optional<std::string> entry_text(const X509_NAME_ENTRY* entry) {
  unsigned char* utf8 = nullptr;
  const int length = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(entry));
  if (length < 0) {
    return std::nullopt;
  }
  std::string text(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
  OPENSSL_free(utf8);
  if (!is_safe_text(text)) {
    return std::nullopt;
  }
  return text;
}

std::string_view ia5_view(const ASN1_IA5STRING* value) {
  return {reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
          static_cast<std::size_t>(ASN1_STRING_length(value))};
}

bool has_spiffe_scheme(std::string_view uri) {
  constexpr std::string_view scheme = "spiffe:";
  if (uri.size() < scheme.size()) {
    return false;
  }
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    const char c = uri[i];
    const char lower = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (lower != scheme[i]) {
      return false;
    }
  }
  return true;
}

void read_subject_alt_names(X509* cert, Identity& identity) {
  int critical = 0;
  // NULL both when absent and when the extension appears twice (critical == -2): either way,
  // no SAN-based identity.
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, &critical, nullptr));
  if (names == nullptr) {
    return;
  }
  int spiffe_uris = 0;
  std::string spiffe;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_DNS) {
      const std::string_view dns = ia5_view(name->d.dNSName);
      // Host names only (letters, digits, '-', '.', a leading "*."): a DNS SAN is copied into
      // X-Forwarded-Client-Cert, where ';' or ',' would start a field of its own.
      if (!dns.empty() && std::all_of(dns.begin(), dns.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '*';
          })) {
        identity.dns.emplace_back(dns);
      }
    } else if (name->type == GEN_URI) {
      const std::string_view uri = ia5_view(name->d.uniformResourceIdentifier);
      if (has_spiffe_scheme(uri)) {
        ++spiffe_uris;
        if (is_valid_spiffe_id(uri)) {
          spiffe.assign(uri);
        }
      }
    }
  }
  GENERAL_NAMES_free(names);
  // An X.509-SVID carries exactly one SPIFFE ID; with several we cannot say which one is meant.
  if (spiffe_uris == 1) {
    identity.spiffe = std::move(spiffe);
  }
}

}  // namespace

SslCtxPtr make_server_context(const BundleSpec& bundle, ClientCertMode mode, std::span<const std::string> alpn) {
  SslCtxPtr ctx = new_context(bundle, TLS_server_method());
  SSL_CTX* raw = ctx.get();
  // A client's FIN without close_notify ends its stream like a close_notify, as in nginx: an HTTP
  // request is framed by its own lengths (a cut body is still an error), and a TCP relay passes
  // the FIN on as a plain client's. Without this, OpenSSL 3 answers the FIN with a decode_error
  // alert and the relay drops the upstream's answer. Upstream contexts keep the error: there a
  // response body may run until the close, and only close_notify proves it whole.
  SSL_CTX_set_options(raw, SSL_OP_IGNORE_UNEXPECTED_EOF);
  if (bundle.cert.empty() || bundle.key.empty()) {
    fail(bundle, "a listener needs both cert and key");
  }
  load_chain_and_key(raw, bundle);

  if (mode != ClientCertMode::none) {
    if (bundle.ca.empty()) {
      fail(bundle, "client certificates are verified against ca, which is not set");
    }
    load_trust_anchors(raw, bundle);
    // Tells clients which CAs we accept, so those holding several certificates pick the right one.
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(bundle.ca.c_str())) {
      SSL_CTX_set_client_CA_list(raw, names);
    }
    ERR_clear_error();
    load_crl(raw, bundle);
    // A certificate issued for servers (serverAuth only) must not authenticate a client.
    if (SSL_CTX_set_purpose(raw, X509_PURPOSE_SSL_CLIENT) != 1) {
      fail_with_openssl(bundle, "cannot require the clientAuth key usage");
    }
    const int verify =
        mode == ClientCertMode::required ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER;
    SSL_CTX_set_verify(raw, verify, refuse_ca_as_client);
  } else {
    SSL_CTX_set_verify(raw, SSL_VERIFY_NONE, nullptr);
  }

  build_chain_once(raw);
  set_session_id_context(raw, bundle, mode);
  // Stateless tickets only (no per-context session cache): the cache would die with this
  // context at the next certificate rotation, tickets keyed by the shared store do not.
  SSL_CTX_set_session_cache_mode(raw, SSL_SESS_CACHE_OFF);
  // One ticket per handshake, not OpenSSL's default two: a client resumes with one, and each
  // stateless ticket costs a serialise + re-parse of the session with the client certificate
  // in it (about 15% of a client-certificate handshake's instructions).
  SSL_CTX_set_num_tickets(raw, 1);
  TicketKeyStore::process_wide().install(raw);
  set_alpn_protocols(raw, bundle, alpn, /*server=*/true);
  return ctx;
}

SslCtxPtr make_client_context(const BundleSpec& bundle, std::span<const std::string> alpn) {
  SslCtxPtr ctx = new_context(bundle, TLS_client_method());
  SSL_CTX* raw = ctx.get();
  if (!bundle.cert.empty() || !bundle.key.empty()) {
    if (bundle.cert.empty() || bundle.key.empty()) {
      fail(bundle, "a client certificate needs both cert and key");
    }
    load_chain_and_key(raw, bundle);
  }
  if (bundle.ca.empty()) {
    if (SSL_CTX_set_default_verify_paths(raw) != 1) {
      fail_with_openssl(bundle, "cannot load the system trust store");
    }
  } else {
    load_trust_anchors(raw, bundle);
  }
  load_crl(raw, bundle);
  // The server's certificate must be issued for servers (serverAuth), not a client's.
  if (SSL_CTX_set_purpose(raw, X509_PURPOSE_SSL_SERVER) != 1) {
    fail_with_openssl(bundle, "cannot require the serverAuth key usage");
  }
  SSL_CTX_set_verify(raw, SSL_VERIFY_PEER, nullptr);
  build_chain_once(raw);
  set_alpn_protocols(raw, bundle, alpn, /*server=*/false);
  return ctx;
}

namespace {
// The peer's certificate when it may yield an identity, else null. With client_certs: optional
// a handshake can complete without a certificate; one that was sent but did not verify never
// yields an identity.
X509* verified_peer_certificate(const SSL* ssl) {
  if (ssl == nullptr) return nullptr;
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return nullptr;
  // A resumed session carries the verification of its first handshake: a certificate that has
  // expired since (tickets live up to two hours) no longer names anyone.
  if (SSL_session_reused(const_cast<SSL*>(ssl)) && X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) return nullptr;
  return cert;
}

// identity_from_x509() for a certificate whose fingerprint the caller has already computed.
Identity identity_with_fingerprint(X509* cert, std::string fingerprint) {
  Identity identity;
  const X509_NAME* subject = X509_get_subject_name(cert);
  const int entries = subject != nullptr ? X509_NAME_entry_count(subject) : 0;
  for (int i = 0; i < entries; ++i) {
    const X509_NAME_ENTRY* entry = X509_NAME_get_entry(subject, i);
    const int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(entry));
    if (nid != NID_commonName && nid != NID_organizationName) {
      continue;
    }
    const char* field = nid == NID_commonName ? "CN" : "O";
    std::string why;
    std::optional<std::string> text = entry_text(entry);
    if (!text) {
      why = std::string("a subject ") + field + " holds control characters or is not a string";
    } else if (!text->empty() && (text->front() == ' ' || text->front() == '\t' || text->back() == ' ' ||
                                  text->back() == '\t')) {
      // An HTTP parser drops the spaces around a header value (RFC 9110 5.5): " system:masters"
      // would arrive as system:masters.
      why = std::string("the subject ") + field + " \"" + *text + "\" begins or ends with a space";
      text.reset();
    }
    if (!text && identity.unusable.empty()) identity.unusable = std::move(why);
    // With several CNs the last (most specific) wins, as in Go's crypto/x509 that Kubernetes uses:
    // when that one is unusable the certificate names no user (never an earlier CN instead).
    if (nid == NID_commonName) {
      identity.user = text ? std::move(*text) : std::string();
    } else if (text) {
      identity.groups.push_back(std::move(*text));
    }
  }
  read_subject_alt_names(cert, identity);

  identity.fingerprint_sha256 = std::move(fingerprint);
  ERR_clear_error();
  return identity;
}
}  // namespace

std::optional<Identity> peer_identity(const SSL* ssl) {
  X509* cert = verified_peer_certificate(ssl);
  if (cert == nullptr) return std::nullopt;
  return identity_from_x509(cert);
}

std::shared_ptr<const Identity> PeerIdentityCache::lookup(const SSL* ssl) {
  X509* cert = verified_peer_certificate(ssl);
  if (cert == nullptr) return nullptr;
  std::string fingerprint = detail::sha256_fingerprint(cert);
  std::weak_ptr<const Identity>& slot = by_fingerprint_[fingerprint];
  if (auto shared = slot.lock()) return shared;
  auto made = std::make_shared<const Identity>(identity_with_fingerprint(cert, std::move(fingerprint)));
  slot = made;
  // Entries whose connections have all ended are dropped now and then, so the map follows the
  // certificates in use, not every certificate ever seen.
  if (++inserts_since_sweep_ >= 1024 && by_fingerprint_.size() >= 1024) {
    std::erase_if(by_fingerprint_, [](const auto& entry) { return entry.second.expired(); });
    inserts_since_sweep_ = 0;
  }
  return made;
}

Identity identity_from_x509(X509* cert) {
  if (cert == nullptr) {
    return Identity{};
  }
  return identity_with_fingerprint(cert, detail::sha256_fingerprint(cert));
}

bool expect_server_name(SSL* ssl, const std::string& server_name) noexcept {
  if (ssl == nullptr || server_name.empty()) {
    return false;
  }
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  // An IP literal is matched against IP SANs and is not sent as SNI (RFC 6066 forbids it).
  if (X509_VERIFY_PARAM_set1_ip_asc(param, server_name.c_str()) == 1) {
    return true;
  }
  ERR_clear_error();
  const bool ok =
      SSL_set_tlsext_host_name(ssl, server_name.c_str()) == 1 && SSL_set1_host(ssl, server_name.c_str()) == 1;
  if (ok) {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  }
  ERR_clear_error();
  return ok;
}

std::vector<CertificateExpiry> certificate_expiry(SSL_CTX* ctx, std::time_t now) {
  std::vector<CertificateExpiry> result;
  if (ctx == nullptr) {
    return result;
  }
  auto add = [&](X509* cert) {
    CertificateExpiry expiry;
    expiry.subject = detail::one_line_name(X509_get_subject_name(cert));
    expiry.serial = detail::serial_hex(cert);
    expiry.not_after = detail::to_time_t(X509_get0_notAfter(cert)).value_or(0);
    expiry.seconds_left = static_cast<std::int64_t>(expiry.not_after) - static_cast<std::int64_t>(now);
    result.push_back(std::move(expiry));
  };
  X509* leaf = SSL_CTX_get0_certificate(ctx);
  if (leaf == nullptr) {
    return result;
  }
  add(leaf);
  STACK_OF(X509)* chain = nullptr;
  // A chain build_chain_once() took from the trust store (it sets NO_AUTO_CHAIN, nothing else
  // does) is not a certificate the operator configured: report only the configured ones.
  const bool built_from_store = (SSL_CTX_get_mode(ctx) & SSL_MODE_NO_AUTO_CHAIN) != 0;
  if (!built_from_store && SSL_CTX_get0_chain_certs(ctx, &chain) == 1 && chain != nullptr) {
    for (int i = 0; i < sk_X509_num(chain); ++i) {
      add(sk_X509_value(chain, i));
    }
  }
  return result;
}

int warn_if_expiring(const std::string& bundle_name, SSL_CTX* ctx, int warning_days, std::time_t now) {
  constexpr std::int64_t seconds_per_day = 86400;
  const std::int64_t threshold = static_cast<std::int64_t>(warning_days) * seconds_per_day;
  int warned = 0;
  for (const CertificateExpiry& cert : certificate_expiry(ctx, now)) {
    if (cert.seconds_left <= 0) {
      spdlog::error("tls bundle '{}': certificate {} (serial {}) has EXPIRED; peers will refuse it", bundle_name,
                    cert.subject, cert.serial);
      ++warned;
    } else if (cert.seconds_left < threshold) {
      spdlog::warn("tls bundle '{}': certificate {} (serial {}) expires in {} hours", bundle_name, cert.subject,
                   cert.serial, cert.seconds_left / 3600);
      ++warned;
    }
  }
  return warned;
}

std::string peer_verify_error(const SSL* ssl) {
  if (ssl == nullptr) {
    return {};
  }
  const long result = SSL_get_verify_result(ssl);
  if (result == X509_V_OK) {
    return {};
  }
  return X509_verify_cert_error_string(result);
}

}  // namespace portcullis::certs
