#pragma once
// Framing checks on a request head before any rule sees it (RFC 9112 sections 2.2, 5, 6):
// anything two parsers could read differently is refused with 400 and the connection closed.
#include <span>
#include <string>
#include <string_view>

#include "proxy/policy/request.hpp"

namespace portcullis::http {

// raw: the request line and fields up to and including the blank line.
// Returns empty when acceptable, else the reason (bare LF, obs-fold, whitespace before a colon,
// NUL or control characters, ...).
std::string check_raw_head(std::string_view raw);

// fields: parsed header fields (names lowercased). Returns empty when acceptable, else the reason
// (Content-Length with Transfer-Encoding, duplicate/differing Content-Length, Transfer-Encoding
// other than exactly "chunked", missing or duplicate Host, ...).
std::string check_request_fields(std::span<const policy::Header> fields);

// GET, HEAD and TRACE with content (Content-Length above 0, or any Transfer-Encoding). RFC 9110
// gives it no meaning (9.3.1, 9.3.2, 9.3.8), and an upstream that never reads it (Python's
// http.server) takes it for its next request, one that no rule saw. fields: as for
// check_request_fields(), which must have passed. Returns empty when acceptable, else the reason.
std::string check_request_body(std::string_view method, std::span<const policy::Header> fields);

// Whether a lowercased field name is `lower_want`, reading '_' as '-' (CGI/WSGI environs and
// nginx's underscores_in_headers see X_Forwarded_For as X-Forwarded-For).
bool same_field_name(std::string_view name, std::string_view lower_want);

// Fields that tell the upstream to run another method or serve another path than the request
// line's (X-HTTP-Method-Override and its kin, honoured by Rails, Express and ASP.NET middleware;
// X-Original-URL and X-Rewrite-URL, honoured by IIS and Symfony): the rules judged the request
// line, so such a request is refused. fields: names lowercased. Returns empty, else the reason.
std::string check_request_overrides(std::span<const policy::Header> fields);

// The fields through which a proxy tells the upstream where a request came from: Forwarded
// (RFC 7239), X-Forwarded-For, -Host, -Proto, -Port, -Prefix and X-Real-IP ('_' read as '-').
bool is_forwarded_field(std::string_view lower_name);

// Whether the comma-separated list (Connection, Upgrade) holds `lower_token`, compared
// case-insensitively after trimming spaces and tabs around each item.
bool has_token(std::string_view list, std::string_view lower_token);

// A 101 Switching Protocols from the upstream is a switch (after which bytes are relayed and no
// rule sees them) only when it is one (RFC 9110 7.8, 15.2.2): `Connection: upgrade`, and an
// `Upgrade` naming a protocol among `offered` (the client's Upgrade); for websocket, also the
// Sec-WebSocket-Accept that answers the client's key (RFC 6455 4.2.2). An upstream that echoes a
// status (httpbin's /status/101) has not switched. Returns empty when it is a switch, else why not.
std::string check_switch(std::string_view offered, std::span<const policy::Header> request,
                         std::span<const policy::Header> response);

}  // namespace portcullis::http
