// The nft renderer on random firewall Specs: build_ruleset() either throws SpecError or returns a
// Ruleset that renders, deterministically, to text with one `table inet <name>` block.
// With PORTCULLIS_NFT_OUT_DIR=DIR set, each rendered text (up to 100) is written to DIR/N.nft:
// check_nft.sh runs the target once over its corpus that way and has `nft -c -f` accept every
// sample (outside the fuzz loop).
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "firewall/ruleset.hpp"
#include "firewall/spec.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace portcullis;

namespace {
std::string cidr(FuzzedDataProvider& p) {
  switch (p.ConsumeIntegralInRange<int>(0, 4)) {
    case 0: {
      std::string s;
      for (int i = 0; i < 4; ++i) s += (i ? "." : "") + std::to_string(p.ConsumeIntegral<std::uint8_t>());
      return s + "/" + std::to_string(p.ConsumeIntegralInRange<int>(0, 32));
    }
    case 1: {
      std::string s;
      for (int i = 0; i < 8; ++i) {
        char b[8];
        std::snprintf(b, sizeof b, "%x", p.ConsumeIntegral<std::uint16_t>());
        s += (i ? ":" : "") + std::string(b);
      }
      return s + "/" + std::to_string(p.ConsumeIntegralInRange<int>(0, 128));
    }
    case 2: return p.ConsumeBool() ? "127.0.0.1" : "::1";
    case 3: return p.ConsumeBool() ? "0.0.0.0/0" : "::/0";
    default: return p.ConsumeRandomLengthString(20);  // build_ruleset must refuse garbage
  }
}

std::vector<std::uint16_t> ports(FuzzedDataProvider& p) {
  std::vector<std::uint16_t> out(p.ConsumeIntegralInRange<int>(0, 4));
  for (auto& v : out) v = p.ConsumeBool() ? p.ConsumeIntegralInRange<std::uint16_t>(1, 100) : p.ConsumeIntegral<std::uint16_t>();
  return out;
}

std::vector<firewall::AllowEntry> allow(FuzzedDataProvider& p) {
  std::vector<firewall::AllowEntry> out(p.ConsumeIntegralInRange<int>(0, 4));
  for (auto& e : out) {
    e.cidrs.resize(p.ConsumeIntegralInRange<int>(0, 4));
    for (auto& c : e.cidrs) c = cidr(p);
    e.ports = ports(p);
    e.protocol = p.ConsumeIntegralInRange<int>(0, 7) == 0 ? p.ConsumeRandomLengthString(5) : (p.ConsumeBool() ? "tcp" : "udp");
  }
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider p(data, size);
  firewall::Spec s;
  // Random names after a fixed prefix: bad characters must be refused, but a random name that
  // happens to be an nft keyword ("ip", "drop") is a known gap: nft -f cannot parse it either.
  if (p.ConsumeIntegralInRange<int>(0, 7) == 0) s.table = "pc" + p.ConsumeRandomLengthString(12);
  if (p.ConsumeBool()) s.proxy_uid = p.ConsumeIntegral<std::uint32_t>();
  if (p.ConsumeBool()) s.proxy_gid = p.ConsumeIntegral<std::uint32_t>();
  if (p.ConsumeBool()) s.intercept_inbound = firewall::Spec::Inbound{ports(p), p.ConsumeIntegral<std::uint16_t>()};
  if (p.ConsumeBool()) s.intercept_outbound = firewall::Spec::Outbound{p.ConsumeIntegral<std::uint16_t>(), ports(p)};
  s.has_ingress = p.ConsumeBool();
  s.ingress_default_drop = p.ConsumeBool();
  if (s.has_ingress) s.ingress_allow = allow(p);
  s.has_egress = p.ConsumeBool();
  s.egress_default_drop = p.ConsumeBool();
  if (s.has_egress) s.egress_allow = allow(p);
  s.listener_ports = ports(p);
  int ifs = p.ConsumeIntegralInRange<int>(0, 2);
  for (int i = 0; i < ifs; ++i) s.forward_interfaces.push_back(p.ConsumeBool() ? "br-*" : p.ConsumeRandomLengthString(16));

  firewall::Ruleset rs;
  try {
    rs = firewall::build_ruleset(s);
  } catch (const firewall::SpecError&) {
    return 0;
  }
  std::string text = firewall::render_nft(rs);
  FUZZ_CHECK(text == firewall::render_nft(rs));
  FUZZ_CHECK(text.find("table inet " + rs.table) != std::string::npos);
  static int written = 0;
  if (const char* dir = std::getenv("PORTCULLIS_NFT_OUT_DIR"); dir && written < 100)
    std::ofstream(std::string(dir) + "/" + std::to_string(written++) + ".nft", std::ios::binary) << text;
  return 0;
}
