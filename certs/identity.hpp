#pragma once
// Who the peer is, read from its verified certificate chain. A plain value: the policy code
// (which has no I/O and no OpenSSL) matches on it, and the access log prints it.
#include <string>
#include <vector>

namespace portcullis::certs {

struct Identity {
  std::string spiffe;               // URI SAN "spiffe://trust-domain/path", empty if none (validated)
  std::string user;                 // subject CN
  std::vector<std::string> groups;  // every subject O, in certificate order
  std::vector<std::string> dns;     // DNS SANs
  std::string fingerprint_sha256;   // lowercase hex of the leaf's DER
  // Why a subject CN or O was left out (control characters, a leading or trailing space, not
  // convertible to UTF-8), or empty when none was. Such a name is never forwarded in another
  // spelling: a listener that forwards identities refuses the request instead.
  std::string unusable;

  bool operator==(const Identity&) const = default;
};

}  // namespace portcullis::certs
