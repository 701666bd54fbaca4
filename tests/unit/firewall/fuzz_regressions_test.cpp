// Inputs the fuzzers (tests/fuzz) found in the firewall library.
#include <catch2/catch.hpp>

#include "firewall/ruleset.hpp"
#include "firewall/spec.hpp"

using namespace portcullis::firewall;

// fuzz_nft + check_nft.sh: a table named "1" was accepted and rendered as `table inet 1`, which
// `nft -f` cannot parse (a name must start with a letter or '_'), so `firewall plan` printed
// text nft refuses. Now refused when the Ruleset is built.
TEST_CASE("fuzz regression: a table name must start with a letter or underscore", "[firewall][fuzz]") {
  Spec s;
  for (const char* bad : {"1", "1abc", "-x", ""}) {
    s.table = bad;
    REQUIRE_THROWS_AS(build_ruleset(s), SpecError);
  }
  for (const char* good : {"portcullis", "_p", "p-1", "p_2"}) {
    s.table = good;
    REQUIRE(render_nft(build_ruleset(s)).find(std::string("table inet ") + good) != std::string::npos);
  }
}

// A name nft's grammar reads as a keyword (`table inet drop`) does not parse either: refused,
// and the message says why. Names that are only close to a keyword are fine (nft's keywords are
// lowercase and whole words). test_firewall_netns.py asks the machine's nft for the full list.
TEST_CASE("a table name that is an nft keyword is refused", "[firewall]") {
  Spec s;
  for (const char* bad : {"drop", "ip", "table", "counter", "set", "inet"}) {
    s.table = bad;
    REQUIRE_THROWS_WITH(build_ruleset(s), Catch::Contains("is a keyword of nft's language"));
    REQUIRE(table_name_problem(bad).find(std::string("'") + bad + "'") != std::string::npos);
  }
  for (const char* good : {"Drop", "filter", "nat", "drops", "ip-fw", "portcullis"}) {
    s.table = good;
    REQUIRE(table_name_problem(good).empty());
    REQUIRE_NOTHROW(build_ruleset(s));
  }
}
