#pragma once
// SPIFFE ID syntax (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md), as used in
// the URI SAN of an X.509-SVID. Pure string checks: no allocation, no exceptions, safe on
// hostile input.
#include <string_view>

namespace portcullis::certs {

// True for "spiffe://<trust-domain>/<path>" where the trust domain is [a-z0-9._-]+ (at most
// 255 bytes, no port, no userinfo), the path is one or more "/segment" with segments of
// [A-Za-z0-9._-]+ other than "." and "..", there is no query or fragment, and the whole ID is
// at most 2048 bytes. A workload certificate names a workload, so the bare trust domain
// ("spiffe://example.org") is not accepted.
bool is_valid_spiffe_id(std::string_view id) noexcept;

}  // namespace portcullis::certs
