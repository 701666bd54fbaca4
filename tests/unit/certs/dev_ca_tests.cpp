#include <openssl/x509v3.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "certs/dev_ca.hpp"
#include "certs/identity.hpp"
#include "certs/tls.hpp"
#include "tests/unit/certs/test_support.hpp"

using namespace portcullis::certs;
using namespace portcullis::certs::testing;
namespace fs = std::filesystem;

namespace {

mode_t permissions(const fs::path& path) {
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  return info.st_mode & 0777;
}

// Verifies `leaf` against `ca` the way a peer would (purpose given, e.g. X509_PURPOSE_SSL_CLIENT).
int verify(const fs::path& ca, const fs::path& leaf, int purpose) {
  X509* anchor = load_certificate(ca);
  X509* cert = load_certificate(leaf);
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, anchor);
  X509_STORE_CTX* context = X509_STORE_CTX_new();
  X509_STORE_CTX_init(context, store, cert, nullptr);
  X509_STORE_CTX_set_purpose(context, purpose);
  X509_verify_cert(context);
  const int error = X509_STORE_CTX_get_error(context);
  X509_STORE_CTX_free(context);
  X509_STORE_free(store);
  X509_free(cert);
  X509_free(anchor);
  return error;
}

}  // namespace

TEST_CASE("certs init writes a CA whose key only its owner can read, and refuses to replace it", "[dev_ca]") {
  ScratchDir scratch;
  const fs::path dir = scratch.path / "nested" / "ca";
  init_ca(dir);
  CHECK(permissions(dir / "ca.key") == 0600);
  CHECK(permissions(dir / "ca.crt") == 0644);
  X509* ca = load_certificate(dir / "ca.crt");
  REQUIRE(ca != nullptr);
  CHECK(X509_check_ca(ca) == 1);
  CHECK(X509_get_key_usage(ca) == (KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  const int constraints = X509_get_ext_by_NID(ca, NID_basic_constraints, -1);
  REQUIRE(constraints >= 0);
  CHECK(X509_EXTENSION_get_critical(X509_get_ext(ca, constraints)) == 1);
  CHECK(X509_get0_subject_key_id(ca) != nullptr);
  X509_free(ca);
  CHECK_THROWS_WITH(init_ca(dir), Catch::Contains("already exists"));
}

TEST_CASE("certs issue writes a verifiable leaf with the requested names and usages", "[dev_ca]") {
  ScratchDir scratch;
  const fs::path ca = make_ca(scratch);
  IssueOptions options;
  options.ca_dir = ca;
  options.out_dir = scratch.path / "out";
  options.name = "web";
  options.spiffe = "spiffe://cluster.local/ns/shop/sa/web";
  options.cn = "web-user";
  options.orgs = {"shop"};
  options.dns = {"web.shop.svc", "*.web.shop.svc"};
  options.ips = {"10.1.2.3", "::1"};
  options.days = 30;
  options.server = false;  // --client
  issue(options);

  const fs::path out = options.out_dir;
  CHECK(permissions(out / "web.key") == 0600);
  CHECK(permissions(out / "web.crt") == 0644);
  CHECK(read_file(out / "ca.crt") == read_file(ca / "ca.crt"));
  CHECK_FALSE(fs::exists(out / "key.pem"));
  // No temporary files are left behind.
  CHECK(std::distance(fs::directory_iterator(out), fs::directory_iterator()) == 3);

  CHECK(verify(ca / "ca.crt", out / "web.crt", X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
  CHECK(verify(ca / "ca.crt", out / "web.crt", X509_PURPOSE_SSL_SERVER) == X509_V_ERR_INVALID_PURPOSE);

  const std::string text = describe(out / "web.crt");
  CHECK_THAT(text, Catch::Contains("CN=web-user") && Catch::Contains("O=shop"));
  CHECK_THAT(text, Catch::Contains("spiffe://cluster.local/ns/shop/sa/web"));
  CHECK_THAT(text, Catch::Contains("web.shop.svc, *.web.shop.svc"));
  CHECK_THAT(text, Catch::Contains("10.1.2.3, ::1"));
  CHECK_THAT(text, Catch::Contains("extended key usage: clientAuth\n"));
  // 30 days from issuance; a second later that reads as 29 whole days.
  CHECK_THAT(text, Catch::Matches("[^]*\\((29|30) days left\\)[^]*"));
  X509* cert = load_certificate(out / "web.crt");
  CHECK_THAT(text, Catch::Contains(identity_from_x509(cert).fingerprint_sha256));
  CHECK(X509_check_ca(cert) == 0);
  X509_free(cert);
}

TEST_CASE("without --client or --server a cert gets both usages, and --docker adds the docker names", "[dev_ca]") {
  ScratchDir scratch;
  const fs::path ca = make_ca(scratch);
  IssueOptions options;
  options.name = "docker-client";
  options.docker = true;
  const BundleSpec bundle = issue_bundle(ca, scratch.path / "out", options);
  const fs::path out = scratch.path / "out";
  CHECK(read_file(out / "cert.pem") == read_file(bundle.cert));
  CHECK(read_file(out / "key.pem") == read_file(bundle.key));
  CHECK(read_file(out / "ca.pem") == read_file(ca / "ca.crt"));
  CHECK(permissions(out / "key.pem") == 0600);
  CHECK(verify(ca / "ca.crt", bundle.cert, X509_PURPOSE_SSL_CLIENT) == X509_V_OK);
  CHECK(verify(ca / "ca.crt", bundle.cert, X509_PURPOSE_SSL_SERVER) == X509_V_OK);
  CHECK_THAT(describe(bundle.cert), Catch::Contains("CN=docker-client"));  // CN defaults to the name
}

TEST_CASE("issuing again replaces the files with a new key and serial", "[dev_ca]") {
  ScratchDir scratch;
  const fs::path ca = make_ca(scratch);
  const BundleSpec first = issue_bundle(ca, scratch.path / "out", IssueOptions{});
  const std::string old_cert = read_file(first.cert);
  const std::string old_key = read_file(first.key);
  issue_bundle(ca, scratch.path / "out", IssueOptions{});
  CHECK(read_file(first.cert) != old_cert);
  CHECK(read_file(first.key) != old_key);
  CHECK(permissions(first.key) == 0600);
}

TEST_CASE("certs issue explains what is wrong with its input", "[dev_ca]") {
  ScratchDir scratch;
  const fs::path ca = make_ca(scratch);
  IssueOptions options;
  options.ca_dir = ca;
  options.out_dir = scratch.path / "out";
  options.name = "x";

  IssueOptions no_ca = options;
  no_ca.ca_dir = scratch.path / "missing";
  CHECK_THROWS_WITH(issue(no_ca), Catch::Contains("does not exist") && Catch::Contains("certs init"));

  IssueOptions bad_ip = options;
  bad_ip.ips = {"10.0.0.300"};
  CHECK_THROWS_WITH(issue(bad_ip), Catch::Contains("invalid --ip '10.0.0.300'"));

  IssueOptions bad_spiffe = options;
  bad_spiffe.spiffe = "spiffe://Cluster.local/x";
  CHECK_THROWS_WITH(issue(bad_spiffe), Catch::Contains("invalid SPIFFE ID"));

  IssueOptions bad_dns = options;
  bad_dns.dns = {"a..b"};
  CHECK_THROWS_WITH(issue(bad_dns), Catch::Contains("invalid --dns"));

  IssueOptions bad_days = options;
  bad_days.days = 0;
  CHECK_THROWS_WITH(issue(bad_days), Catch::Contains("--days"));

  IssueOptions bad_name = options;
  bad_name.name = "../escape";
  CHECK_THROWS_WITH(issue(bad_name), Catch::Contains("--name"));

  IssueOptions no_usage = options;
  no_usage.client = no_usage.server = false;
  CHECK_THROWS(issue(no_usage));

  CHECK_FALSE(fs::exists(options.out_dir / "x.key"));
}

TEST_CASE("certs show rejects files that hold no certificate", "[dev_ca]") {
  ScratchDir scratch;
  CHECK_THROWS_WITH(describe(scratch.path / "missing.pem"), Catch::Contains("missing.pem"));
  write_file(scratch.path / "empty.pem", "hello\n");
  CHECK_THROWS_WITH(describe(scratch.path / "empty.pem"), Catch::Contains("no PEM certificate"));
  const fs::path ca = make_ca(scratch);
  const BundleSpec bundle = issue_bundle(ca, scratch.path / "out", IssueOptions{});
  write_file(scratch.path / "chain.pem", read_file(bundle.cert) + read_file(ca / "ca.crt"));
  const std::string chain = describe(scratch.path / "chain.pem");
  CHECK_THAT(chain, Catch::Contains("certificate 2 of 2") && Catch::Contains("CA:                 yes"));
}
