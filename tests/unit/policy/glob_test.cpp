// Segment patterns: the direct matcher and the trie agree, and both follow the documented rules.
#include "proxy/policy/glob.hpp"

#include <catch2/catch.hpp>

using namespace portcullis::policy;

namespace {
// Pattern and value bodies (the text after the leading '/').
struct Row {
  std::string_view pattern, value;
  bool match;
};
constexpr Row rows[] = {
    {"a/b", "a/b", true},
    {"a/b", "a/b/", false},
    {"a/b", "a/B", false},
    {"a/*", "a/x", true},
    {"a/*", "a/", false},
    {"a/*", "a/x/y", false},
    {"a/*", "a", false},
    {"*/b", "x/b", true},
    {"a/**", "a", true},
    {"a/**", "a/", true},
    {"a/**", "a/x/y", true},
    {"a/**", "ab", false},
    {"a/**", "b/a", false},
    {"**", "", true},
    {"**", "x/y", true},
    {"", "", true},
    {"", "a", false},
    {"*/**", "", false},
    {"*/**", "x", true},
    {"*/**", "x/y/z", true},
    {"a/*/c/**", "a/b/c", true},
    {"a/*/c/**", "a/b/d", false},
};
}  // namespace

TEST_CASE("segment patterns match as documented, directly and through the trie") {
  for (const Row& r : rows) {
    INFO("pattern /" << r.pattern << " value /" << r.value);
    CHECK(segment_pattern_matches(r.pattern, r.value) == r.match);
    SegmentTrie trie;
    trie.insert(r.pattern, 7);
    bool found = false;
    trie.visit(r.value, [&](const std::vector<std::uint32_t>& v) { found = found || (v.size() == 1 && v[0] == 7); });
    CHECK(found == r.match);
  }
}

TEST_CASE("segment pattern validation") {
  CHECK(check_segment_pattern("a/*/b/**").empty());
  CHECK(check_segment_pattern("a/**/b") == "`**` is only allowed as the last segment");
  CHECK(check_segment_pattern("a/b*") == "`*` must be a whole segment (got \"b*\")");
  CHECK(is_wildcard_pattern("a/*"));
  CHECK_FALSE(is_wildcard_pattern("a/b"));
}
