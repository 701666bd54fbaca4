// build_ruleset(): the `firewall:` section -> chains and sets (see ruleset.hpp for priorities).
#include "firewall/ruleset.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <initializer_list>
#include <iterator>
#include <map>
#include <set>

namespace portcullis::firewall {
namespace {

using u128 = unsigned __int128;

u128 max_of(Family f) { return f == Family::ipv4 ? u128{0xffffffffu} : ~u128{0}; }
int bits_of(Family f) { return f == Family::ipv4 ? 32 : 128; }

std::string addr_text(Family f, u128 v) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (f == Family::ipv4) {
    in_addr a{};
    a.s_addr = htonl(static_cast<std::uint32_t>(v));
    inet_ntop(AF_INET, &a, buf, sizeof buf);
  } else {
    in6_addr a{};
    for (int i = 15; i >= 0; --i, v >>= 8) a.s6_addr[i] = static_cast<std::uint8_t>(v);
    inet_ntop(AF_INET6, &a, buf, sizeof buf);
  }
  return buf;
}

Range addr_field(const AddrRange& r) {
  Range out;
  out.len = r.family == Family::ipv4 ? 4 : 16;
  u128 a = r.first, b = r.last;
  for (int i = out.len - 1; i >= 0; --i, a >>= 8, b >>= 8) {
    out.first[i] = static_cast<std::uint8_t>(a);
    out.last[i] = static_cast<std::uint8_t>(b);
  }
  return out;
}

Range u16_field(std::uint16_t first, std::uint16_t last) {
  Range out;
  out.len = 2;
  out.first[0] = first >> 8, out.first[1] = first & 0xff;
  out.last[0] = last >> 8, out.last[1] = last & 0xff;
  return out;
}

Range u8_field(std::uint8_t v) {
  Range out;
  out.len = 1;
  out.first[0] = out.last[0] = v;
  return out;
}

std::uint8_t proto_number(const std::string& name) {
  if (name == "tcp") return 6;
  if (name == "udp") return 17;
  throw SpecError("firewall: protocol must be tcp or udp, not '" + name + "'");
}

Rule rule(std::vector<Match> m, Verdict v, bool counter = false) {
  return Rule{std::move(m), 0, counter, std::move(v)};
}
Verdict accept() { return {Verdict::Kind::accept, {}, 0}; }
Verdict drop() { return {Verdict::Kind::drop, {}, 0}; }
Verdict ret() { return {Verdict::Kind::ret, {}, 0}; }
Verdict next() { return {Verdict::Kind::next, {}, 0}; }
Verdict jump(std::string chain) { return {Verdict::Kind::jump, std::move(chain), 0}; }
Verdict redirect(std::uint16_t port) { return {Verdict::Kind::redirect, {}, port}; }

const char* fam_suffix(Family f) { return f == Family::ipv4 ? "v4" : "v6"; }

// One direction's allowlist (ingress judges the source, egress the destination): per family, an
// interval set of CIDRs for each protocol allowed on every port, and one
// `addr . inet_proto . inet_service` interval set for CIDRs allowed on listed ports only.
struct AllowSets {
  std::vector<Set> sets;
  std::vector<Rule> rules;  // the allow rules, in set order
};

AllowSets allow_sets(const std::string& dir, const std::vector<AllowEntry>& entries, bool by_source) {
  AllowSets out;
  for (Family fam : {Family::ipv4, Family::ipv6}) {
    std::map<std::uint8_t, std::vector<AddrRange>> any_port;                             // proto -> cidrs
    std::map<std::pair<std::uint8_t, std::uint16_t>, std::vector<AddrRange>> per_port;  // (proto, port)
    for (const auto& e : entries) {
      std::uint8_t proto = proto_number(e.protocol);
      for (const auto& c : e.cidrs) {
        AddrRange r = parse_cidr(c);
        if (r.family != fam) continue;
        if (e.ports.empty()) {
          any_port[proto].push_back(r);
        } else {
          for (auto p : e.ports) {
            if (p == 0) throw SpecError("firewall: " + dir + " port 0 is not a port");
            per_port[{proto, p}].push_back(r);
          }
        }
      }
    }
    for (auto& [proto, ranges] : any_port) ranges = merge_ranges(std::move(ranges));

    const KeyType addr_key = fam == Family::ipv4 ? KeyType::ipv4_addr : KeyType::ipv6_addr;
    const Field addr = fam == Family::ipv4 ? (by_source ? Field::ip_saddr : Field::ip_daddr)
                                           : (by_source ? Field::ip6_saddr : Field::ip6_daddr);
    // Listed ports first: the concatenation set, with what the any-port sets cover taken out so
    // no two elements overlap.
    Set ports{dir + "_" + fam_suffix(fam) + "_ports",
              {addr_key, KeyType::inet_proto, KeyType::inet_service}, true, {}};
    for (auto& [key, ranges] : per_port) {
      auto it = any_port.find(key.first);
      auto rest = merge_ranges(std::move(ranges));
      if (it != any_port.end()) rest = subtract_ranges(rest, it->second);
      for (const auto& r : rest)
        ports.elements.push_back({{addr_field(r), u8_field(key.first), u16_field(key.second, key.second)}});
    }
    std::sort(ports.elements.begin(), ports.elements.end());
    const Match nfproto = MatchNfproto{fam};
    if (!ports.elements.empty()) {
      out.rules.push_back(rule({nfproto, MatchLookup{{addr, Field::l4proto, Field::th_dport}, ports.name}},
                               accept(), true));
      out.sets.push_back(std::move(ports));
    }
    for (auto& [proto, ranges] : any_port) {
      Set s{dir + "_" + fam_suffix(fam) + (proto == 6 ? "_tcp" : "_udp"), {addr_key}, true, {}};
      for (const auto& r : ranges) s.elements.push_back({{addr_field(r)}});
      out.rules.push_back(rule({nfproto, MatchL4proto{proto}, MatchLookup{{addr}, s.name}}, accept(), true));
      out.sets.push_back(std::move(s));
    }
  }
  return out;
}

Set icmpv6_type_set(std::string name, std::initializer_list<std::uint8_t> types) {
  Set s{std::move(name), {KeyType::icmpv6_type}, false, {}};
  for (std::uint8_t t : types) s.elements.push_back({{u8_field(t)}});
  return s;
}

Set port_set(const std::string& name, const std::vector<std::uint16_t>& ports) {
  Set s{name, {KeyType::inet_service}, false, {}};
  std::set<std::uint16_t> uniq(ports.begin(), ports.end());
  for (auto p : uniq) {
    if (p == 0) throw SpecError("firewall: " + name + ": port 0 is not a port");
    s.elements.push_back({{u16_field(p, p)}});
  }
  return s;
}

}  // namespace

AddrRange parse_cidr(const std::string& text) {
  auto slash = text.find('/');
  std::string addr = text.substr(0, slash);
  AddrRange r;
  int bits;
  u128 v = 0;
  in_addr a4{};
  in6_addr a6{};
  if (inet_pton(AF_INET, addr.c_str(), &a4) == 1) {
    r.family = Family::ipv4;
    v = ntohl(a4.s_addr);
  } else if (inet_pton(AF_INET6, addr.c_str(), &a6) == 1) {
    r.family = Family::ipv6;
    for (auto byte : a6.s6_addr) v = (v << 8) | byte;
  } else {
    throw SpecError("firewall: '" + text + "' is not an IPv4 or IPv6 address or CIDR");
  }
  bits = bits_of(r.family);
  int len = bits;
  if (slash != std::string::npos) {
    const std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), ::isdigit) || std::stoi(p) > bits)
      throw SpecError("firewall: '" + text + "' has an invalid prefix length");
    len = std::stoi(p);
  }
  const u128 host = len == 0 ? max_of(r.family) : ((u128{1} << (bits - len)) - 1);
  r.first = v & ~host & max_of(r.family);
  r.last = r.first | host;
  return r;
}

std::vector<AddrRange> merge_ranges(std::vector<AddrRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const AddrRange& a, const AddrRange& b) {
    return a.family != b.family ? a.family < b.family : a.first < b.first;
  });
  std::vector<AddrRange> out;
  for (const auto& r : ranges) {
    if (!out.empty() && out.back().family == r.family &&
        (out.back().last == max_of(r.family) || r.first <= out.back().last + 1)) {
      out.back().last = std::max(out.back().last, r.last);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

std::vector<AddrRange> subtract_ranges(const std::vector<AddrRange>& a, const std::vector<AddrRange>& b) {
  std::vector<AddrRange> out;
  for (auto r : a) {
    bool gone = false;
    for (const auto& cut : b) {
      if (cut.family != r.family || cut.last < r.first || cut.first > r.last) continue;
      if (cut.first > r.first) out.push_back({r.family, r.first, cut.first - 1});
      if (cut.last >= r.last) {
        gone = true;
        break;
      }
      r.first = cut.last + 1;
    }
    if (!gone) out.push_back(r);
  }
  return out;
}

std::string format_range(const AddrRange& r) {
  const u128 size_minus_one = r.last - r.first;
  // A prefix: size is a power of two and first is aligned to it.
  if ((size_minus_one & (size_minus_one + 1)) == 0 && (r.first & size_minus_one) == 0) {
    int host_bits = 0;
    for (u128 s = size_minus_one; s != 0; s >>= 1) ++host_bits;
    return addr_text(r.family, r.first) + "/" + std::to_string(bits_of(r.family) - host_bits);
  }
  return addr_text(r.family, r.first) + "-" + addr_text(r.family, r.last);
}

std::string table_name_problem(std::string_view name) {
  // The words nft 1.0.6 (Debian 12) reads as keywords where a table's name goes. Found by running
  // `nft list table inet WORD` for each token name in libnftables.so.1 and keeping the words that
  // gave "syntax error, unexpected WORD" (firewall/README.md). Sorted, for binary_search.
  static constexpr std::string_view keywords[] = {
    "accept", "add", "ah", "all", "arp", "auto-merge", "bridge", "cgroup", "chain", "chains",
    "comment", "comp", "constant", "continue", "counter", "counters", "cpu", "create", "ct", "day",
    "dccp", "define", "delete", "describe", "device", "devices", "dnat", "drop", "dst", "dup",
    "dynamic", "ecn", "element", "elements", "esp", "ether", "exists", "expires", "export",
    "exthdr", "fib", "flags", "flow", "flowtable", "flowtables", "flush", "frag", "fwd",
    "gc-interval", "get", "goto", "handle", "hbh", "hook", "hooks", "hour", "ibriport", "ibrname",
    "icmp", "icmpv6", "igmp", "iif", "iifgroup", "iifname", "iiftype", "import", "include",
    "index", "inet", "insert", "interval", "ip", "ip6", "ipsec", "jhash", "jump", "limit",
    "limits", "list", "log", "map", "maps", "mark", "masquerade", "meta", "meter", "meters", "mh",
    "missing", "monitor", "netdev", "nftrace", "notrack", "numgen", "obriport", "obrname",
    "offload", "oif", "oifgroup", "oifname", "oiftype", "osf", "pkttype", "policy", "position",
    "priority", "queue", "quota", "quotas", "random", "redefine", "redirect", "reject", "rename",
    "replace", "reset", "return", "rt", "rt0", "rt2", "rtclassid", "rule", "ruleset", "sctp",
    "secmark", "secmarks", "set", "sets", "size", "skgid", "skuid", "snat", "socket", "srh",
    "symhash", "synproxy", "synproxys", "table", "tables", "tcp", "th", "time", "timeout",
    "tproxy", "type", "typeof", "udp", "udplite", "undefine", "update", "vlan", "vmap", "xt"};
  static_assert(std::is_sorted(std::begin(keywords), std::end(keywords)));
  const std::string shown = "'" + std::string(name) + "'";
  if (name.empty() || name.size() > 255) return "must be 1 to 255 characters long";
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_') ||
      !std::all_of(name.begin(), name.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }))
    return shown + " must start with a letter or '_' and be letters, digits, '_' or '-'";
  if (std::binary_search(std::begin(keywords), std::end(keywords), name))
    return shown + " is a keyword of nft's language: nft could neither load nor list a table of that name; choose another";
  return {};
}

Ruleset build_ruleset(const Spec& spec) {
  Ruleset rs;
  rs.table = spec.table;
  if (auto why = table_name_problem(rs.table); !why.empty()) throw SpecError("firewall: table name " + why);

  const bool any_filter = spec.has_ingress || spec.has_egress;
  if (any_filter) {
    // Neighbour discovery must pass both ways or IPv6 stops working (router/neighbour sol/adv).
    rs.sets.push_back(icmpv6_type_set("icmpv6_nd", {133, 134, 135, 136}));
    // So must multicast listener discovery (queries 130, reports 131/143, done 132), to multicast
    // addresses only: without it a snooping switch stops sending us the solicited-node multicast
    // that neighbour discovery uses; to a unicast address it would be a way around the allowlists.
    rs.sets.push_back(icmpv6_type_set("icmpv6_mld", {130, 131, 132, 143}));
  }
  // ICMPv6 exists in IPv6 only, IGMP in IPv4 only: each rule names its family, or an IPv4 packet
  // of protocol 58 whose first byte is 135 would pass as neighbour discovery (a channel around
  // the allowlists for anything with a raw socket). Neighbour discovery is sent with hop limit
  // 255 and a receiver drops it with any other (RFC 4861, 7.1.1): so no router has forwarded it,
  // and ND-typed packets from off the link are judged like any other packet.
  const std::vector<Match> nd{MatchNfproto{Family::ipv6}, MatchL4proto{58},
                              MatchLookup{{Field::icmpv6_type}, "icmpv6_nd"}, MatchIp6Hoplimit{255}};
  // Multicast membership reports and queries (IGMP, and MLD for IPv6), to multicast addresses.
  const std::vector<Match> igmp{MatchNfproto{Family::ipv4}, MatchL4proto{2},
                                MatchFibDaddrType{AddrType::multicast, false}};
  const std::vector<Match> mld{MatchNfproto{Family::ipv6}, MatchL4proto{58},
                               MatchLookup{{Field::icmpv6_type}, "icmpv6_mld"},
                               MatchFibDaddrType{AddrType::multicast, false}};
  const Match established = MatchCtState{};
  // What each of our filter chains passes before its allowlist: loopback, packets of known
  // connections, neighbour discovery, and multicast membership to multicast addresses.
  auto pass_housekeeping = [&](Chain& c, bool output) {
    c.rules.push_back(rule({MatchIfname{output, "lo"}}, accept()));
    c.rules.push_back(rule({established}, accept()));
    c.rules.push_back(rule(nd, accept()));
    c.rules.push_back(rule(igmp, accept()));
    c.rules.push_back(rule(mld, accept()));
  };

  if (spec.has_ingress) {
    AllowSets a = allow_sets("ingress", spec.ingress_allow, true);
    for (auto& s : a.sets) rs.sets.push_back(std::move(s));
    Chain allow{"ingress_allow", std::nullopt,
                "the ingress allowlist, judged on the original destination (shared by prerouting and forward)",
                std::move(a.rules)};
    if (spec.ingress_default_drop) allow.rules.push_back(rule({}, drop(), true));
    rs.chains.push_back(std::move(allow));

    Chain pre{"prerouting_ingress", BaseChain{ChainType::filter, Hook::prerouting, kPrioIngress, false},
              "dstnat-20: before kube-proxy (dstnat-10, dstnat) and Docker (dstnat) and our redirect (dstnat-5)",
              {}};
    pass_housekeeping(pre, false);
    // Only traffic addressed to this host (or to a port it publishes) is ingress; routed traffic
    // is the forward chain's business. "This host" includes the broadcast and multicast
    // addresses it receives and its anycast addresses: a UDP socket bound to the wildcard
    // address gets those too. Each connection is marked as judged (kJudgedMark) by a rule of its
    // own before the jump: a packet without conntrack (notrack, invalid) cannot take a mark, and
    // a rule that reads one ends there, so it must not be the rule that jumps.
    for (AddrType t : {AddrType::local, AddrType::broadcast, AddrType::multicast, AddrType::anycast}) {
      Rule mark = rule({MatchFibDaddrType{t, false}}, next());
      mark.add_ct_mark = kJudgedMark;
      pre.rules.push_back(std::move(mark));
      pre.rules.push_back(rule({MatchFibDaddrType{t, false}}, jump("ingress_allow")));
    }
    rs.chains.push_back(std::move(pre));

    // A connection that reaches a local socket without prerouting having judged it (DNATed from
    // an address that is not ours, such as a kube-proxy Service IP; TPROXY; a local route kept
    // in another routing table) is judged here, on the address and port it reaches.
    Chain in{"input_ingress", BaseChain{ChainType::filter, Hook::input, kPrioInput, false},
             "filter-20: connections to this host that prerouting_ingress did not judge", {}};
    pass_housekeeping(in, false);
    in.rules.push_back(rule({MatchCtMark{kJudgedMark, false}}, jump("ingress_allow")));
    rs.chains.push_back(std::move(in));

    if (!spec.forward_interfaces.empty()) {
      Chain fwd{"forward_ingress", BaseChain{ChainType::filter, Hook::forward, kPrioForward, false},
                "filter-20: before kube-proxy (filter-10) and Docker/iptables-nft (filter)", {}};
      fwd.rules.push_back(rule({established}, accept()));
      // DNATed connections (published ports) were judged on their original destination in
      // prerouting, if that was one of ours (marked); others (a Service IP) are judged below.
      fwd.rules.push_back(rule({MatchCtStatusDnat{}, MatchCtMark{kJudgedMark, true}}, accept()));
      std::set<std::string> seen;
      for (const auto& ifn : spec.forward_interfaces) {
        // The kernel's rules (dev_valid_name: 1-15 bytes, not "." or "..", no '/', ':' or
        // whitespace), and printable ASCII without '"' or '\\' so the rendered nft text holds it
        // as it is (a NUL or a quote would end the string early: fuzz finding).
        bool valid = !ifn.empty() && ifn.size() <= 15 && ifn != "." && ifn != "..";
        for (unsigned char c : ifn)
          if (c <= ' ' || c >= 0x7f || c == '/' || c == ':' || c == '"' || c == '\\') valid = false;
        if (!valid) throw SpecError("firewall: interface name '" + ifn + "' is invalid (1-15 printable characters, no space, '/', ':', '\"' or '\\')");
        if (seen.insert(ifn).second) fwd.rules.push_back(rule({MatchIfname{true, ifn}}, jump("ingress_allow")));
      }
      rs.chains.push_back(std::move(fwd));
    }
  }

  if (spec.has_egress) {
    AllowSets a = allow_sets("egress", spec.egress_allow, false);
    for (auto& s : a.sets) rs.sets.push_back(std::move(s));
    Chain allow{"egress_allow", std::nullopt, "the egress allowlist, judged before any redirect",
                std::move(a.rules)};
    if (spec.egress_default_drop) allow.rules.push_back(rule({}, drop(), true));
    rs.chains.push_back(std::move(allow));
    Chain out{"output_egress", BaseChain{ChainType::filter, Hook::output, kPrioEgress, false},
              "dstnat-20: the app's original destination, before our outbound redirect (dstnat-5)", {}};
    pass_housekeeping(out, true);
    out.rules.push_back(rule({}, jump("egress_allow")));
    rs.chains.push_back(std::move(out));
  }

  if (spec.intercept_inbound) {
    const auto& in = *spec.intercept_inbound;
    if (in.to == 0) throw SpecError("firewall: intercept.inbound.to must be a port");
    if (in.ports.empty()) throw SpecError("firewall: intercept.inbound.ports is empty");
    rs.sets.push_back(port_set("intercept_inbound_ports", in.ports));
    Chain c{"prerouting_intercept", BaseChain{ChainType::nat, Hook::prerouting, kPrioIntercept, false},
            "dstnat-5: after our ingress filter, before kube-proxy's and Docker's DNAT (dstnat)", {}};
    c.rules.push_back(rule({MatchL4proto{6}, MatchLookup{{Field::tcp_dport}, "intercept_inbound_ports"}},
                           redirect(in.to), true));
    rs.chains.push_back(std::move(c));
  }
  if (spec.intercept_outbound) {
    const auto& ob = *spec.intercept_outbound;
    if (ob.to == 0) throw SpecError("firewall: intercept.outbound.to must be a port");
    if (!spec.proxy_uid && !spec.proxy_gid)
      throw SpecError("firewall: intercept.outbound needs proxy_uid or proxy_gid, or the proxy's own "
                      "connections would be redirected back to itself");
    Chain c{"output_intercept", BaseChain{ChainType::nat, Hook::output, kPrioIntercept, false},
            "dstnat-5: after our egress filter, before kube-proxy's nat-output (dstnat)", {}};
    // Loopback (the app talking to itself or to the proxy) is never intercepted.
    c.rules.push_back(rule({MatchIfname{true, "lo"}}, ret()));
    if (spec.proxy_uid) c.rules.push_back(rule({MatchSkid{false, *spec.proxy_uid}}, ret()));
    if (spec.proxy_gid) c.rules.push_back(rule({MatchSkid{true, *spec.proxy_gid}}, ret()));
    if (!ob.exclude_ports.empty()) {
      rs.sets.push_back(port_set("intercept_outbound_exclude", ob.exclude_ports));
      c.rules.push_back(rule({MatchL4proto{6}, MatchLookup{{Field::tcp_dport}, "intercept_outbound_exclude"}}, ret()));
    }
    c.rules.push_back(rule({MatchL4proto{6}}, redirect(ob.to), true));
    rs.chains.push_back(std::move(c));
  }
  return rs;
}

std::vector<std::uint16_t> unreachable_listener_ports(const Spec& spec) {
  std::vector<std::uint16_t> out;
  if (!spec.has_ingress || !spec.ingress_default_drop) return out;
  auto allowed = [&](std::uint16_t port) {
    for (const auto& e : spec.ingress_allow) {
      if (e.protocol != "tcp" || e.cidrs.empty()) continue;
      if (e.ports.empty() || std::find(e.ports.begin(), e.ports.end(), port) != e.ports.end()) return true;
    }
    return false;
  };
  for (auto port : spec.listener_ports) {
    bool ok = allowed(port);
    // The inbound listener is reached through the redirect: judged on the intercepted port.
    if (!ok && spec.intercept_inbound && spec.intercept_inbound->to == port)
      for (auto p : spec.intercept_inbound->ports) ok = ok || allowed(p);
    if (!ok) out.push_back(port);
  }
  return out;
}

}  // namespace portcullis::firewall
