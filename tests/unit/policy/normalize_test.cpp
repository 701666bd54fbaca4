// normalize_target(): the error messages an operator sees in a 400, and the parts of a target.
#include "proxy/policy/normalize.hpp"

#include <catch2/catch.hpp>
#include <cctype>
#include <cstdint>
#include <vector>

using portcullis::policy::normalize_target;

namespace {
std::string error_of(std::string_view target, std::string_view method = "GET") {
  const auto n = normalize_target(method, target);
  return n.ok ? "ok" : n.error;
}
}  // namespace

TEST_CASE("normalize: origin-form keeps the query as sent and has no authority") {
  const auto n = normalize_target("GET", "/a/./b//c/?q=%2F&x");
  REQUIRE(n.ok);
  CHECK(n.path == "/a/b/c/");
  CHECK(n.query == "q=%2F&x");
  CHECK(n.authority.empty());
  const auto empty_query = normalize_target("GET", "/a?");
  REQUIRE(empty_query.ok);
  CHECK(empty_query.path == "/a");
  CHECK(empty_query.query.empty());
}

TEST_CASE("normalize: absolute-form gives the authority, lowercased, with its port") {
  const auto n = normalize_target("GET", "http://API.Example.COM:8443/x?y=1");
  REQUIRE(n.ok);
  CHECK(n.authority == "api.example.com:8443");
  CHECK(n.path == "/x");
  CHECK(n.query == "y=1");
  const auto v6 = normalize_target("GET", "http://[::1]:80/");
  REQUIRE(v6.ok);
  CHECK(v6.authority == "[::1]:80");
  CHECK(error_of("http://h:99999/") == "invalid port in absolute-form target");
}

TEST_CASE("normalize: rejections say exactly what was wrong") {
  CHECK(error_of("/a/%2Fb") == "encoded slash %2F in path");
  CHECK(error_of("/a/%5cb") == "encoded backslash %5C in path");
  CHECK(error_of("/a\\b") == "backslash in request target");
  CHECK(error_of("/a/../..") == "'..' in path climbs above the root");
  CHECK(error_of("/a%00") == "encoded control character %00 in path");
  CHECK(error_of(std::string_view("/a\0b", 4)) == "control character %00 in request target");
  CHECK(error_of("/a%G1") == "invalid percent-encoding at offset 2 of request target");
  CHECK(error_of("/a#b") == "fragment ('#') in request target");
  CHECK(error_of("/%C0%AE") == "overlong UTF-8 encoding in path");
  CHECK(error_of("/%E0%80%AE") == "overlong UTF-8 encoding in path");
  CHECK(error_of("/%ED%A0%80") == "invalid UTF-8 in path");
  CHECK(error_of("/%F4%90%80%80") == "invalid UTF-8 in path");
  CHECK(error_of("/%E2%82") == "truncated UTF-8 sequence in path");
  CHECK(error_of("/admin;x") == "';' (path parameter) in path");
  CHECK(error_of("/%252F") == "double percent-encoding (%25 followed by hex digits) in path");
  CHECK(error_of("*") == "asterisk-form target \"*\" is only allowed with OPTIONS");
  CHECK(error_of("h:443", "CONNECT") == "CONNECT is not supported");
  CHECK(error_of("") == "empty request target");
  CHECK(error_of("http://u:p@h/") == "userinfo ('@') in absolute-form target");
  CHECK(error_of("http://h%41/") == "percent-encoded host in absolute-form target");
  CHECK(error_of("mailto:x@y") == "absolute-form target with a scheme other than http or https");
  CHECK(error_of("/a?b=%00") == "encoded NUL (%00) in query");
}

TEST_CASE("normalize: valid UTF-8 of every length is accepted and kept encoded") {
  const auto n = normalize_target("GET", "/%C3%A9/%E2%82%AC/%F0%9F%98%80");
  REQUIRE(n.ok);
  CHECK(n.path == "/%C3%A9/%E2%82%AC/%F0%9F%98%80");
}

TEST_CASE("normalize: reserved characters stay encoded, unreserved ones are decoded") {
  const auto n = normalize_target("GET", "/%41%2d%2E%5f%7E/%3f%23%20%2B/a:b@c,d=e!f$g&h'i(j)k*l+m");
  REQUIRE(n.ok);
  CHECK(n.path == "/A-._~/%3F%23%20%2B/a:b@c,d=e!f$g&h'i(j)k*l+m");
}

// What the upstream receives must already be in normal form: normalising it again changes
// nothing, so an upstream that normalises (or a second proxy) sees the path the rules saw.
TEST_CASE("normalize: random spellings never throw, and every accepted path is a fixed point") {
  const std::vector<std::string> pieces = {"/",   ".",   "..",  "%2e", "%2E", "%2f",    "%5c", "a", "B",
                                           "%41", ";",   "%3b", "%C0", "%AE", "%C3%A9", "//",  "?", "#",
                                           "%",   "%25", "\\",  " ",   "~",   "%7e",    "%00", "*", "@:"};
  std::uint32_t seed = 12345;
  auto next = [&] {
    seed = seed * 1664525u + 1013904223u;
    return seed >> 8;
  };
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string target = "/";
    for (unsigned n = next() % 10; n > 0; --n) target += pieces[next() % pieces.size()];
    const auto n = normalize_target("GET", target);
    INFO(target << " -> " << n.path << " " << n.error);
    if (!n.ok) {
      CHECK_FALSE(n.error.empty());
      continue;
    }
    ++accepted;
    REQUIRE_FALSE(n.path.empty());
    CHECK(n.path.front() == '/');
    CHECK(n.path.find("//") == std::string::npos);
    CHECK(n.path.find(';') == std::string::npos);
    CHECK(n.path.find("/./") == std::string::npos);
    CHECK(n.path.find("/../") == std::string::npos);
    CHECK_FALSE(n.path.ends_with("/.."));
    CHECK_FALSE(n.path.ends_with("/."));
    const auto again = normalize_target("GET", n.path);
    REQUIRE(again.ok);
    CHECK(again.path == n.path);
  }
  CHECK(accepted > 1000);  // the generator exercises the accepting paths too
}

TEST_CASE("normalize: an absolute-form port with anything after its digits is refused, not read as a path") {
  // Fuzz findings (fuzz_normalize, fuzz_http_head): Boost.URL 1.81 ends the port at its last
  // digit and returns the rest as the path, which once lost its first character ("/ple.5").
  CHECK_THAT(error_of("http://Example.COM:80,ple.5?q"), Catch::Contains("does not start with '/'"));
  CHECK_THAT(error_of("http://auu:5uuuuu"), Catch::Contains("does not start with '/'"));
  CHECK(error_of("http://example.com:80/ok") == "ok");
  CHECK(error_of("http://example.com:80") == "ok");
  std::string error;
  CHECK(portcullis::policy::detail::normalize_path("x/y", error).empty());
  CHECK(error == "path does not start with '/'");
  CHECK(portcullis::policy::detail::normalize_path("", error, false).empty());
  CHECK(error == "path does not start with '/'");
}

TEST_CASE("normalize: the shortcut for canonical paths gives what a full rebuild gives") {
  // Every path of up to 6 characters after the leading '/' over an alphabet with each special
  // case ('.', '/', ';', percent-encoding of '.', of 'B' and of '+'): the shortcut must return
  // exactly what the full rebuild returns, or the same refusal.
  const std::string alphabet = "/a.%2eB;";
  auto valid_percent = [](const std::string& p) {
    auto hex = [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; };
    for (std::size_t i = 0; i < p.size(); ++i)
      if (p[i] == '%' && (i + 2 >= p.size() || !hex(p[i + 1]) || !hex(p[i + 2]))) return false;
    return true;
  };
  std::size_t compared = 0, shortcut_taken = 0;
  std::vector<std::size_t> digits;
  for (std::size_t len = 0; len <= 6; ++len) {
    digits.assign(len, 0);
    for (;;) {
      std::string path = "/";
      for (auto d : digits) path += alphabet[d];
      if (valid_percent(path)) {
        std::string fast_error, full_error;
        const std::string fast = portcullis::policy::detail::normalize_path(path, fast_error, true);
        const std::string full = portcullis::policy::detail::normalize_path(path, full_error, false);
        INFO("path " << path);
        REQUIRE(fast_error == full_error);
        REQUIRE(fast == full);
        ++compared;
        if (full_error.empty() && full == path) ++shortcut_taken;
      }
      std::size_t k = 0;
      while (k < len && ++digits[k] == alphabet.size()) digits[k++] = 0;
      if (k == len) break;
    }
  }
  CHECK(compared > 100000);
  CHECK(shortcut_taken > 1000);
  // And the cases that must not be taken as they are.
  std::string error;
  CHECK(portcullis::policy::detail::normalize_path("/a//b", error) == "/a/b");
  CHECK(portcullis::policy::detail::normalize_path("/a/./b", error) == "/a/b");
  CHECK(portcullis::policy::detail::normalize_path("/a/b/..", error) == "/a/");
  CHECK(portcullis::policy::detail::normalize_path("/a/%62", error) == "/a/b");
  CHECK(portcullis::policy::detail::normalize_path("/a/", error) == "/a/");
  CHECK(portcullis::policy::detail::normalize_path("/", error) == "/");
}
