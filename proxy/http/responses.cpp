#include "proxy/http/responses.hpp"

#include "proxy/observe/access_log.hpp"

namespace portcullis::http {
namespace {
std::string quoted(std::string_view s) {
  std::string out = "\"";
  observe::json_escape(out, s);
  out += '"';
  return out;
}

std::string kube_status(int code, std::string_view reason_word, std::string_view message) {
  return "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":" +
         quoted(message) + ",\"reason\":" + quoted(reason_word) + ",\"code\":" + std::to_string(code) + "}";
}
}  // namespace

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string json_response(int status, std::string_view body, Persistence persistence) {
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) +
                    "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\nCache-Control: no-store\r\n";
  if (persistence == Persistence::close) out += "Connection: close\r\n";
  else if (persistence == Persistence::keep_http10) out += "Connection: keep-alive\r\n";
  out += "\r\n";
  out += body;
  return out;
}

std::string denial_body(config::Protocol protocol, std::string_view rule, std::string_view reason) {
  switch (protocol) {
    case config::Protocol::kubernetes:
      return kube_status(403, "Forbidden", std::string("portcullis: ") + std::string(reason));
    case config::Protocol::docker:
      return "{\"message\":" + quoted(std::string("portcullis: ") + std::string(reason)) + "}";
    default:
      return "{\"error\":\"denied\",\"rule\":" + (rule.empty() ? std::string("null") : quoted(rule)) +
             ",\"reason\":" + quoted(reason) + "}";
  }
}

std::string error_body(config::Protocol protocol, int status, std::string_view kind, std::string_view reason) {
  switch (protocol) {
    case config::Protocol::kubernetes: {
      std::string_view word = status == 400 ? "BadRequest" : status == 401 ? "Unauthorized" : status == 504 ? "Timeout" : status == 413 ? "RequestEntityTooLarge" : "ServiceUnavailable";
      return kube_status(status, word, std::string("portcullis: ") + std::string(reason));
    }
    case config::Protocol::docker:
      return "{\"message\":" + quoted(std::string("portcullis: ") + std::string(reason)) + "}";
    default:
      return "{\"error\":" + quoted(kind) + ",\"reason\":" + quoted(reason) + "}";
  }
}

}  // namespace portcullis::http
