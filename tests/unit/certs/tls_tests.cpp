#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "certs/identity.hpp"
#include "certs/ticket_keys.hpp"
#include "certs/tls.hpp"
#include "tests/unit/certs/test_support.hpp"

using namespace portcullis::certs;
using namespace portcullis::certs::testing;

namespace {

const std::vector<std::string> http11{"http/1.1"};

IssueOptions server_options() {
  IssueOptions options;
  options.name = "server";
  options.spiffe = "spiffe://cluster.local/ns/shop/sa/catalog";
  options.dns = {"catalog.shop.svc"};
  options.client = false;
  return options;
}

IssueOptions client_options(const std::string& name = "client") {
  IssueOptions options;
  options.name = name;
  options.spiffe = "spiffe://cluster.local/ns/shop/sa/frontend";
  options.cn = "alice";
  options.orgs = {"ops", "dev"};
  options.server = false;
  return options;
}

// A server bundle, a client bundle from the same CA, and another CA's client bundle.
struct Pki {
  ScratchDir scratch;
  std::filesystem::path ca = make_ca(scratch);
  BundleSpec server = issue_bundle(ca, scratch.path / "out", server_options());
  BundleSpec client = issue_bundle(ca, scratch.path / "out", client_options());
};

// Replace the SAN extension (for shapes the dev CA refuses to issue); identity reading does
// not check signatures, so the certificate need not be re-signed.
void replace_subject_alt_names(X509* cert, const char* names) {
  const int index = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1);
  REQUIRE(index >= 0);
  X509_EXTENSION_free(X509_delete_ext(cert, index));
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, names);
  REQUIRE(extension != nullptr);
  X509_add_ext(cert, extension, -1);
  X509_EXTENSION_free(extension);
}

// A CRL signed by the dev CA in ca_dir, revoking `revoked` (none when null).
void write_crl(const std::filesystem::path& ca_dir, X509* revoked, const std::filesystem::path& out) {
  X509* ca = load_certificate(ca_dir / "ca.crt");
  BIO* key_file = BIO_new_file((ca_dir / "ca.key").c_str(), "r");
  EVP_PKEY* ca_key = PEM_read_bio_PrivateKey(key_file, nullptr, nullptr, nullptr);
  BIO_free(key_file);
  X509_CRL* crl = X509_CRL_new();
  X509_CRL_set_version(crl, X509_CRL_VERSION_2);
  X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca));
  ASN1_TIME* last_update = ASN1_TIME_adj(nullptr, std::time(nullptr), 0, -60);
  ASN1_TIME* next_update = ASN1_TIME_adj(nullptr, std::time(nullptr), 1, 0);
  X509_CRL_set1_lastUpdate(crl, last_update);
  X509_CRL_set1_nextUpdate(crl, next_update);
  if (revoked != nullptr) {
    X509_REVOKED* entry = X509_REVOKED_new();
    X509_REVOKED_set_serialNumber(entry, const_cast<ASN1_INTEGER*>(X509_get0_serialNumber(revoked)));
    X509_REVOKED_set_revocationDate(entry, last_update);
    X509_CRL_add0_revoked(crl, entry);
  }
  X509_CRL_sort(crl);
  REQUIRE(X509_CRL_sign(crl, ca_key, EVP_sha256()) > 0);
  BIO* file = BIO_new_file(out.c_str(), "w");
  PEM_write_bio_X509_CRL(file, crl);
  BIO_free(file);
  ASN1_TIME_free(last_update);
  ASN1_TIME_free(next_update);
  X509_CRL_free(crl);
  EVP_PKEY_free(ca_key);
  X509_free(ca);
}

std::string selected_alpn(SSL* ssl) {
  const unsigned char* data = nullptr;
  unsigned int length = 0;
  SSL_get0_alpn_selected(ssl, &data, &length);
  return {reinterpret_cast<const char*>(data), length};
}

}  // namespace

TEST_CASE("identity carries the SPIFFE ID, CN as user, every O as group, DNS SANs and fingerprint", "[identity]") {
  ScratchDir scratch;
  const auto ca = make_ca(scratch);
  IssueOptions options = client_options();
  options.dns = {"frontend.shop.svc", "frontend"};
  const BundleSpec bundle = issue_bundle(ca, scratch.path / "out", options);
  X509* cert = load_certificate(bundle.cert);
  const Identity identity = identity_from_x509(cert);
  CHECK(identity.spiffe == "spiffe://cluster.local/ns/shop/sa/frontend");
  CHECK(identity.user == "alice");
  CHECK(identity.groups == std::vector<std::string>{"ops", "dev"});
  CHECK(identity.dns == std::vector<std::string>{"frontend.shop.svc", "frontend"});
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  X509_digest(cert, EVP_sha256(), digest, &length);
  REQUIRE(identity.fingerprint_sha256.size() == 64);
  CHECK(identity.fingerprint_sha256.substr(0, 2) == [&] {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", digest[0]);
    return std::string(hex);
  }());
  CHECK(std::none_of(identity.fingerprint_sha256.begin(), identity.fingerprint_sha256.end(),
                     [](char c) { return c >= 'A' && c <= 'F'; }));
  X509_free(cert);
}

TEST_CASE("a certificate with two SPIFFE IDs has none, and another URI beside one SPIFFE ID is ignored", "[identity]") {
  Pki pki;
  X509* cert = load_certificate(pki.client.cert);
  replace_subject_alt_names(cert, "URI:spiffe://cluster.local/a,URI:spiffe://cluster.local/b");
  CHECK(identity_from_x509(cert).spiffe.empty());
  replace_subject_alt_names(cert, "URI:https://example.org/x,URI:spiffe://cluster.local/a");
  CHECK(identity_from_x509(cert).spiffe == "spiffe://cluster.local/a");
  replace_subject_alt_names(cert, "URI:spiffe://cluster.local/a/../b");
  CHECK(identity_from_x509(cert).spiffe.empty());
  X509_free(cert);
}

TEST_CASE("a CN or O with control characters is not used as identity", "[identity]") {
  Pki pki;
  X509* cert = load_certificate(pki.client.cert);
  X509_NAME* name = X509_NAME_new();
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("alice\r\nX-Evil: 1"),
                             -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>("ops"), -1, -1, 0);
  X509_set_subject_name(cert, name);
  X509_NAME_free(name);
  const Identity identity = identity_from_x509(cert);
  CHECK(identity.user.empty());
  CHECK(identity.groups == std::vector<std::string>{"ops"});
  X509_free(cert);
  CHECK(identity_from_x509(nullptr).fingerprint_sha256.empty());
}

namespace {
Identity identity_with_subject(X509* cert, std::initializer_list<std::pair<const char*, const char*>> entries) {
  X509_NAME* name = X509_NAME_new();
  for (const auto& [field, value] : entries)
    X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value), -1, -1, 0);
  X509_set_subject_name(cert, name);
  X509_NAME_free(name);
  return identity_from_x509(cert);
}
}  // namespace

// Red-team findings (session 13): an HTTP parser drops the spaces around a header value, so
// " system:masters" would be forwarded as system:masters; and an unusable last CN must not hand
// the user name to an earlier CN (Go, which the apiserver uses, reads the last one).
TEST_CASE("a CN or O with a space at either end is left out and said why, and the last CN decides", "[identity]") {
  Pki pki;
  X509* cert = load_certificate(pki.client.cert);
  Identity id = identity_with_subject(cert, {{"O", " system:masters"}, {"O", "dev"}, {"CN", "mallory"}});
  CHECK(id.groups == std::vector<std::string>{"dev"});
  CHECK(id.user == "mallory");
  CHECK(id.unusable.find("O \" system:masters\" begins or ends with a space") != std::string::npos);
  id = identity_with_subject(cert, {{"CN", "admin\t"}});
  CHECK(id.user.empty());
  CHECK_FALSE(id.unusable.empty());
  id = identity_with_subject(cert, {{"CN", "system:admin"}, {"CN", "dave\n"}, {"O", "dev"}});
  CHECK(id.user.empty());
  CHECK(id.unusable.find("control characters") != std::string::npos);
  id = identity_with_subject(cert, {{"CN", "dave\n"}, {"CN", "system:admin"}});
  CHECK(id.user == "system:admin");  // the last one is usable
  id = identity_with_subject(cert, {{"CN", "a b"}, {"O", "x y"}});
  CHECK((id.user == "a b" && id.groups == std::vector<std::string>{"x y"} && id.unusable.empty()));
  X509_free(cert);
}

TEST_CASE("a DNS SAN that is not a host name is left out", "[identity]") {
  Pki pki;
  X509* cert = load_certificate(pki.client.cert);
  replace_subject_alt_names(cert, "DNS:ok.shop.svc,DNS:x.shop.svc;URI=spiffe://cluster.local/ns/shop/sa/frontend,"
                                  "DNS:*.shop.svc,DNS:under_score.svc,DNS:sp ace.svc");
  CHECK(identity_from_x509(cert).dns == std::vector<std::string>{"ok.shop.svc", "*.shop.svc"});
  X509_free(cert);
}

TEST_CASE("building a context names the file at fault", "[tls]") {
  Pki pki;
  BundleSpec missing = pki.server;
  missing.cert = (pki.scratch.path / "nope.crt").string();
  CHECK_THROWS_WITH(make_server_context(missing, ClientCertMode::required, http11),
                    Catch::Contains("nope.crt") && Catch::Contains("No such file"));

  BundleSpec mismatched = pki.server;
  mismatched.key = pki.client.key;
  CHECK_THROWS_WITH(make_server_context(mismatched, ClientCertMode::required, http11),
                    Catch::Contains("client.key does not match certificate") && Catch::Contains("server.crt"));

  BundleSpec not_pem = pki.server;
  not_pem.cert = (pki.scratch.path / "garbage.crt").string();
  write_file(not_pem.cert, "not a certificate\n");
  CHECK_THROWS_AS(make_server_context(not_pem, ClientCertMode::required, http11), TlsError);

  BundleSpec bad_version = pki.server;
  bad_version.min_version = 11;
  CHECK_THROWS_WITH(make_server_context(bad_version, ClientCertMode::required, http11), Catch::Contains("min_version"));

  BundleSpec no_ca = pki.server;
  no_ca.ca.clear();
  CHECK_THROWS_WITH(make_server_context(no_ca, ClientCertMode::required, http11), Catch::Contains("ca"));
  CHECK_NOTHROW(make_server_context(no_ca, ClientCertMode::none, http11));
}

TEST_CASE("mutual TLS: the server learns the client's identity", "[tls]") {
  Pki pki;
  auto server = make_server_context(pki.server, ClientCertMode::required, http11);
  auto client = make_client_context(pki.client, http11);
  Handshake done = handshake(client.get(), server.get(), nullptr, "catalog.shop.svc");
  REQUIRE(done.ok);
  const auto identity = peer_identity(done.server.get());
  REQUIRE(identity.has_value());
  CHECK(identity->spiffe == "spiffe://cluster.local/ns/shop/sa/frontend");
  CHECK(identity->user == "alice");
  CHECK(peer_identity(done.client.get())->spiffe == "spiffe://cluster.local/ns/shop/sa/catalog");
  CHECK(selected_alpn(done.server.get()) == "http/1.1");
  CHECK(SSL_version(done.server.get()) == TLS1_3_VERSION);
}

TEST_CASE("both sides send their certificate without the self-signed root it chains to", "[tls]") {
  Pki pki;
  auto server = make_server_context(pki.server, ClientCertMode::required, http11);
  auto client = make_client_context(pki.client, http11);
  Handshake done = handshake(client.get(), server.get(), nullptr, "catalog.shop.svc");
  REQUIRE(done.ok);  // each side verified the other from the root it already trusts
  // The client's view holds the server's leaf alone; the server's view holds the chain after the
  // client's leaf (OpenSSL's server side leaves the leaf out): nothing. The root is in the trust
  // store both sides loaded, and a peer that lacks it could not trust it from the wire anyway.
  // (An intermediate in the store is still sent: tests/integration/test_certs_tls.py.)
  STACK_OF(X509)* from_server = SSL_get_peer_cert_chain(done.client.get());
  REQUIRE(from_server != nullptr);
  REQUIRE(sk_X509_num(from_server) == 1);
  CHECK(X509_cmp(sk_X509_value(from_server, 0), SSL_get0_peer_certificate(done.client.get())) == 0);
  STACK_OF(X509)* from_client = SSL_get_peer_cert_chain(done.server.get());
  CHECK((from_client == nullptr || sk_X509_num(from_client) == 0));
  // Nothing is left to build per handshake, and no chain is copied into each connection.
  for (SSL* ssl : {done.server.get(), done.client.get()}) {
    STACK_OF(X509)* own = nullptr;
    REQUIRE(SSL_get0_chain_certs(ssl, &own) == 1);
    CHECK(sk_X509_num(own) <= 0);  // none at all (-1) or empty
  }
  for (SSL_CTX* ctx : {server.get(), client.get()}) {
    STACK_OF(X509)* extra = nullptr;
    REQUIRE(SSL_CTX_get_extra_chain_certs_only(ctx, &extra) == 1);
    CHECK(sk_X509_num(extra) <= 0);
    CHECK((SSL_CTX_get_mode(ctx) & SSL_MODE_NO_AUTO_CHAIN) != 0);
  }
}

TEST_CASE("connections presenting the same certificate share one identity, and others get their own", "[tls]") {
  Pki pki;
  auto server = make_server_context(pki.server, ClientCertMode::optional, http11);
  auto alice = make_client_context(pki.client, http11);
  IssueOptions bob_options = client_options("bob");
  bob_options.cn = "bob";
  bob_options.spiffe = "spiffe://cluster.local/ns/shop/sa/bob";
  BundleSpec bob_bundle = issue_bundle(pki.ca, pki.scratch.path / "bob", bob_options);
  bob_bundle.ca = pki.server.ca;
  auto bob = make_client_context(bob_bundle, http11);
  BundleSpec anonymous = pki.client;
  anonymous.cert.clear();
  anonymous.key.clear();
  auto nobody = make_client_context(anonymous, http11);

  PeerIdentityCache cache;
  Handshake a1 = handshake(alice.get(), server.get());
  Handshake a2 = handshake(alice.get(), server.get());
  Handshake b1 = handshake(bob.get(), server.get());
  Handshake n1 = handshake(nobody.get(), server.get());
  REQUIRE((a1.ok && a2.ok && b1.ok && n1.ok));
  auto first = cache.lookup(a1.server.get());
  auto second = cache.lookup(a2.server.get());
  auto other = cache.lookup(b1.server.get());
  REQUIRE(first);
  CHECK(first == second);  // one object for both connections
  CHECK(first->user == "alice");
  CHECK(*first == *peer_identity(a1.server.get()));  // the same identity peer_identity() gives
  REQUIRE(other);
  CHECK(other != first);
  CHECK(other->user == "bob");
  CHECK_FALSE(cache.lookup(n1.server.get()));  // no certificate: no identity
  CHECK_FALSE(cache.lookup(nullptr));
  CHECK(cache.size() == 2);

  // When every connection holding it has ended, a certificate is looked up afresh.
  std::weak_ptr<const Identity> gone = other;
  other.reset();
  CHECK(gone.expired());
  auto again = cache.lookup(b1.server.get());
  REQUIRE(again);
  CHECK(again->user == "bob");
}

TEST_CASE("a client without a certificate is refused where one is required, and anonymous where optional", "[tls]") {
  Pki pki;
  BundleSpec anonymous = pki.client;
  anonymous.cert.clear();
  anonymous.key.clear();
  auto client = make_client_context(anonymous, http11);
  auto required = make_server_context(pki.server, ClientCertMode::required, http11);
  CHECK_FALSE(handshake(client.get(), required.get()).ok);
  auto optional = make_server_context(pki.server, ClientCertMode::optional, http11);
  Handshake done = handshake(client.get(), optional.get());
  REQUIRE(done.ok);
  CHECK_FALSE(peer_identity(done.server.get()).has_value());
}

TEST_CASE("client certificates from another CA or without clientAuth are refused", "[tls]") {
  Pki pki;
  auto server = make_server_context(pki.server, ClientCertMode::required, http11);

  const auto other_ca = make_ca(pki.scratch, "other-ca");
  BundleSpec stranger = issue_bundle(other_ca, pki.scratch.path / "other", client_options("stranger"));
  stranger.ca = pki.server.ca;  // the stranger trusts our server, we do not trust it
  auto stranger_ctx = make_client_context(stranger, http11);
  Handshake refused = handshake(stranger_ctx.get(), server.get());
  CHECK_FALSE(refused.ok);
  CHECK(peer_verify_error(refused.server.get()).find("issuer") != std::string::npos);

  IssueOptions server_only = client_options("server-only");
  server_only.client = false;
  server_only.server = true;
  auto wrong_usage = make_client_context(issue_bundle(pki.ca, pki.scratch.path / "out", server_only), http11);
  Handshake wrong = handshake(wrong_usage.get(), server.get());
  CHECK_FALSE(wrong.ok);
  CHECK_THAT(peer_verify_error(wrong.server.get()), Catch::Contains("purpose"));
}

TEST_CASE("with a crl, a revoked client certificate is refused and others are accepted", "[tls][crl]") {
  Pki pki;
  auto client = make_client_context(pki.client, http11);
  BundleSpec with_crl = pki.server;
  with_crl.crl = (pki.scratch.path / "ca.crl").string();

  write_crl(pki.ca, nullptr, with_crl.crl);
  auto nothing_revoked = make_server_context(with_crl, ClientCertMode::required, http11);
  CHECK(handshake(client.get(), nothing_revoked.get()).ok);

  X509* revoked = load_certificate(pki.client.cert);
  write_crl(pki.ca, revoked, with_crl.crl);
  X509_free(revoked);
  auto server = make_server_context(with_crl, ClientCertMode::required, http11);
  Handshake refused = handshake(client.get(), server.get());
  CHECK_FALSE(refused.ok);
  CHECK(peer_verify_error(refused.server.get()) == "certificate revoked");

  BundleSpec missing = pki.server;
  missing.crl = (pki.scratch.path / "missing.crl").string();
  CHECK_THROWS_WITH(make_server_context(missing, ClientCertMode::required, http11), Catch::Contains("missing.crl"));
}

TEST_CASE("a client refuses a server certificate without serverAuth or with the wrong name", "[tls]") {
  Pki pki;
  auto client = make_client_context(pki.client, http11);
  BundleSpec client_only = pki.client;  // clientAuth only, presented as a server certificate
  auto server = make_server_context(client_only, ClientCertMode::none, http11);
  CHECK_FALSE(handshake(client.get(), server.get()).ok);

  auto proper = make_server_context(pki.server, ClientCertMode::required, http11);
  CHECK(handshake(client.get(), proper.get(), nullptr, "catalog.shop.svc").ok);
  CHECK_FALSE(handshake(client.get(), proper.get(), nullptr, "billing.shop.svc").ok);
}

TEST_CASE("min_version 1.3 refuses a TLS 1.2 client, and 1.2 gets only ECDHE AEAD suites", "[tls]") {
  Pki pki;
  BundleSpec strict = pki.server;
  strict.min_version = 13;
  auto server13 = make_server_context(strict, ClientCertMode::required, http11);
  auto client = make_client_context(pki.client, http11);
  auto client12 = make_client_context(pki.client, http11);
  SSL_CTX_set_max_proto_version(client12.get(), TLS1_2_VERSION);
  CHECK(handshake(client.get(), server13.get()).ok);
  CHECK_FALSE(handshake(client12.get(), server13.get()).ok);

  auto server12 = make_server_context(pki.server, ClientCertMode::required, http11);
  Handshake done = handshake(client12.get(), server12.get());
  REQUIRE(done.ok);
  CHECK(SSL_version(done.server.get()) == TLS1_2_VERSION);
  CHECK(std::string(SSL_get_cipher_name(done.server.get())).starts_with("ECDHE-ECDSA-"));

  // A client offering only CBC suites or static RSA key exchange finds nothing in common.
  SSL_CTX_set_cipher_list(client12.get(), "ECDHE-ECDSA-AES128-SHA:AES128-GCM-SHA256");
  CHECK_FALSE(handshake(client12.get(), server12.get()).ok);
}

TEST_CASE("ALPN selects our protocol or none, never fails the handshake", "[tls]") {
  Pki pki;
  const std::vector<std::string> ours{"h2", "http/1.1"};
  auto server = make_server_context(pki.server, ClientCertMode::required, ours);
  const std::vector<std::string> only_http11{"http/1.1"};
  auto client = make_client_context(pki.client, only_http11);
  Handshake done = handshake(client.get(), server.get());
  REQUIRE(done.ok);
  CHECK(selected_alpn(done.client.get()) == "http/1.1");

  const std::vector<std::string> foreign{"spdy/3", "imap"};
  auto other = make_client_context(pki.client, foreign);
  Handshake none = handshake(other.get(), server.get());
  REQUIRE(none.ok);
  CHECK(selected_alpn(none.client.get()).empty());

  const std::vector<std::string> empty_name{""};
  CHECK_THROWS_AS(make_server_context(pki.server, ClientCertMode::required, empty_name), TlsError);
}

TEST_CASE("a session ticket resumes on a rebuilt context and across a ticket key rotation", "[tls][tickets]") {
  Pki pki;
  auto client = make_client_context(pki.client, http11);
  for (int max_version : {TLS1_3_VERSION, TLS1_2_VERSION}) {
    CAPTURE(max_version);
    SSL_CTX_set_max_proto_version(client.get(), max_version);
    auto before = make_server_context(pki.server, ClientCertMode::required, http11);
    Handshake first = handshake(client.get(), before.get());
    REQUIRE(first.ok);
    CHECK_FALSE(SSL_session_reused(first.client.get()));
    SSL_SESSION* session = take_session(first);
    REQUIRE(session != nullptr);

    // A certificate rotation builds a new SSL_CTX from the (new) files.
    issue_bundle(pki.ca, pki.scratch.path / "out", server_options());
    auto after = make_server_context(pki.server, ClientCertMode::required, http11);
    Handshake resumed = handshake(client.get(), after.get(), session);
    REQUIRE(resumed.ok);
    CHECK(SSL_session_reused(resumed.client.get()));
    // The identity survives resumption (it comes from the session).
    CHECK(peer_identity(resumed.server.get())->user == "alice");

    TicketKeyStore::process_wide().rotate();
    Handshake after_rotation = handshake(client.get(), after.get(), session);
    REQUIRE(after_rotation.ok);
    CHECK(SSL_session_reused(after_rotation.client.get()));

    // Another bundle (other listener) never accepts this listener's tickets.
    BundleSpec other_listener = pki.server;
    other_listener.name = "other-listener";
    auto other = make_server_context(other_listener, ClientCertMode::required, http11);
    Handshake elsewhere = handshake(client.get(), other.get(), session);
    REQUIRE(elsewhere.ok);
    CHECK_FALSE(SSL_session_reused(elsewhere.client.get()));
    SSL_SESSION_free(session);
  }
}

TEST_CASE("ticket keys retire once no ticket they encrypted can still be valid", "[tickets]") {
  auto& store = TicketKeyStore::process_wide();
  const TicketKeySchedule saved = store.schedule();
  store.set_schedule({std::chrono::hours(1), std::chrono::seconds(0)});
  store.rotate();
  store.rotate();
  CHECK(store.key_count() == 1);
  store.set_schedule(saved);
  store.rotate();
  store.rotate();
  CHECK(store.key_count() == 3);
}

TEST_CASE("certificate_expiry reports the time left on the presented certificate", "[tls]") {
  ScratchDir scratch;
  const auto ca = make_ca(scratch);
  IssueOptions options = server_options();
  options.days = 10;
  const BundleSpec bundle = issue_bundle(ca, scratch.path / "out", options);
  auto ctx = make_server_context(bundle, ClientCertMode::required, http11);
  const std::time_t now = std::time(nullptr);
  const auto expiry = certificate_expiry(ctx.get(), now);
  REQUIRE(expiry.size() == 1);
  CHECK(expiry[0].seconds_left > 9 * 86400);
  CHECK(expiry[0].seconds_left <= 10 * 86400);
  CHECK(expiry[0].subject == "CN=server");
  CHECK(expiry[0].serial.size() == 32);
}
