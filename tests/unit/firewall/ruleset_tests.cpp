// build_ruleset -> render_nft golden tests, CIDR merging, and nft accepting what we render.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "firewall/netlink.hpp"
#include "firewall/ruleset.hpp"

namespace fw = portcullis::firewall;

namespace {

fw::Spec sidecar_spec() {
  fw::Spec s;
  s.proxy_uid = 1337;
  s.proxy_gid = 1337;
  s.intercept_inbound = fw::Spec::Inbound{{8080, 9090}, 15006};
  s.intercept_outbound = fw::Spec::Outbound{15001, {53, 15000}};
  s.has_ingress = true;
  s.ingress_default_drop = true;
  s.ingress_allow = {
      {{"10.0.0.0/8"}, {8080}, "tcp"},
      {{"192.168.0.0/24", "192.168.1.0/24", "192.168.1.128/25", "fd00::/8"}, {}, "tcp"},
      {{"192.168.0.0/16"}, {9090}, "tcp"},  // 192.168.0.0/23 is covered by the any-port entry
      {{"10.1.2.3"}, {53}, "udp"},
  };
  s.has_egress = true;
  s.egress_default_drop = true;
  s.egress_allow = {{{"10.96.0.10/32"}, {53}, "udp"}, {{"0.0.0.0/0", "::/0"}, {443}, "tcp"}};
  s.forward_interfaces = {"docker0"};
  s.listener_ports = {15006, 15001, 15000};
  return s;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string run(const std::string& cmd, int& status) {
  std::string out;
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  status = pclose(p);
  return out;
}

}  // namespace

TEST_CASE("CIDRs are parsed, host bits cleared, bare addresses are single hosts", "[firewall][cidr]") {
  CHECK(fw::format_range(fw::parse_cidr("10.1.2.3/8")) == "10.0.0.0/8");
  CHECK(fw::format_range(fw::parse_cidr("10.1.2.3")) == "10.1.2.3/32");
  CHECK(fw::format_range(fw::parse_cidr("fd00::1/8")) == "fd00::/8");
  CHECK(fw::format_range(fw::parse_cidr("0.0.0.0/0")) == "0.0.0.0/0");
  CHECK(fw::format_range(fw::parse_cidr("::/0")) == "::/0");
  CHECK_THROWS_AS(fw::parse_cidr("10.0.0.0/33"), fw::SpecError);
  CHECK_THROWS_AS(fw::parse_cidr("example.com"), fw::SpecError);
  CHECK_THROWS_WITH(fw::parse_cidr("10.0.0.0/x"), Catch::Contains("10.0.0.0/x"));
}

TEST_CASE("adjacent and overlapping CIDRs merge into ranges the kernel accepts", "[firewall][cidr]") {
  auto merged = fw::merge_ranges({fw::parse_cidr("192.168.1.0/24"), fw::parse_cidr("192.168.0.0/24"),
                                  fw::parse_cidr("192.168.0.128/25"), fw::parse_cidr("10.0.0.0/8"),
                                  fw::parse_cidr("11.0.0.0/30"), fw::parse_cidr("fd00::/8"), fw::parse_cidr("fd00::1")});
  REQUIRE(merged.size() == 3);
  CHECK(fw::format_range(merged[0]) == "10.0.0.0-11.0.0.3");
  CHECK(fw::format_range(merged[1]) == "192.168.0.0/23");
  CHECK(fw::format_range(merged[2]) == "fd00::/8");
  // The top of the address space does not overflow.
  auto top = fw::merge_ranges({fw::parse_cidr("255.255.255.0/24"), fw::parse_cidr("255.255.255.255")});
  REQUIRE(top.size() == 1);
  CHECK(fw::format_range(top[0]) == "255.255.255.0/24");
}

TEST_CASE("subtracting ranges leaves no overlap", "[firewall][cidr]") {
  auto rest = fw::subtract_ranges({fw::parse_cidr("10.0.0.0/7")}, {fw::parse_cidr("10.0.0.0/8")});
  REQUIRE(rest.size() == 1);
  CHECK(fw::format_range(rest[0]) == "11.0.0.0/8");
  rest = fw::subtract_ranges({fw::parse_cidr("10.0.0.0/8")}, {fw::parse_cidr("10.128.0.0/9")});
  REQUIRE(rest.size() == 1);
  CHECK(fw::format_range(rest[0]) == "10.0.0.0/9");
  CHECK(fw::subtract_ranges({fw::parse_cidr("10.1.0.0/16")}, {fw::parse_cidr("10.0.0.0/8")}).empty());
}

TEST_CASE("the sidecar ruleset renders exactly as the golden file", "[firewall][golden]") {
  const std::string got = fw::render_nft(fw::build_ruleset(sidecar_spec()));
  if (std::getenv("PORTCULLIS_UPDATE_GOLDEN")) std::ofstream("tests/unit/firewall/golden/sidecar.nft") << got;
  const std::string want = read_file("tests/unit/firewall/golden/sidecar.nft");
  REQUIRE(!want.empty());
  CHECK(got == want);
  CHECK(fw::render_nft(fw::build_ruleset(sidecar_spec())) == got);  // deterministic
}

TEST_CASE("ingress is judged before every DNAT and each base chain has its own priority", "[firewall]") {
  const auto rs = fw::build_ruleset(sidecar_spec());
  std::vector<std::pair<int, int>> seen;  // (hook, priority)
  int ingress_prio = 0, redirect_prio = 0;
  for (const auto& c : rs.chains) {
    if (!c.base) continue;
    std::pair<int, int> key{static_cast<int>(c.base->hook), c.base->priority};
    CHECK(std::find(seen.begin(), seen.end(), key) == seen.end());
    seen.push_back(key);
    CHECK(c.base->priority != -100);  // dstnat: kube-proxy's and Docker's nat chains
    CHECK(c.base->priority != -110);  // dstnat-10: kube-proxy's filter-prerouting
    CHECK(c.base->priority != -10);   // filter-10: kube-proxy's filter chains
    CHECK(c.base->priority != 0);     // filter: Docker / iptables-nft
    if (c.name == "prerouting_ingress") ingress_prio = c.base->priority;
    if (c.name == "prerouting_intercept") redirect_prio = c.base->priority;
  }
  CHECK(ingress_prio < redirect_prio);
  CHECK(redirect_prio < -100);
}

TEST_CASE("listener ports that ingress does not allow are reported", "[firewall]") {
  auto s = sidecar_spec();
  s.ingress_allow = {{{"10.0.0.0/8"}, {8080}, "tcp"}, {{"10.0.0.0/8"}, {15000}, "udp"}};
  // 15006 is reached through the redirect of 8080/9090 (allowed); 15001 and 15000 are not allowed.
  CHECK(fw::unreachable_listener_ports(s) == std::vector<std::uint16_t>{15001, 15000});
  s.ingress_allow.push_back({{"10.0.0.0/8"}, {}, "tcp"});
  CHECK(fw::unreachable_listener_ports(s).empty());
  s.ingress_default_drop = false;
  s.ingress_allow.clear();
  CHECK(fw::unreachable_listener_ports(s).empty());
}

TEST_CASE("specs the firewall cannot express are refused with the value named", "[firewall]") {
  auto s = sidecar_spec();
  s.ingress_allow.push_back({{"10.0.0.0/8"}, {80}, "sctp"});
  CHECK_THROWS_WITH(fw::build_ruleset(s), Catch::Contains("sctp"));
  s = sidecar_spec();
  s.proxy_uid.reset();
  s.proxy_gid.reset();
  CHECK_THROWS_WITH(fw::build_ruleset(s), Catch::Contains("proxy_uid"));
  s = sidecar_spec();
  s.table = "bad table";
  CHECK_THROWS_AS(fw::build_ruleset(s), fw::SpecError);
}

TEST_CASE("nft accepts the rendered ruleset (nft -c in a private network namespace)", "[firewall][nft]") {
  const std::string path = "/tmp/portcullis-firewall-unit-" + std::to_string(getpid()) + ".nft";
  for (const auto& spec : {sidecar_spec(), fw::Spec{}}) {
    {
      std::ofstream out(path);
      out << fw::render_nft(fw::build_ruleset(spec));
    }
    int status = 0;
    const std::string out = run("unshare -n nft -c -f " + path, status);
    INFO(out);
    CHECK(status == 0);
  }
  std::remove(path.c_str());
}

TEST_CASE("an update that changes only set elements is sent as an element diff", "[firewall]") {
  auto a = sidecar_spec();
  auto b = a;
  b.ingress_allow.push_back({{"172.16.0.0/12", "2001:db8::/32"}, {}, "tcp"});
  CHECK(fw::same_structure(fw::build_ruleset(a), fw::build_ruleset(b)));
  auto c = a;
  c.ingress_allow.push_back({{"172.16.0.0/12"}, {}, "udp"});  // a new set and a new rule
  CHECK_FALSE(fw::same_structure(fw::build_ruleset(a), fw::build_ruleset(c)));
  auto d = a;
  d.intercept_inbound->to = 15007;  // a rule changes
  CHECK_FALSE(fw::same_structure(fw::build_ruleset(a), fw::build_ruleset(d)));
}

TEST_CASE("elements print as nft prints them", "[firewall]") {
  fw::Spec s;
  s.has_egress = true;
  s.egress_allow = {{{"2001:db8::/32", "2001:db9::/32", "10.0.0.0/31", "10.0.0.2"}, {443}, "tcp"}};
  const auto rs = fw::build_ruleset(s);
  std::vector<std::string> got;
  for (const auto& set : rs.sets)
    for (const auto& e : set.elements) got.push_back(fw::render_element(set, e));
  CHECK(std::find(got.begin(), got.end(), "10.0.0.0-10.0.0.2 . tcp . 443") != got.end());
  CHECK(std::find(got.begin(), got.end(), "2001:db8::/31 . tcp . 443") != got.end());
  CHECK(std::find(got.begin(), got.end(), "nd-neighbor-solicit") != got.end());
}

TEST_CASE("interface names the kernel or nft text could not hold are refused", "[firewall]") {
  for (std::string bad : {std::string("eth\0x", 5), std::string("a\"b"), std::string("a b"), std::string("a/b"),
                          std::string("a:b"), std::string("\x84" "cTL"), std::string(".."), std::string(""),
                          std::string("sixteen-chars-xx")}) {
    auto s = sidecar_spec();
    s.forward_interfaces = {bad};
    CHECK_THROWS_AS(fw::build_ruleset(s), fw::SpecError);
  }
  auto s = sidecar_spec();
  s.forward_interfaces = {"docker0", "br-1a2b3c4d5e6f", "veth_x.10"};
  CHECK_NOTHROW(fw::build_ruleset(s));
}
