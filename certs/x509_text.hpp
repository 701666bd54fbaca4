#pragma once
// Small helpers shared by the TLS, reload and dev-CA code to turn OpenSSL objects into text.
// Internal to certs/; none of them throws except on allocation failure.
#include <openssl/asn1.h>
#include <openssl/x509.h>

#include <cstddef>
#include <ctime>
#include <optional>
#include <string>

namespace portcullis::certs::detail {

// Everything on OpenSSL's error queue (which is cleared) as "reason; reason".
std::string drain_openssl_errors();

std::string lowercase_hex(const unsigned char* bytes, std::size_t length);

// RFC 2253 one-line form without escaping UTF-8: "CN=alice,O=ops".
std::string one_line_name(const X509_NAME* name);

// The serial number in lowercase hex.
std::string serial_hex(const X509* cert);

// SHA-256 of the DER encoding in lowercase hex, empty on failure.
std::string sha256_fingerprint(const X509* cert);

std::optional<std::time_t> to_time_t(const ASN1_TIME* time);

}  // namespace portcullis::certs::detail
