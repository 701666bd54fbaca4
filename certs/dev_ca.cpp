#include "certs/dev_ca.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string_view>

#include "certs/identity.hpp"
#include "certs/spiffe.hpp"
#include "certs/tls.hpp"
#include "certs/x509_text.hpp"

namespace portcullis::certs {

namespace {

namespace fs = std::filesystem;

struct OpenSslFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
  void operator()(X509* cert) const { X509_free(cert); }
  void operator()(BIO* bio) const { BIO_free(bio); }
  void operator()(GENERAL_NAMES* names) const { GENERAL_NAMES_free(names); }
  void operator()(BIGNUM* number) const { BN_free(number); }
  void operator()(ASN1_INTEGER* number) const { ASN1_INTEGER_free(number); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, OpenSslFree>;
using CertPtr = std::unique_ptr<X509, OpenSslFree>;
using BioPtr = std::unique_ptr<BIO, OpenSslFree>;

constexpr int ca_validity_days = 3650;
// Backdates notBefore a little so that a peer whose clock is slightly behind accepts a fresh cert.
constexpr long clock_skew_seconds = 300;
constexpr mode_t private_key_mode = 0600;
constexpr mode_t certificate_mode = 0644;

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error(message); }

[[noreturn]] void fail_with_openssl(const std::string& message) {
  fail(message + ": " + detail::drain_openssl_errors());
}

// Writes a temporary file beside `path` with the final mode, then renames it over `path`, so a
// reader (or the proxy's file watcher) sees the old file or the new one, never half of one.
void write_file_atomically(const fs::path& path, std::string_view contents, mode_t mode) {
  // Built by appending: GCC 12 reports a false -Wrestrict on `"." + std::string&&`.
  std::string name = ".";
  name += path.filename().string();
  name += ".tmp-XXXXXX";
  std::string temporary = (path.parent_path() / name).string();
  const int fd = mkstemp(temporary.data());
  if (fd < 0) {
    fail("cannot write " + path.string() + ": " + std::strerror(errno));
  }
  auto give_up = [&](const char* step) {
    const int error = errno;
    ::close(fd);
    ::unlink(temporary.c_str());
    fail("cannot write " + path.string() + " (" + step + "): " + std::strerror(error));
  };
  if (::fchmod(fd, mode) != 0) {
    give_up("chmod");
  }
  for (std::size_t written = 0; written < contents.size();) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      give_up("write");
    }
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    give_up("fsync");
  }
  if (::close(fd) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    fail("cannot write " + path.string() + ": " + std::strerror(error));
  }
  if (::rename(temporary.c_str(), path.c_str()) != 0) {
    const int error = errno;
    ::unlink(temporary.c_str());
    fail("cannot replace " + path.string() + ": " + std::strerror(error));
  }
}

std::string bio_text(BIO* bio) {
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio, &data);
  return {data, length > 0 ? static_cast<std::size_t>(length) : 0};
}

std::string certificate_pem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    fail_with_openssl("cannot encode certificate");
  }
  return bio_text(bio.get());
}

std::string private_key_pem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  // PKCS#8, unencrypted: what Docker, kubectl and the proxy itself read.
  if (!bio || PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    fail_with_openssl("cannot encode private key");
  }
  return bio_text(bio.get());
}

KeyPtr generate_p256_key() {
  KeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) {
    fail_with_openssl("cannot generate an ECDSA P-256 key");
  }
  return key;
}

// RFC 5280 wants serials unique per CA and at most 20 bytes; 16 random bytes (positive) are
// unique without keeping state, as CA/Browser Forum rules ask for 64+ random bits.
void set_random_serial(X509* cert) {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), bytes.size()) != 1) {
    fail_with_openssl("cannot generate a serial number");
  }
  bytes[0] = static_cast<unsigned char>((bytes[0] & 0x7f) | 0x40);  // positive, full length
  std::unique_ptr<BIGNUM, OpenSslFree> number(BN_bin2bn(bytes.data(), bytes.size(), nullptr));
  std::unique_ptr<ASN1_INTEGER, OpenSslFree> serial(number ? BN_to_ASN1_INTEGER(number.get(), nullptr) : nullptr);
  if (!serial || X509_set_serialNumber(cert, serial.get()) != 1) {
    fail_with_openssl("cannot set the serial number");
  }
}

void add_name_entry(X509_NAME* name, const char* field, const std::string& value, const char* option) {
  for (unsigned char c : value) {
    if (c < 0x20 || c == 0x7f) {
      fail(std::string("invalid ") + option + ": control characters are not allowed");
    }
  }
  if (X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(value.data()),
                                 static_cast<int>(value.size()), -1, 0) != 1) {
    fail_with_openssl(std::string("invalid ") + option + " '" + value + "'");
  }
}

// Extensions with fixed values are written in OpenSSL's config syntax; `issuer` supplies the
// authorityKeyIdentifier.
void add_extension(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX context;
  X509V3_set_ctx_nodb(&context);
  X509V3_set_ctx(&context, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* extension = X509V3_EXT_conf_nid(nullptr, &context, nid, value);
  if (extension == nullptr || X509_add_ext(cert, extension, -1) != 1) {
    X509_EXTENSION_free(extension);
    fail_with_openssl(std::string("cannot add extension ") + OBJ_nid2sn(nid));
  }
  X509_EXTENSION_free(extension);
}

CertPtr new_certificate(EVP_PKEY* key, int days) {
  CertPtr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1 || X509_set_pubkey(cert.get(), key) != 1) {
    fail_with_openssl("cannot create a certificate");
  }
  set_random_serial(cert.get());
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()), -clock_skew_seconds) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr) == nullptr) {
    fail_with_openssl("cannot set the validity period");
  }
  return cert;
}

void sign(X509* cert, EVP_PKEY* issuer_key) {
  if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
    fail_with_openssl("cannot sign the certificate");
  }
}

BioPtr open_for_reading(const fs::path& path) {
  BioPtr bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) {
    ERR_clear_error();
    fail("cannot read " + path.string() + ": " + std::strerror(errno));
  }
  return bio;
}

int refuse_passphrase(char*, int, int, void*) { return 0; }

struct DevCa {
  CertPtr cert;
  KeyPtr key;
};

DevCa load_ca(const fs::path& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    fail("CA directory " + dir.string() + " does not exist (create it with `portcullis certs init --dir " +
         dir.string() + "`)");
  }
  DevCa ca;
  BioPtr cert_file = open_for_reading(dir / "ca.crt");
  ca.cert.reset(PEM_read_bio_X509(cert_file.get(), nullptr, nullptr, nullptr));
  if (!ca.cert) {
    fail_with_openssl((dir / "ca.crt").string() + " is not a PEM certificate");
  }
  BioPtr key_file = open_for_reading(dir / "ca.key");
  ca.key.reset(PEM_read_bio_PrivateKey(key_file.get(), nullptr, refuse_passphrase, nullptr));
  if (!ca.key) {
    fail_with_openssl((dir / "ca.key").string() + " is not an unencrypted PEM private key");
  }
  if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1) {
    ERR_clear_error();
    fail((dir / "ca.key").string() + " does not match " + (dir / "ca.crt").string());
  }
  if (X509_check_ca(ca.cert.get()) == 0) {
    fail((dir / "ca.crt").string() + " is not a CA certificate");
  }
  return ca;
}

// Hostnames as they appear in DNS SANs: labels of letters, digits, '-' and '_', optionally a
// leading "*." wildcard label.
bool is_valid_dns_name(std::string_view name) {
  if (name.starts_with("*.")) {
    name.remove_prefix(2);
  }
  if (name.empty() || name.size() > 253) {
    return false;
  }
  std::size_t label_length = 0;
  for (char c : name) {
    if (c == '.') {
      if (label_length == 0) {
        return false;
      }
      label_length = 0;
      continue;
    }
    const bool allowed =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!allowed || ++label_length > 63) {
      return false;
    }
  }
  return label_length > 0;
}

void push_general_name(GENERAL_NAMES* names, int type, const std::string& value) {
  GENERAL_NAME* name = GENERAL_NAME_new();
  ASN1_IA5STRING* text = ASN1_IA5STRING_new();
  if (name == nullptr || text == nullptr || ASN1_STRING_set(text, value.data(), static_cast<int>(value.size())) != 1) {
    GENERAL_NAME_free(name);
    ASN1_IA5STRING_free(text);
    fail_with_openssl("cannot encode subjectAltName " + value);
  }
  GENERAL_NAME_set0_value(name, type, text);
  sk_GENERAL_NAME_push(names, name);
}

void add_subject_alt_names(X509* cert, const IssueOptions& options) {
  if (options.spiffe.empty() && options.dns.empty() && options.ips.empty()) {
    return;  // an empty SAN extension is invalid (RFC 5280 4.2.1.6)
  }
  std::unique_ptr<GENERAL_NAMES, OpenSslFree> names(sk_GENERAL_NAME_new_null());
  if (!names) {
    fail_with_openssl("cannot build subjectAltName");
  }
  if (!options.spiffe.empty()) {
    push_general_name(names.get(), GEN_URI, options.spiffe);
  }
  for (const std::string& dns : options.dns) {
    push_general_name(names.get(), GEN_DNS, dns);
  }
  for (const std::string& ip : options.ips) {
    ASN1_OCTET_STRING* address = a2i_IPADDRESS(ip.c_str());
    GENERAL_NAME* name = address != nullptr ? GENERAL_NAME_new() : nullptr;
    if (name == nullptr) {
      ASN1_OCTET_STRING_free(address);
      ERR_clear_error();
      fail("invalid --ip '" + ip + "': not an IPv4 or IPv6 address");
    }
    GENERAL_NAME_set0_value(name, GEN_IPADD, address);
    sk_GENERAL_NAME_push(names.get(), name);
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    fail_with_openssl("cannot add subjectAltName");
  }
}

void validate(const IssueOptions& options) {
  const std::string& name = options.name;
  if (name.empty() || name.front() == '.' || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    fail("invalid --name '" + name + "': it names files in the output directory (no '/', no leading '.')");
  }
  if (options.days < 1 || options.days > 36500) {
    fail("invalid --days " + std::to_string(options.days) + ": between 1 and 36500");
  }
  if (!options.client && !options.server) {
    fail("the certificate must be usable by a client, a server, or both");
  }
  if (!options.spiffe.empty() && !is_valid_spiffe_id(options.spiffe)) {
    fail("invalid SPIFFE ID '" + options.spiffe +
         "': expected spiffe://<trust-domain>/<path> with a lowercase trust domain of [a-z0-9.-_] and "
         "path segments of [A-Za-z0-9.-_] (no empty, '.' or '..' segments, no query or fragment)");
  }
  for (const std::string& dns : options.dns) {
    if (!is_valid_dns_name(dns)) {
      fail("invalid --dns '" + dns + "': not a DNS name");
    }
  }
  for (const std::string& ip : options.ips) {
    unsigned char address[16];
    if (inet_pton(AF_INET, ip.c_str(), address) != 1 && inet_pton(AF_INET6, ip.c_str(), address) != 1) {
      fail("invalid --ip '" + ip + "': not an IPv4 or IPv6 address");
    }
  }
}

std::string format_time(const ASN1_TIME* time) {
  const std::optional<std::time_t> seconds = detail::to_time_t(time);
  if (!seconds) {
    return "(unreadable)";
  }
  std::tm parts{};
  gmtime_r(&*seconds, &parts);
  std::array<char, 32> text{};
  std::strftime(text.data(), text.size(), "%Y-%m-%d %H:%M:%S UTC", &parts);
  return text.data();
}

std::string join(const std::vector<std::string>& items) {
  std::string text;
  for (const std::string& item : items) {
    text += text.empty() ? "" : ", ";
    text += item;
  }
  return text;
}

struct FlagName {
  uint32_t flag;
  const char* name;
};
constexpr FlagName key_usage_names[] = {{KU_DIGITAL_SIGNATURE, "digitalSignature"},
                                        {KU_KEY_ENCIPHERMENT, "keyEncipherment"},
                                        {KU_KEY_AGREEMENT, "keyAgreement"},
                                        {KU_KEY_CERT_SIGN, "keyCertSign"},
                                        {KU_CRL_SIGN, "cRLSign"}};
constexpr FlagName extended_key_usage_names[] = {{XKU_SSL_SERVER, "serverAuth"},
                                                 {XKU_SSL_CLIENT, "clientAuth"},
                                                 {XKU_CODE_SIGN, "codeSigning"},
                                                 {XKU_OCSP_SIGN, "OCSPSigning"}};

template <std::size_t N>
std::string flag_names(uint32_t flags, const FlagName (&names)[N]) {
  std::vector<std::string> set;
  for (const FlagName& name : names) {
    if (flags & name.flag) {
      set.emplace_back(name.name);
    }
  }
  return join(set);
}

std::string describe_one(X509* cert, std::time_t now) {
  std::string text;
  auto line = [&text](std::string_view label, const std::string& value) {
    text += label;
    text.append(label.size() < 20 ? 20 - label.size() : 1, ' ');
    text += value;
    text += '\n';
  };
  line("subject:", detail::one_line_name(X509_get_subject_name(cert)));
  line("issuer:", detail::one_line_name(X509_get_issuer_name(cert)));
  line("serial:", detail::serial_hex(cert));
  line("not before:", format_time(X509_get0_notBefore(cert)));
  const std::optional<std::time_t> not_after = detail::to_time_t(X509_get0_notAfter(cert));
  std::string remaining;
  if (not_after && *not_after <= now) {
    remaining = " (EXPIRED)";
  } else if (not_after) {
    remaining = " (" + std::to_string((*not_after - now) / 86400) + " days left)";
  }
  line("not after:", format_time(X509_get0_notAfter(cert)) + remaining);

  const Identity identity = identity_from_x509(cert);
  if (!identity.spiffe.empty()) {
    line("spiffe id:", identity.spiffe);
  }
  std::vector<std::string> uris, ips;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; names != nullptr && i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type == GEN_URI) {
      const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
      uris.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                        static_cast<std::size_t>(ASN1_STRING_length(uri)));
    } else if (name->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* address = name->d.iPAddress;
      const int length = ASN1_STRING_length(address);
      std::array<char, INET6_ADDRSTRLEN> buffer{};
      const int family = length == 4 ? AF_INET : length == 16 ? AF_INET6 : AF_UNSPEC;
      if (family != AF_UNSPEC && inet_ntop(family, ASN1_STRING_get0_data(address), buffer.data(), buffer.size())) {
        ips.emplace_back(buffer.data());
      }
    }
  }
  GENERAL_NAMES_free(names);
  if (!uris.empty()) {
    line("URI SANs:", join(uris));
  }
  if (!identity.dns.empty()) {
    line("DNS SANs:", join(identity.dns));
  }
  if (!ips.empty()) {
    line("IP SANs:", join(ips));
  }

  const bool is_ca = X509_check_ca(cert) != 0;
  line("CA:", is_ca ? "yes" : "no");
  if (X509_get_extension_flags(cert) & EXFLAG_KUSAGE) {
    line("key usage:", flag_names(X509_get_key_usage(cert), key_usage_names));
  }
  if (X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) {
    line("extended key usage:", flag_names(X509_get_extended_key_usage(cert), extended_key_usage_names));
  }
  line("sha256 fingerprint:", identity.fingerprint_sha256);
  return text;
}

}  // namespace

void init_ca(const fs::path& dir) {
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) {
    fail("cannot create " + dir.string() + ": " + error.message());
  }
  // Replacing a CA silently would orphan every certificate it issued.
  if (fs::exists(dir / "ca.key", error)) {
    fail((dir / "ca.key").string() + " already exists; remove it first to create a new CA");
  }
  KeyPtr key = generate_p256_key();
  CertPtr cert = new_certificate(key.get(), ca_validity_days);
  add_extension(cert.get(), cert.get(), NID_subject_key_identifier, "hash");

  // A short tag from the key identifier tells two dev CAs apart in `certs show` and in errors.
  std::array<unsigned char, EVP_MAX_MD_SIZE> key_digest{};
  unsigned int key_digest_length = 0;
  if (X509_pubkey_digest(cert.get(), EVP_sha256(), key_digest.data(), &key_digest_length) != 1) {
    fail_with_openssl("cannot hash the CA key");
  }
  const std::string tag = detail::lowercase_hex(key_digest.data(), 4);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  add_name_entry(subject, "O", "Portcullis", "organization");
  add_name_entry(subject, "CN", "Portcullis dev CA " + tag, "common name");
  if (X509_set_issuer_name(cert.get(), subject) != 1) {
    fail_with_openssl("cannot set the CA issuer");
  }
  add_extension(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
  add_extension(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
  sign(cert.get(), key.get());

  write_file_atomically(dir / "ca.key", private_key_pem(key.get()), private_key_mode);
  write_file_atomically(dir / "ca.crt", certificate_pem(cert.get()), certificate_mode);
}

void issue(const IssueOptions& options) {
  validate(options);
  DevCa ca = load_ca(options.ca_dir);
  std::error_code error;
  fs::create_directories(options.out_dir, error);
  if (error) {
    fail("cannot create " + options.out_dir.string() + ": " + error.message());
  }

  KeyPtr key = generate_p256_key();
  CertPtr cert = new_certificate(key.get(), options.days);
  X509_NAME* subject = X509_get_subject_name(cert.get());
  for (const std::string& org : options.orgs) {
    add_name_entry(subject, "O", org, "--org");
  }
  add_name_entry(subject, "CN", options.cn.empty() ? options.name : options.cn, "--cn");
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.cert.get())) != 1) {
    fail_with_openssl("cannot set the issuer");
  }
  add_extension(cert.get(), ca.cert.get(), NID_basic_constraints, "critical,CA:FALSE");
  add_extension(cert.get(), ca.cert.get(), NID_key_usage, "critical,digitalSignature");
  const char* usage = options.client && options.server ? "clientAuth,serverAuth"
                      : options.client                 ? "clientAuth"
                                                       : "serverAuth";
  add_extension(cert.get(), ca.cert.get(), NID_ext_key_usage, usage);
  add_extension(cert.get(), ca.cert.get(), NID_subject_key_identifier, "hash");
  add_extension(cert.get(), ca.cert.get(), NID_authority_key_identifier, "keyid:always");
  add_subject_alt_names(cert.get(), options);
  sign(cert.get(), ca.key.get());

  const std::string key_pem = private_key_pem(key.get());
  const std::string cert_pem = certificate_pem(cert.get());
  const std::string ca_pem = certificate_pem(ca.cert.get());
  const fs::path& out = options.out_dir;
  write_file_atomically(out / (options.name + ".key"), key_pem, private_key_mode);
  write_file_atomically(out / (options.name + ".crt"), cert_pem, certificate_mode);
  write_file_atomically(out / "ca.crt", ca_pem, certificate_mode);
  if (options.docker) {
    // The names the docker CLI looks for under DOCKER_CERT_PATH.
    write_file_atomically(out / "key.pem", key_pem, private_key_mode);
    write_file_atomically(out / "cert.pem", cert_pem, certificate_mode);
    write_file_atomically(out / "ca.pem", ca_pem, certificate_mode);
  }
}

std::string describe(const fs::path& pem_file) {
  BioPtr file = open_for_reading(pem_file);
  std::vector<CertPtr> certs;
  while (X509* cert = PEM_read_bio_X509(file.get(), nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  ERR_clear_error();  // the loop ends on "no start line"
  if (certs.empty()) {
    fail(pem_file.string() + ": no PEM certificate found");
  }
  const std::time_t now = std::time(nullptr);
  std::string text;
  for (std::size_t i = 0; i < certs.size(); ++i) {
    if (certs.size() > 1) {
      // Appended piece by piece: GCC 12 reports a false -Wrestrict on `"..." + std::string&&`.
      if (i > 0) text += '\n';
      text += "certificate " + std::to_string(i + 1);
      text += " of " + std::to_string(certs.size()) + '\n';
    }
    text += describe_one(certs[i].get(), now);
  }
  return text;
}

}  // namespace portcullis::certs
