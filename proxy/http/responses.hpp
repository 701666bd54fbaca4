#pragma once
// Responses Portcullis itself sends: refusals in the shape each client understands.
#include <string>
#include <string_view>

#include "proxy/config.hpp"

namespace portcullis::http {

// A complete HTTP/1.1 response with a JSON body. close: adds `Connection: close`.
std::string json_response(int status, std::string_view body, bool close);

// 403 for a policy denial: plain JSON on http listeners, a Kubernetes Status on kubernetes
// listeners (kubectl prints "Error from server (Forbidden): <message>"), {"message": ...} on
// docker listeners (the CLI prints "Error response from daemon: <message>").
std::string denial_body(config::Protocol protocol, std::string_view rule, std::string_view reason);

// 400/413/431/502/503/504... with {"error": kind, "reason": ...} (or the Status / message
// shapes above on kubernetes and docker listeners).
std::string error_body(config::Protocol protocol, int status, std::string_view kind, std::string_view reason);

std::string_view reason_phrase(int status);

}  // namespace portcullis::http
