#pragma once
// The dev CA behind `portcullis certs init|issue|show` (OpenSSL 3 API, no shelling out).
#include <filesystem>
#include <string>
#include <vector>

namespace portcullis::certs {

// Writes DIR/ca.crt and DIR/ca.key (0600): an ECDSA P-256 self-signed CA.
void init_ca(const std::filesystem::path& dir);

struct IssueOptions {
  std::filesystem::path ca_dir;
  std::filesystem::path out_dir;
  std::string name;
  std::string spiffe;
  std::string cn;
  std::vector<std::string> orgs, dns, ips;
  int days = 365;
  bool client = true;   // extendedKeyUsage clientAuth
  bool server = true;   // extendedKeyUsage serverAuth
  bool docker = false;  // also ca.pem, cert.pem, key.pem
};

// Writes OUT/NAME.crt, OUT/NAME.key (0600), OUT/ca.crt; files replaced atomically.
// Throws std::runtime_error with a clear message.
void issue(const IssueOptions& options);

// Human-readable: subject, SANs, validity, fingerprint.
std::string describe(const std::filesystem::path& pem_file);

}  // namespace portcullis::certs
