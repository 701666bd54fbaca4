#include "certs/x509_text.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <array>
#include <string_view>

namespace portcullis::certs::detail {

std::string drain_openssl_errors() {
  std::string reasons;
  while (unsigned long code = ERR_get_error()) {
    std::array<char, 256> text{};
    ERR_error_string_n(code, text.data(), text.size());
    // "error:0A00018F:SSL routines::ee key too small" -> keep the part after the last ':'.
    std::string_view line(text.data());
    const std::size_t colon = line.rfind(':');
    if (colon != std::string_view::npos && colon + 1 < line.size()) {
      line.remove_prefix(colon + 1);
    }
    if (!reasons.empty()) {
      reasons += "; ";
    }
    reasons += line;
  }
  return reasons.empty() ? "unknown OpenSSL error" : reasons;
}

std::string lowercase_hex(const unsigned char* bytes, std::size_t length) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(length * 2);
  for (std::size_t i = 0; i < length; ++i) {
    hex.push_back(digits[bytes[i] >> 4]);
    hex.push_back(digits[bytes[i] & 0xf]);
  }
  return hex;
}

std::string one_line_name(const X509_NAME* name) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (bio == nullptr || name == nullptr) {
    BIO_free(bio);
    return {};
  }
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio, &data);
  std::string text(data, length > 0 ? static_cast<std::size_t>(length) : 0);
  BIO_free(bio);
  return text;
}

std::string serial_hex(const X509* cert) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  if (serial == nullptr) {
    return {};
  }
  return lowercase_hex(ASN1_STRING_get0_data(serial), static_cast<std::size_t>(ASN1_STRING_length(serial)));
}

std::string sha256_fingerprint(const X509* cert) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int digest_length = 0;
  if (cert == nullptr || X509_digest(cert, EVP_sha256(), digest.data(), &digest_length) != 1) {
    ERR_clear_error();
    return {};
  }
  return lowercase_hex(digest.data(), digest_length);
}

std::optional<std::time_t> to_time_t(const ASN1_TIME* time) {
  std::tm parts{};
  if (time == nullptr || ASN1_TIME_to_tm(time, &parts) != 1) {
    return std::nullopt;
  }
  return timegm(&parts);
}

}  // namespace portcullis::certs::detail
