#pragma once
// Responses Portcullis itself sends: refusals in the shape each client understands.
#include <string>
#include <string_view>

#include "proxy/config.hpp"

namespace portcullis::http {

// What a response says about its connection. An HTTP/1.1 client keeps the connection unless
// told `Connection: close`; an HTTP/1.0 client keeps it only when told `Connection: keep-alive`
// (RFC 9112 9.3, RFC 2068 19.7.1): without it, it waits for the server to close (ab -k does).
enum class Persistence { close, keep, keep_http10 };

// A complete HTTP/1.1 response with a JSON body.
std::string json_response(int status, std::string_view body, Persistence persistence);

// 403 for a policy denial: plain JSON on http listeners, a Kubernetes Status on kubernetes
// listeners (kubectl prints "Error from server (Forbidden): <message>"), {"message": ...} on
// docker listeners (the CLI prints "Error response from daemon: <message>").
std::string denial_body(config::Protocol protocol, std::string_view rule, std::string_view reason);

// 400/413/431/502/503/504... with {"error": kind, "reason": ...} (or the Status / message
// shapes above on kubernetes and docker listeners).
std::string error_body(config::Protocol protocol, int status, std::string_view kind, std::string_view reason);

std::string_view reason_phrase(int status);

}  // namespace portcullis::http
