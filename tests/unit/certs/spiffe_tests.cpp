#include <catch2/catch.hpp>
#include <string>

#include "certs/spiffe.hpp"

using portcullis::certs::is_valid_spiffe_id;

TEST_CASE("SPIFFE IDs that workloads really carry are accepted", "[spiffe]") {
  const char* valid = GENERATE("spiffe://cluster.local/ns/shop/sa/frontend", "spiffe://example.org/a",
                               "spiffe://my-domain_1.example/Service.A_b-c/x", "spiffe://td/a/b/c/d/e");
  CAPTURE(valid);
  CHECK(is_valid_spiffe_id(valid));
}

TEST_CASE("malformed SPIFFE IDs are refused", "[spiffe]") {
  const char* invalid = GENERATE("",                             // empty
                                 "spiffe://",                    // no trust domain
                                 "spiffe://example.org",         // bare trust domain: not a workload
                                 "spiffe://example.org/",        // empty path segment
                                 "spiffe:///path",               // empty trust domain
                                 "SPIFFE://example.org/a",       // scheme must be lowercase
                                 "https://example.org/a",        // other scheme
                                 "spiffe://Example.org/a",       // uppercase trust domain
                                 "spiffe://example.org:8443/a",  // port
                                 "spiffe://user@example.org/a",  // userinfo
                                 "spiffe://example.org/a?x=1",   // query
                                 "spiffe://example.org/a#frag",  // fragment
                                 "spiffe://example.org/a//b",    // empty segment
                                 "spiffe://example.org/a/",      // trailing slash
                                 "spiffe://example.org/./a",     // dot segment
                                 "spiffe://example.org/a/..",    // dot-dot segment
                                 "spiffe://example.org/a%2Fb",   // percent-encoding
                                 "spiffe://example.org/a b",     // space
                                 "spiffe://exa mple.org/a");     // space in the trust domain
  CAPTURE(invalid);
  CHECK_FALSE(is_valid_spiffe_id(invalid));
}

TEST_CASE("SPIFFE IDs are limited to 2048 bytes and trust domains to 255", "[spiffe]") {
  const std::string prefix = "spiffe://example.org/";
  CHECK(is_valid_spiffe_id(prefix + std::string(2048 - prefix.size(), 'a')));
  CHECK_FALSE(is_valid_spiffe_id(prefix + std::string(2049 - prefix.size(), 'a')));
  CHECK(is_valid_spiffe_id("spiffe://" + std::string(255, 'a') + "/x"));
  CHECK_FALSE(is_valid_spiffe_id("spiffe://" + std::string(256, 'a') + "/x"));
}

TEST_CASE("a NUL byte inside a SPIFFE ID is refused", "[spiffe]") {
  CHECK_FALSE(is_valid_spiffe_id(std::string("spiffe://example.org/a\0b", 24)));
}
