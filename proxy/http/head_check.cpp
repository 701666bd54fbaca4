// Request-smuggling and ambiguity checks. Strict by design: every form refused here is one that
// some HTTP implementation reads differently from another (RFC 9112 sections 2.2, 3, 5, 6.1,
// 6.3; RFC 9110 section 7.2). Pure functions; never throw.
#include "proxy/http/head_check.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <boost/url/parse.hpp>

namespace portcullis::http {
namespace {

// RFC 9110 5.6.2 tchar, as a table: every byte of every header name is looked up.
constexpr std::array<bool, 256> tchar_table = [] {
  std::array<bool, 256> t{};
  for (int c = 'a'; c <= 'z'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (int c = '0'; c <= '9'; ++c) t[static_cast<std::size_t>(c)] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();
bool is_tchar(unsigned char c) { return tchar_table[c]; }
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Only printable ASCII of an attacker-chosen name goes into a reason (it ends up in logs).
std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    const auto u = static_cast<unsigned char>(c);
    out += (u > 0x20 && u < 0x7F) ? c : '?';
  }
  return out;
}

std::string check_request_line(std::string_view line) {
  for (char c : line)
    if (c == '\t') return "tab in request line";
  const std::size_t sp1 = line.find(' ');
  if (sp1 == 0) return "request line starts with whitespace";
  if (sp1 == std::string_view::npos) return "request line is not METHOD SP TARGET SP VERSION";
  const std::string_view method = line.substr(0, sp1);
  if (!std::all_of(method.begin(), method.end(), [](char c) { return is_tchar(static_cast<unsigned char>(c)); }))
    return "invalid character in method";
  const std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == sp1 + 1) return "extra whitespace in request line";
  if (sp2 == std::string_view::npos) return "request line is not METHOD SP TARGET SP VERSION";
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  for (char c : target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7F) return "invalid character in request target";
  }
  const std::string_view version = line.substr(sp2 + 1);
  if (version.find(' ') != std::string_view::npos || version.empty()) return "extra whitespace in request line";
  if (version.size() != 8 || !version.starts_with("HTTP/") || !is_digit(version[5]) || version[6] != '.' ||
      !is_digit(version[7]))
    return "invalid HTTP version in request line";
  return {};
}

std::string check_field_line(std::string_view line) {
  if (line.front() == ' ' || line.front() == '\t') return "obs-fold (header line starting with whitespace)";
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return "header line without a colon";
  const std::string_view name = line.substr(0, colon);
  if (name.empty()) return "empty header name";
  if (name.back() == ' ' || name.back() == '\t') {
    const std::size_t end = name.find_last_not_of(" \t");
    return "whitespace between header name and colon (" +
           printable(name.substr(0, end == std::string_view::npos ? 0 : end + 1)) + ")";
  }
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u == 0) return "NUL in header name";
    if (!is_tchar(u)) return "invalid character in header name " + printable(name);
  }
  for (char c : line.substr(colon + 1)) {
    const auto u = static_cast<unsigned char>(c);
    if (u == 0) return "NUL in header " + std::string(name);
    if ((u < 0x20 && u != '\t') || u == 0x7F) return "control character in header " + std::string(name);
  }
  return {};
}

bool valid_port(std::string_view port) {
  if (port.empty() || port.size() > 5) return false;
  unsigned long v = 0;
  for (char c : port) {
    if (!is_digit(c)) return false;
    v = v * 10 + static_cast<unsigned long>(c - '0');
  }
  return v <= 65535;
}

// uri-host [ ":" port ], stricter than RFC 3986 reg-name: DNS-style names and IPv4 only (no
// percent-encoding, no sub-delims), or a bracketed IPv6 address.
bool valid_host(std::string_view value) {
  std::string_view host = value, port;
  bool has_port = false;
  if (value.front() == '[') {
    const std::size_t close = value.find(']');
    if (close == std::string_view::npos) return false;
    if (!boost::urls::parse_ipv6_address(value.substr(1, close - 1))) return false;
    host = value.substr(0, close + 1);
    const std::string_view rest = value.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      has_port = true;
      port = rest.substr(1);
    }
  } else {
    const std::size_t colon = value.find(':');
    if (colon != std::string_view::npos) {
      host = value.substr(0, colon);
      port = value.substr(colon + 1);
      has_port = true;
    }
    if (host.empty()) return false;
    for (char c : host)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' || c == '.' || c == '_'))
        return false;
  }
  return !has_port || valid_port(port);
}

}  // namespace

std::string check_raw_head(std::string_view raw) {
  std::size_t pos = 0;
  // RFC 9112 2.2: a server should ignore empty lines before the request line.
  while (raw.substr(pos).starts_with("\r\n")) pos += 2;
  if (pos >= raw.size()) return "empty request head";
  bool first = true;
  while (true) {
    const std::size_t nl = raw.find('\n', pos);
    if (nl == std::string_view::npos) return "request head not terminated by an empty line";
    if (nl == pos || raw[nl - 1] != '\r') return "bare LF line ending (LF without CR)";
    const std::string_view line = raw.substr(pos, nl - 1 - pos);
    if (line.find('\r') != std::string_view::npos) return "bare CR in request head";
    pos = nl + 1;
    if (line.empty()) return first ? "empty request line" : std::string();
    std::string error = first ? check_request_line(line) : check_field_line(line);
    if (!error.empty()) return error;
    first = false;
  }
}

std::string check_request_fields(std::span<const policy::Header> fields) {
  const policy::Header* content_length = nullptr;
  const policy::Header* transfer_encoding = nullptr;
  const policy::Header* host = nullptr;
  for (const auto& f : fields) {
    if (f.name == "content-length") {
      if (content_length) {
        return content_length->value == f.value ? "duplicate Content-Length" : "conflicting Content-Length values";
      }
      content_length = &f;
    } else if (f.name == "transfer-encoding") {
      if (transfer_encoding) return "more than one Transfer-Encoding field";
      transfer_encoding = &f;
    } else if (f.name == "host") {
      if (host) return "more than one Host header";
      host = &f;
    }
  }
  if (content_length && transfer_encoding) return "both Content-Length and Transfer-Encoding";
  if (transfer_encoding && transfer_encoding->value != "chunked")
    return "Transfer-Encoding other than exactly \"chunked\"";
  if (content_length) {
    const std::string& v = content_length->value;
    if (v.empty() || !std::all_of(v.begin(), v.end(), is_digit)) return "Content-Length is not a decimal number";
    if (v.size() > 18) return "Content-Length too large";
  }
  if (!host) return "missing Host header";
  if (host->value.empty()) return "empty Host header";
  if (!valid_host(host->value)) return "Host header is not a valid host[:port]";
  return {};
}

std::string check_request_body(std::string_view method, std::span<const policy::Header> fields) {
  if (method != "GET" && method != "HEAD" && method != "TRACE") return {};
  for (const auto& f : fields) {
    if (f.name == "transfer-encoding" ||
        (f.name == "content-length" && f.value.find_first_not_of('0') != std::string::npos))
      return std::string(method) + " request with a body (an upstream that does not read it takes it for a request)";
  }
  return {};
}

bool same_field_name(std::string_view name, std::string_view lower_want) {
  return name.size() == lower_want.size() &&
         std::equal(lower_want.begin(), lower_want.end(), name.begin(),
                    [](char w, char n) { return w == n || (w == '-' && n == '_'); });
}

std::string check_request_overrides(std::span<const policy::Header> fields) {
  static constexpr std::string_view method_overrides[] = {"x-http-method-override", "x-http-method",
                                                          "x-method-override"};
  static constexpr std::string_view url_overrides[] = {"x-original-url", "x-rewrite-url"};
  for (const auto& f : fields) {
    for (auto name : method_overrides)
      if (same_field_name(f.name, name))
        return "header " + f.name + " asks the upstream to run another method than the rules checked; send " +
               "that method itself";
    for (auto name : url_overrides)
      if (same_field_name(f.name, name))
        return "header " + f.name + " asks the upstream to serve another path than the rules checked; send " +
               "that path itself";
  }
  return {};
}

bool is_forwarded_field(std::string_view lower_name) {
  static constexpr std::string_view names[] = {"forwarded",          "x-forwarded-for",  "x-forwarded-host",
                                               "x-forwarded-proto",  "x-forwarded-port", "x-forwarded-prefix",
                                               "x-real-ip"};
  return std::ranges::any_of(names, [&](std::string_view n) { return same_field_name(lower_name, n); });
}

namespace {

// Calls f on each item of a comma-separated header list (Connection, Upgrade), without the
// spaces and tabs around it and skipping empty ones, until f returns true.
template <class F>
bool any_item(std::string_view list, F f) {
  while (true) {
    auto comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (!item.empty() && f(item)) return true;
    if (comma == std::string_view::npos) return false;
    list.remove_prefix(comma + 1);
  }
}

std::string lowercase(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

// RFC 6455 4.2.2: base64(SHA-1(key + GUID)).
std::string websocket_accept(std::string_view key) {
  std::string text(key);
  text += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha1(), nullptr) != 1) return {};
  std::string out(4 * ((length + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), digest, static_cast<int>(length));
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

}  // namespace

bool has_token(std::string_view list, std::string_view lower_token) {
  return any_item(list, [&](std::string_view item) {
    return item.size() == lower_token.size() && lowercase(item) == lower_token;
  });
}

std::string check_switch(std::string_view offered, std::span<const policy::Header> request,
                         std::span<const policy::Header> response) {
  const std::string* connection = policy::find_header(response, "connection");
  const std::string* upgrade = policy::find_header(response, "upgrade");
  if (connection == nullptr || upgrade == nullptr)
    return "the upstream answered 101 Switching Protocols without Connection: upgrade and an Upgrade header";
  if (!has_token(*connection, "upgrade"))
    return "the upstream answered 101 Switching Protocols without Connection: upgrade";
  std::string chosen;  // the one protocol the upstream names
  int protocols = 0;
  any_item(*upgrade, [&](std::string_view item) {
    chosen = lowercase(item);
    return ++protocols > 1;
  });
  if (protocols != 1 || !has_token(offered, chosen))
    return "the upstream answered 101 Switching Protocols to '" + printable(*upgrade) +
           "', which is not one protocol the client asked for";
  if (chosen == "websocket") {
    const std::string* key = policy::find_header(request, "sec-websocket-key");
    const std::string* accept = policy::find_header(response, "sec-websocket-accept");
    if (key == nullptr || accept == nullptr || *accept != websocket_accept(*key))
      return "the upstream answered 101 Switching Protocols to websocket without the Sec-WebSocket-Accept for "
             "the client's key";
  }
  return {};
}

}  // namespace portcullis::http
