// Request-smuggling defences: each ambiguous framing form is refused with its reason.
#include "proxy/http/head_check.hpp"

#include <catch2/catch.hpp>
#include <vector>

using portcullis::http::check_raw_head;
using portcullis::http::check_request_body;
using portcullis::http::check_request_fields;
using portcullis::http::check_request_overrides;
using portcullis::http::is_forwarded_field;
using portcullis::http::same_field_name;
using portcullis::http::check_switch;
using portcullis::policy::Header;

namespace {
std::string fields(std::vector<Header> h) { return check_request_fields(h); }
}  // namespace

TEST_CASE("raw head: a well-formed head passes") {
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").empty());
  CHECK(check_raw_head("POST /x?y=1 HTTP/1.0\r\nHost: a\r\nX-Tab:\tv\r\nX-Empty:\r\nX-Utf8: caf\xC3\xA9\r\n\r\n")
            .empty());
  CHECK(check_raw_head("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").empty());  // RFC 9112 2.2
}

TEST_CASE("raw head: line endings") {
  CHECK(check_raw_head("GET / HTTP/1.1\nHost: a\r\n\r\n") == "bare LF line ending (LF without CR)");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\n\r\n") == "bare LF line ending (LF without CR)");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\n\n") == "bare LF line ending (LF without CR)");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nX: a\rb\r\nHost: a\r\n\r\n") == "bare CR in request head");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\n") == "request head not terminated by an empty line");
  CHECK(check_raw_head("") == "empty request head");
}

TEST_CASE("raw head: obs-fold and whitespace before the colon") {
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n") ==
        "obs-fold (header line starting with whitespace)");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\t2\r\n\r\n") ==
        "obs-fold (header line starting with whitespace)");
  CHECK(check_raw_head("GET / HTTP/1.1\r\n Host: a\r\n\r\n") == "obs-fold (header line starting with whitespace)");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n") ==
        "whitespace between header name and colon (Transfer-Encoding)");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nContent-Length\t: 5\r\n\r\n") ==
        "whitespace between header name and colon (Content-Length)");
}

TEST_CASE("raw head: NUL, control characters and invalid field names") {
  using namespace std::string_literals;
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"s) == "NUL in header X");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nX\0Y: a\r\n\r\n"s) == "NUL in header name");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n") == "control character in header X");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7F\r\n\r\n") == "control character in header X");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nX\x01Y: a\r\n\r\n") == "invalid character in header name X?Y");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nX(Y): a\r\n\r\n") == "invalid character in header name X(Y)");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\n: a\r\n\r\n") == "empty header name");
  CHECK(check_raw_head("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n") == "header line without a colon");
}

TEST_CASE("raw head: the request line is exactly METHOD SP TARGET SP VERSION") {
  CHECK(check_raw_head("GET  / HTTP/1.1\r\nHost: a\r\n\r\n") == "extra whitespace in request line");
  CHECK(check_raw_head("GET /  HTTP/1.1\r\nHost: a\r\n\r\n") == "extra whitespace in request line");
  CHECK(check_raw_head("GET / HTTP/1.1 \r\nHost: a\r\n\r\n") == "extra whitespace in request line");
  CHECK(check_raw_head(" GET / HTTP/1.1\r\nHost: a\r\n\r\n") == "request line starts with whitespace");
  CHECK(check_raw_head("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n") == "tab in request line");
  CHECK(check_raw_head("GET / x HTTP/1.1\r\nHost: a\r\n\r\n") == "extra whitespace in request line");
  CHECK(check_raw_head("GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n") == "invalid character in request target");
  CHECK(check_raw_head("GET / HTTP/1.1x\r\nHost: a\r\n\r\n") == "invalid HTTP version in request line");
  CHECK(check_raw_head("G(T / HTTP/1.1\r\nHost: a\r\n\r\n") == "invalid character in method");
  CHECK(check_raw_head("GET /\r\nHost: a\r\n\r\n") == "request line is not METHOD SP TARGET SP VERSION");
}

TEST_CASE("fields: a plain request passes") {
  CHECK(fields({{"host", "a.example"}}).empty());
  CHECK(fields({{"host", "a.example:8080"}, {"content-length", "12"}}).empty());
  CHECK(fields({{"host", "[::1]:443"}, {"transfer-encoding", "chunked"}}).empty());
  CHECK(fields({{"host", "10.0.0.1"}, {"content-length", "0"}}).empty());
}

TEST_CASE("fields: Content-Length and Transfer-Encoding") {
  CHECK(fields({{"host", "a"}, {"content-length", "5"}, {"transfer-encoding", "chunked"}}) ==
        "both Content-Length and Transfer-Encoding");
  CHECK(fields({{"host", "a"}, {"content-length", "5"}, {"content-length", "5"}}) == "duplicate Content-Length");
  CHECK(fields({{"host", "a"}, {"content-length", "5"}, {"content-length", "6"}}) ==
        "conflicting Content-Length values");
  CHECK(fields({{"host", "a"}, {"content-length", "5, 5"}}) == "Content-Length is not a decimal number");
  CHECK(fields({{"host", "a"}, {"content-length", "+5"}}) == "Content-Length is not a decimal number");
  CHECK(fields({{"host", "a"}, {"content-length", "0x10"}}) == "Content-Length is not a decimal number");
  CHECK(fields({{"host", "a"}, {"content-length", ""}}) == "Content-Length is not a decimal number");
  CHECK(fields({{"host", "a"}, {"content-length", "1234567890123456789"}}) == "Content-Length too large");
  CHECK(fields({{"host", "a"}, {"transfer-encoding", "gzip, chunked"}}) ==
        "Transfer-Encoding other than exactly \"chunked\"");
  CHECK(fields({{"host", "a"}, {"transfer-encoding", "Chunked"}}) ==
        "Transfer-Encoding other than exactly \"chunked\"");
  CHECK(fields({{"host", "a"}, {"transfer-encoding", "chunked "}}) ==
        "Transfer-Encoding other than exactly \"chunked\"");
  CHECK(fields({{"host", "a"}, {"transfer-encoding", "identity"}}) ==
        "Transfer-Encoding other than exactly \"chunked\"");
  CHECK(fields({{"host", "a"}, {"transfer-encoding", "chunked"}, {"transfer-encoding", "chunked"}}) ==
        "more than one Transfer-Encoding field");
}

TEST_CASE("fields: Host present once, non-empty, a valid host[:port]") {
  CHECK(fields({}) == "missing Host header");
  CHECK(fields({{"host", "a"}, {"host", "b"}}) == "more than one Host header");
  CHECK(fields({{"host", ""}}) == "empty Host header");
  CHECK(fields({{"host", "a b"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", "a@b"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", "a/b"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", "a:"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", "a:1:2"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", "a:65536"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", ":80"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", "[::1"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", "[zz]"}}) == "Host header is not a valid host[:port]");
  CHECK(fields({{"host", "a%2eb"}}) == "Host header is not a valid host[:port]");
}

TEST_CASE("body: GET, HEAD and TRACE carry none, other methods may") {
  // An upstream that never reads a GET body (Python's http.server) takes it for its next request.
  const std::string why = " request with a body (an upstream that does not read it takes it for a request)";
  CHECK(check_request_body("GET", std::vector<Header>{{"host", "a"}, {"content-length", "5"}}) == "GET" + why);
  CHECK(check_request_body("HEAD", std::vector<Header>{{"host", "a"}, {"transfer-encoding", "chunked"}}) == "HEAD" + why);
  CHECK(check_request_body("TRACE", std::vector<Header>{{"host", "a"}, {"content-length", "1"}}) == "TRACE" + why);
  CHECK(check_request_body("GET", std::vector<Header>{{"host", "a"}, {"content-length", "0"}}).empty());
  CHECK(check_request_body("GET", std::vector<Header>{{"host", "a"}, {"content-length", "000"}}).empty());
  CHECK(check_request_body("GET", std::vector<Header>{{"host", "a"}}).empty());
  CHECK(check_request_body("POST", std::vector<Header>{{"host", "a"}, {"content-length", "5"}}).empty());
  CHECK(check_request_body("DELETE", std::vector<Header>{{"host", "a"}, {"content-length", "5"}}).empty());  // kubectl
  CHECK(check_request_body("get", std::vector<Header>{{"host", "a"}, {"content-length", "5"}}).empty());  // not GET
}

TEST_CASE("overrides: a header that names another method or path than the request line is refused") {
  auto overrides = [](std::string name) {
    return check_request_overrides(std::vector<Header>{{"host", "a"}, {std::move(name), "DELETE"}});
  };
  for (const char* name : {"x-http-method-override", "x-http-method", "x-method-override", "x_http_method_override",
                           "x-http_method"})
    CHECK(overrides(name) == "header " + std::string(name) +
                                 " asks the upstream to run another method than the rules checked; send that method itself");
  for (const char* name : {"x-original-url", "x-rewrite-url", "x_original_url"})
    CHECK(overrides(name) == "header " + std::string(name) +
                                 " asks the upstream to serve another path than the rules checked; send that path itself");
  for (const char* name : {"x-http-method-overrides", "x-method", "x-original-uri", "method", "x-rewrite"})
    CHECK(overrides(name).empty());
}

TEST_CASE("forwarded fields: Forwarded, X-Forwarded-* (not the client certificate's) and X-Real-IP") {
  for (const char* name : {"forwarded", "x-forwarded-for", "x_forwarded_for", "x-forwarded-host", "x-forwarded-proto",
                           "x-forwarded-port", "x-forwarded-prefix", "x-real-ip", "x_real_ip"})
    CHECK(is_forwarded_field(name));
  for (const char* name : {"x-forwarded-client-cert", "x-forwarded", "forwarded-for", "x-real-ip2", "x-forwarded-fo"})
    CHECK_FALSE(is_forwarded_field(name));
  CHECK(same_field_name("x_remote_user", "x-remote-user"));
  CHECK_FALSE(same_field_name("x-remote_user", "x_remote_user"));  // '_' in the wanted name is literal
  CHECK_FALSE(same_field_name("x-remote-users", "x-remote-user"));
}

TEST_CASE("a 101 is a switch only to a protocol the client offered, with websocket's accept") {
  const std::vector<Header> ws_request{{"upgrade", "websocket"}, {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="}};
  // RFC 6455 section 1.3's example key and answer.
  CHECK(check_switch("websocket", ws_request,
                     std::vector<Header>{{"connection", "Upgrade"}, {"upgrade", "WebSocket"},
                                         {"sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}})
            .empty());
  CHECK(check_switch("SPDY/3.1, websocket", {}, std::vector<Header>{{"connection", "keep-alive, upgrade"}, {"upgrade", "spdy/3.1"}})
            .empty());
  CHECK_FALSE(check_switch("websocket", ws_request, {}).empty());  // an echoed status
  CHECK_FALSE(check_switch("websocket", ws_request, std::vector<Header>{{"upgrade", "websocket"}}).empty());
  CHECK_FALSE(check_switch("websocket", ws_request,
                           std::vector<Header>{{"connection", "upgrade"}, {"upgrade", "websocket"}}).empty());
  CHECK_FALSE(check_switch("websocket", ws_request,
                           std::vector<Header>{{"connection", "upgrade"}, {"upgrade", "websocket"},
                                               {"sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOX="}})
                  .empty());
  CHECK_FALSE(check_switch("echo", {}, std::vector<Header>{{"connection", "upgrade"}, {"upgrade", "h2c"}}).empty());
  CHECK_FALSE(check_switch("a, b", {}, std::vector<Header>{{"connection", "upgrade"}, {"upgrade", "a, b"}}).empty());
}
