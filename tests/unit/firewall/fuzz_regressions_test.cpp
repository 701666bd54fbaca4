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
