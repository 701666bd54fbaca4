// render_nft(): a Ruleset as text that `nft -f` accepts. Deterministic: same Ruleset, same bytes.
#include <arpa/inet.h>

#include <cstdio>
#include <sstream>

#include "firewall/ruleset.hpp"

namespace portcullis::firewall {
namespace {

template <class... F>
struct overloaded : F... {
  using F::operator()...;
};
// Clang 14 (the fuzz build) lacks C++20 aggregate CTAD: the guide GCC does not need.
template <class... F>
overloaded(F...) -> overloaded<F...>;

const char* key_name(KeyType k) {
  switch (k) {
    case KeyType::ipv4_addr: return "ipv4_addr";
    case KeyType::ipv6_addr: return "ipv6_addr";
    case KeyType::inet_proto: return "inet_proto";
    case KeyType::inet_service: return "inet_service";
    case KeyType::icmpv6_type: return "icmpv6_type";
  }
  return "?";
}

const char* field_name(Field f) {
  switch (f) {
    case Field::ip_saddr: return "ip saddr";
    case Field::ip_daddr: return "ip daddr";
    case Field::ip6_saddr: return "ip6 saddr";
    case Field::ip6_daddr: return "ip6 daddr";
    case Field::l4proto: return "meta l4proto";
    case Field::th_dport: return "th dport";
    case Field::tcp_dport: return "tcp dport";
    case Field::icmpv6_type: return "icmpv6 type";
  }
  return "?";
}

std::string hex32(std::uint32_t v) {
  char buf[11];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

std::string proto_name(unsigned p) {
  switch (p) {
    case 2: return "igmp";
    case 6: return "tcp";
    case 17: return "udp";
    case 58: return "ipv6-icmp";
    default: return std::to_string(p);
  }
}

std::string icmpv6_name(unsigned t) {
  switch (t) {
    case 130: return "mld-listener-query";
    case 131: return "mld-listener-report";
    case 132: return "mld-listener-done";
    case 143: return "mld2-listener-report";
    case 133: return "nd-router-solicit";
    case 134: return "nd-router-advert";
    case 135: return "nd-neighbor-solicit";
    case 136: return "nd-neighbor-advert";
    default: return std::to_string(t);
  }
}

unsigned u16(const std::array<std::uint8_t, 16>& b) { return (b[0] << 8) | b[1]; }

std::string field_text(KeyType k, const Range& r) {
  switch (k) {
    case KeyType::ipv4_addr:
    case KeyType::ipv6_addr: {
      AddrRange a;
      a.family = k == KeyType::ipv4_addr ? Family::ipv4 : Family::ipv6;
      for (int i = 0; i < r.len; ++i) {
        a.first = (a.first << 8) | r.first[i];
        a.last = (a.last << 8) | r.last[i];
      }
      return a.first == a.last ? format_range(a).substr(0, format_range(a).find('/')) : format_range(a);
    }
    case KeyType::inet_proto: return proto_name(r.first[0]);
    case KeyType::icmpv6_type: return icmpv6_name(r.first[0]);
    case KeyType::inet_service:
      return u16(r.first) == u16(r.last) ? std::to_string(u16(r.first))
                                         : std::to_string(u16(r.first)) + "-" + std::to_string(u16(r.last));
  }
  return "?";
}

std::string match_text(const Match& m) {
  return std::visit(
      overloaded{
          [](const MatchNfproto& x) { return std::string("meta nfproto ") + (x.family == Family::ipv4 ? "ipv4" : "ipv6"); },
          [](const MatchL4proto& x) { return "meta l4proto " + proto_name(x.proto); },
          [](const MatchIfname& x) { return std::string(x.output ? "oifname" : "iifname") + " \"" + x.name + "\""; },
          [](const MatchCtState&) { return std::string("ct state established,related"); },
          [](const MatchCtStatusDnat&) { return std::string("ct status dnat"); },
          [](const MatchCtMark& x) { return "ct mark & " + hex32(x.bits) + (x.set ? " != " : " == ") + hex32(0); },
          [](const MatchFibDaddrType& x) {
            const char* type = x.type == AddrType::local       ? "local"
                               : x.type == AddrType::broadcast ? "broadcast"
                               : x.type == AddrType::anycast   ? "anycast"
                                                               : "multicast";
            return std::string("fib daddr type ") + (x.negate ? "!= " : "") + type;
          },
          [](const MatchSkid& x) { return std::string(x.gid ? "meta skgid " : "meta skuid ") + std::to_string(x.id); },
          [](const MatchIp6Hoplimit& x) { return "ip6 hoplimit " + std::to_string(x.value); },
          [](const MatchLookup& x) {
            std::string s;
            for (std::size_t i = 0; i < x.fields.size(); ++i) s += (i ? " . " : "") + std::string(field_name(x.fields[i]));
            return s + " @" + x.set;
          },
      },
      m);
}

std::string verdict_text(const Verdict& v) {
  switch (v.kind) {
    case Verdict::Kind::accept: return "accept";
    case Verdict::Kind::drop: return "drop";
    case Verdict::Kind::ret: return "return";
    case Verdict::Kind::jump: return "jump " + v.chain;
    case Verdict::Kind::redirect: return "redirect to :" + std::to_string(v.port);
    case Verdict::Kind::next: return "";
  }
  return "?";
}

const char* hook_name(Hook h) {
  switch (h) {
    case Hook::prerouting: return "prerouting";
    case Hook::input: return "input";
    case Hook::forward: return "forward";
    case Hook::output: return "output";
    case Hook::postrouting: return "postrouting";
  }
  return "?";
}

}  // namespace

std::string render_element(const Set& set, const Element& e) {
  std::string s;
  for (std::size_t i = 0; i < e.fields.size() && i < set.key.size(); ++i)
    s += (i ? " . " : "") + field_text(set.key[i], e.fields[i]);
  return s;
}

std::string render_rule(const Rule& r) {
  std::string s;
  for (const auto& m : r.matches) s += match_text(m) + " ";
  if (r.add_ct_mark) s += "ct mark set ct mark | " + hex32(r.add_ct_mark) + " ";
  if (r.counter) s += "counter ";
  s += verdict_text(r.verdict);
  if (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::string render_table(const Ruleset& rs) {
  std::ostringstream o;
  o << "table inet " << rs.table << " {\n";
  for (const auto& s : rs.sets) {
    o << "\tset " << s.name << " {\n\t\ttype ";
    for (std::size_t i = 0; i < s.key.size(); ++i) o << (i ? " . " : "") << key_name(s.key[i]);
    o << "\n";
    if (s.interval) o << "\t\tflags interval\n";
    if (!s.elements.empty()) {
      o << "\t\telements = {";
      for (std::size_t i = 0; i < s.elements.size(); ++i)
        o << (i ? ",\n\t\t\t     " : " ") << render_element(s, s.elements[i]);
      o << " }\n";
    }
    o << "\t}\n";
  }
  for (const auto& c : rs.chains) {
    o << "\n\tchain " << c.name << " {\n";
    if (!c.comment.empty()) o << "\t\t# " << c.comment << "\n";
    if (c.base)
      o << "\t\ttype " << (c.base->type == ChainType::nat ? "nat" : "filter") << " hook " << hook_name(c.base->hook)
        << " priority " << c.base->priority << "; policy " << (c.base->policy_drop ? "drop" : "accept") << ";\n";
    for (const auto& r : c.rules) o << "\t\t" << render_rule(r) << "\n";
    o << "\t}\n";
  }
  o << "}\n";
  return o.str();
}

std::string render_nft(const Ruleset& rs) {
  // The same three steps as the netlink batch: create-if-missing, delete, create with contents.
  // nft applies a file as one transaction, so the old table stays if anything fails.
  return "#!/usr/sbin/nft -f\n# generated by portcullis; replaces table inet " + rs.table +
         " atomically and touches no other table\ntable inet " + rs.table + "\ndelete table inet " + rs.table +
         "\n" + render_table(rs);
}

}  // namespace portcullis::firewall
