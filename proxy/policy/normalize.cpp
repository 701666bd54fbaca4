// Request-target normalisation. Boost.URL checks the RFC 3986 grammar (origin-form and
// absolute-form); the path is then rebuilt segment by segment into the one spelling that the
// rules are matched against AND that the upstream is sent, so the proxy and the upstream cannot
// disagree about which resource was asked for.
//
// Choices (see also normalize.hpp):
// - Percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are decoded; every other escape
//   is kept, with its hex digits uppercased ("%3b" -> "%3B").
// - "." and ".." segments are removed after decoding (so "%2e%2e" is ".."); a ".." that would
//   climb above the root is rejected, not clamped. Empty segments ("//") are merged; a trailing
//   slash is kept ("/a/" and "/a" are different paths, as they are to most servers).
// - Rejected: encoded '/' or '\' (%2F, %5C), a raw '\', control characters raw or encoded
//   (%00-%1F, %7F), raw non-ASCII, bad percent-encoding, double encoding (%25 followed by two
//   hex digits: an upstream that decodes twice would see a different path), decoded bytes
//   that are not valid UTF-8 (overlong forms such as %C0%AE, surrogates, truncated sequences),
//   a fragment, userinfo in an absolute-form target, CONNECT, and "*" except for OPTIONS.
// - A raw ';' in the path is rejected: servers such as Tomcat and Jetty strip ";params" from a
//   segment, so "/admin;x" could reach "/admin" while the rules see another path. An encoded
//   %3B is kept as a literal character of the segment (those servers do not split on it).
// - The path keeps its case: rules are case-sensitive. An upstream that folds case (IIS, a
//   case-insensitive file system) can be reached as "/Admin" by a rule-dodger, so in front of
//   such an upstream write allow rules only (never rely on a deny by omission of one casing).
#include "proxy/policy/normalize.hpp"

#include <boost/url/parse.hpp>

namespace portcullis::policy {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
bool is_unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}
std::string hex_byte(unsigned v) {
  static constexpr char digits[] = "0123456789ABCDEF";
  return {'%', digits[(v >> 4) & 0xF], digits[v & 0xF]};
}

NormalizedTarget reject(std::string why) {
  NormalizedTarget n;
  n.error = std::move(why);
  return n;
}

// Empty when `bytes` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates,
// nothing above U+10FFFF), else what is wrong.
std::string check_utf8(std::string_view bytes) {
  std::size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // below: overlong
      if (c == 0xED) hi = 0x9F;  // above: UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // below: overlong
      if (c == 0xF4) hi = 0x8F;  // above: beyond U+10FFFF
    } else if (c == 0xC0 || c == 0xC1) {
      return "overlong UTF-8 encoding in path";
    } else {
      return "invalid UTF-8 in path";
    }
    if (i + len > bytes.size()) return "truncated UTF-8 sequence in path";
    const auto second = static_cast<unsigned char>(bytes[i + 1]);
    if (second < lo || second > hi) {
      if ((c == 0xE0 || c == 0xF0) && second >= 0x80 && second < lo) return "overlong UTF-8 encoding in path";
      return "invalid UTF-8 in path";
    }
    for (std::size_t k = 2; k < len; ++k) {
      const auto b = static_cast<unsigned char>(bytes[i + k]);
      if (b < 0x80 || b > 0xBF) return "invalid UTF-8 in path";
    }
    i += len;
  }
  return {};
}

// Rebuilds one path segment in canonical form; `decoded` receives its fully decoded bytes.
// Returns empty, or why the segment is refused.
std::string canonical_segment(std::string_view raw, std::string& out, std::string& decoded) {
  out.clear();
  decoded.clear();
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    if (c == ';') return "';' (path parameter) in path";
    if (c != '%') {
      out += c;
      decoded += c;
      continue;
    }
    // Pre-scanned: two hex digits follow.
    const auto v = static_cast<unsigned>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
    i += 2;
    if (v < 0x20 || v == 0x7F) return "encoded control character " + hex_byte(v) + " in path";
    if (v == '/') return "encoded slash %2F in path";
    if (v == '\\') return "encoded backslash %5C in path";
    decoded += static_cast<char>(v);
    if (is_unreserved(static_cast<unsigned char>(v)))
      out += static_cast<char>(v);
    else
      out += hex_byte(v);
  }
  // Checked on the result, so that "%25%41a" (which becomes "%25Aa") is caught too.
  for (std::size_t k = out.find("%25"); k != std::string::npos; k = out.find("%25", k + 3)) {
    if (k + 4 < out.size() && hex_value(out[k + 3]) >= 0 && hex_value(out[k + 4]) >= 0)
      return "double percent-encoding (%25 followed by hex digits) in path";
  }
  return check_utf8(decoded);
}

// Dot-segment removal and slash merging over the canonical segments.
// True when rebuilding `encoded` would give it back unchanged: every segment is its own
// canonical form (nothing to decode, no ';') and no segment is removed or merged.
bool already_canonical(std::string_view encoded) {
  if (encoded.find_first_of("%;") != std::string_view::npos) return false;
  std::size_t pos = 1;  // after the leading '/'
  for (;;) {
    const std::size_t slash = encoded.find('/', pos);
    const std::size_t end = slash == std::string_view::npos ? encoded.size() : slash;
    const std::string_view seg = encoded.substr(pos, end - pos);
    if (seg == "." || seg == "..") return false;
    if (slash == std::string_view::npos) return true;  // a final empty segment is the trailing '/'
    if (seg.empty()) return false;                     // "//" is merged
    pos = slash + 1;
  }
}

}  // namespace

namespace detail {

std::string normalize_path(std::string_view encoded, std::string& error, bool use_shortcut) {
  error.clear();
  if (encoded.empty() || encoded.front() != '/') {
    error = "path does not start with '/'";
    return {};
  }
  if (use_shortcut && already_canonical(encoded)) return std::string(encoded);
  std::vector<std::string> segments;
  bool trailing_slash = false;
  std::string seg, decoded;
  std::size_t pos = 1;  // after the leading '/'
  while (true) {
    const std::size_t slash = encoded.find('/', pos);
    const std::string_view raw =
        encoded.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    error = canonical_segment(raw, seg, decoded);
    if (!error.empty()) return {};
    if (seg == "..") {
      if (segments.empty()) {
        error = "'..' in path climbs above the root";
        return {};
      }
      segments.pop_back();
      trailing_slash = true;
    } else if (seg == "." || seg.empty()) {
      trailing_slash = true;
    } else {
      segments.push_back(seg);
      trailing_slash = false;
    }
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  std::string path;
  for (const auto& s : segments) {
    path += '/';
    path += s;
  }
  if (path.empty() || trailing_slash) path += '/';
  return path;
}

}  // namespace detail

NormalizedTarget normalize_target(std::string_view method, std::string_view target) {
  if (method == "CONNECT") return reject("CONNECT is not supported");
  if (target.empty()) return reject("empty request target");
  if (target == "*") {
    if (method != "OPTIONS") return reject("asterisk-form target \"*\" is only allowed with OPTIONS");
    NormalizedTarget n;
    n.ok = true;
    n.path = "*";
    return n;
  }
  // Byte-level checks first, for precise messages (Boost.URL would only say "mismatch").
  for (std::size_t i = 0; i < target.size(); ++i) {
    const auto c = static_cast<unsigned char>(target[i]);
    if (c < 0x20 || c == 0x7F) return reject("control character " + hex_byte(c) + " in request target");
    if (c == ' ') return reject("space in request target");
    if (c >= 0x80) return reject("raw non-ASCII byte in request target (must be percent-encoded)");
    if (c == '\\') return reject("backslash in request target");
    if (c == '#') return reject("fragment ('#') in request target");
    if (c == '%' && (i + 2 >= target.size() || hex_value(target[i + 1]) < 0 || hex_value(target[i + 2]) < 0))
      return reject("invalid percent-encoding at offset " + std::to_string(i) + " of request target");
  }

  NormalizedTarget n;
  std::string_view path;
  if (target.front() == '/') {
    auto u = boost::urls::parse_origin_form(target);
    if (!u) return reject("malformed request target: " + u.error().message());
    path = u->encoded_path();
    if (u->has_query()) n.query = u->encoded_query();
  } else {
    auto u = boost::urls::parse_absolute_uri(target);
    if (!u) return reject("request target is neither origin-form nor absolute-form: " + u.error().message());
    if (u->scheme_id() != boost::urls::scheme::http && u->scheme_id() != boost::urls::scheme::https)
      return reject("absolute-form target with a scheme other than http or https");
    if (!u->has_authority() || u->encoded_host().empty()) return reject("absolute-form target without a host");
    if (u->has_userinfo()) return reject("userinfo ('@') in absolute-form target");
    const std::string_view host = u->encoded_host();
    if (host.find('%') != std::string_view::npos) return reject("percent-encoded host in absolute-form target");
    for (char c : host) n.authority += (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (u->has_port()) {
      const std::string_view port = u->port();
      unsigned long value = 0;
      for (char c : port) value = value * 10 + static_cast<unsigned long>(c - '0');  // grammar: digits
      if (port.empty() || port.size() > 5 || value > 65535) return reject("invalid port in absolute-form target");
      n.authority += ':';
      n.authority += port;
    }
    path = u->encoded_path();
    // RFC 3986 path-abempty: after an authority the path is empty or starts with '/'. Boost.URL
    // 1.81 ends the port at its last digit and returns the rest as the path ("host:80,x" gives
    // port 80 and path ",x"): such a target is malformed, not a request for "/x".
    if (!path.empty() && path.front() != '/')
      return reject("absolute-form target whose path does not start with '/' (invalid port?)");
    if (u->has_query()) n.query = u->encoded_query();
  }
  if (n.query.find("%00") != std::string::npos) return reject("encoded NUL (%00) in query");
  if (path.empty()) {
    n.path = "/";
  } else {
    std::string error;
    n.path = detail::normalize_path(path, error);
    if (!error.empty()) return reject(error);
  }
  n.ok = true;
  return n;
}

}  // namespace portcullis::policy
