#pragma once
// The desired nftables state as plain values (knftables style): one table, its sets and chains.
// build_ruleset() derives it from a Spec; render_nft() prints it as `nft -f` text and
// firewall/netlink.hpp sends the same value to the kernel as one libnftnl batch.
#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "firewall/spec.hpp"

namespace portcullis::firewall {

// A Spec the firewall cannot express (bad CIDR, missing port): message names the value.
struct SpecError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

enum class Family : std::uint8_t { ipv4, ipv6 };

// Types of set keys, named as nft names them.
enum class KeyType : std::uint8_t { ipv4_addr, ipv6_addr, inet_proto, inet_service, icmpv6_type };

// One field of an element: an inclusive range of big-endian values of `len` bytes
// (first == last for a single value). Addresses use len 4 or 16, ports 2, protocols 1.
struct Range {
  std::array<std::uint8_t, 16> first{};
  std::array<std::uint8_t, 16> last{};
  std::uint8_t len = 0;
  bool operator==(const Range&) const = default;
  auto operator<=>(const Range&) const = default;
};

struct Element {
  std::vector<Range> fields;  // one per key type of the set
  bool operator==(const Element&) const = default;
  auto operator<=>(const Element&) const = default;
};

struct Set {
  std::string name;
  std::vector<KeyType> key;  // more than one = a concatenation
  bool interval = false;     // `flags interval`: fields may be ranges (CIDRs)
  std::vector<Element> elements;  // sorted, non-overlapping (build_ruleset merges CIDRs)
  bool operator==(const Set&) const = default;
};

// Packet fields a rule can load, as nft spells them.
enum class Field : std::uint8_t {
  ip_saddr, ip_daddr, ip6_saddr, ip6_daddr, l4proto, th_dport, tcp_dport, icmpv6_type
};

// Matches: each renders as one nft phrase and encodes as a few kernel expressions.
struct MatchNfproto { Family family; bool operator==(const MatchNfproto&) const = default; };
struct MatchL4proto { std::uint8_t proto; bool operator==(const MatchL4proto&) const = default; };
struct MatchIfname {
  bool output = false;  // oifname (true) or iifname
  std::string name;
  bool operator==(const MatchIfname&) const = default;
};
struct MatchCtState {  // ct state established,related
  bool operator==(const MatchCtState&) const = default;
};
struct MatchCtStatusDnat {
  bool operator==(const MatchCtStatusDnat&) const = default;
};
// fib daddr type local | broadcast | anycast | multicast (or !=): the kernel's route types.
enum class AddrType : std::uint8_t { local = 2, broadcast = 3, anycast = 4, multicast = 5 };
struct MatchFibDaddrType {
  AddrType type = AddrType::local;
  bool negate = false;
  bool operator==(const MatchFibDaddrType&) const = default;
};
struct MatchCtMark {  // ct mark & bits != 0 (set) or == 0
  std::uint32_t bits = 0;
  bool set = true;
  bool operator==(const MatchCtMark&) const = default;
};
struct MatchSkid {  // meta skuid N / meta skgid N
  bool gid = false;
  std::uint32_t id = 0;
  bool operator==(const MatchSkid&) const = default;
};
struct MatchIp6Hoplimit {  // ip6 hoplimit N
  std::uint8_t value = 255;
  bool operator==(const MatchIp6Hoplimit&) const = default;
};
struct MatchLookup {  // f1 . f2 . f3 @set
  std::vector<Field> fields;
  std::string set;
  bool operator==(const MatchLookup&) const = default;
};
using Match = std::variant<MatchNfproto, MatchL4proto, MatchIfname, MatchCtState, MatchCtStatusDnat,
                           MatchFibDaddrType, MatchCtMark, MatchSkid, MatchIp6Hoplimit, MatchLookup>;

struct Verdict {
  // next: no verdict, the chain goes on (a rule that only sets the ct mark).
  enum class Kind : std::uint8_t { accept, drop, ret, jump, redirect, next } kind = Kind::accept;
  std::string chain;       // jump target
  std::uint16_t port = 0;  // redirect to :port
  bool operator==(const Verdict&) const = default;
};

struct Rule {
  std::vector<Match> matches;
  std::uint32_t add_ct_mark = 0;  // nonzero: `ct mark set ct mark | add_ct_mark` before the verdict
  bool counter = false;
  Verdict verdict;
  bool operator==(const Rule&) const = default;
};

enum class Hook : std::uint8_t { prerouting, input, forward, output, postrouting };
enum class ChainType : std::uint8_t { filter, nat };

struct BaseChain {
  ChainType type = ChainType::filter;
  Hook hook = Hook::prerouting;
  std::int32_t priority = 0;
  bool policy_drop = false;
  bool operator==(const BaseChain&) const = default;
};

struct Chain {
  std::string name;
  std::optional<BaseChain> base;  // none = a regular chain reached by jump
  std::string comment;            // why it is there / why this priority (rendered as `# ...`)
  std::vector<Rule> rules;
  bool operator==(const Chain&) const = default;
};

// One `table inet NAME`; sets come before chains (rules look sets up by name).
struct Ruleset {
  std::string table = "portcullis";
  std::vector<Set> sets;
  std::vector<Chain> chains;
  bool operator==(const Ruleset&) const = default;
};

// Base-chain priorities, unique and ordered against the neighbours we coexist with:
//   raw -300, conntrack -200, mangle -150
//   kPrioIngress  -120  dstnat-20: ours, before kube-proxy's filter-prerouting (dstnat-10 = -110)
//                       and before every DNAT (kube-proxy and Docker nat at dstnat = -100), so the
//                       ingress allowlist sees the original destination.
//   kPrioEgress   -120  dstnat-20 on the output hook: the app's original destination, before our
//                       own outbound redirect and kube-proxy's nat-output (dstnat).
//   kPrioIntercept -105 dstnat-5: our redirects, after our filters, before kube-proxy's and
//                       Docker's DNAT (dstnat), so an intercepted port reaches the proxy.
//   kPrioForward   -20  filter-20: before kube-proxy's filter-forward (filter-10 = -10) and
//                       Docker's filter-FORWARD / iptables-nft's filter (filter = 0).
//   srcnat (100) is kube-proxy's and Docker's masquerade; we install nothing there.
inline constexpr std::int32_t kPrioIngress = -120;
//   kPrioInput     -20  filter-20 on the input hook: connections DNATed to this host from an
//                       address that is not its own (a kube-proxy Service IP), which
//                       prerouting_ingress could not know were coming here.
inline constexpr std::int32_t kPrioInput = -20;
// The conntrack mark bit prerouting_ingress sets on every connection it sends to the allowlist,
// so that input and forward know it was judged on its original destination (kube-proxy marks
// packets with 0x4000 / 0x8000, not connections; Docker marks nothing).
inline constexpr std::uint32_t kJudgedMark = 0x20000000;
inline constexpr std::int32_t kPrioEgress = -120;
inline constexpr std::int32_t kPrioIntercept = -105;
inline constexpr std::int32_t kPrioForward = -20;

// Why `name` cannot be our table's name, or "" when it can: nft's grammar reads a name only when
// it starts with a letter or '_' and is letters, digits, '_' or '-', and not one of its keywords
// (`table inet drop` does not parse, so nft could neither load our text nor list the table).
std::string table_name_problem(std::string_view name);

// Derives the ruleset from the `firewall:` section. Throws SpecError on values it cannot express.
Ruleset build_ruleset(const Spec& spec);

// `nft -f` text that installs `ruleset` replacing our table atomically (add + delete + add table),
// deterministic for `portcullis firewall plan` and golden tests.
std::string render_nft(const Ruleset& ruleset);

// The table body alone (`table inet NAME { ... }`), as `nft list table` would show it.
std::string render_table(const Ruleset& ruleset);

// One rule as nft prints it, e.g. "meta l4proto tcp tcp dport @x counter accept".
std::string render_rule(const Rule& rule);

// How one element prints in nft syntax, e.g. "10.0.0.0/8 . tcp . 8080"; used in error messages.
std::string render_element(const Set& set, const Element& element);

// Listener ports that `ingress` makes unreachable from any peer (for `portcullis check` warnings).
std::vector<std::uint16_t> unreachable_listener_ports(const Spec& spec);

// --- CIDR helpers (exposed for tests) -------------------------------------------------------
struct AddrRange {
  Family family = Family::ipv4;
  unsigned __int128 first = 0;  // host-order value of the address (IPv4 uses the low 32 bits)
  unsigned __int128 last = 0;
  bool operator==(const AddrRange&) const = default;
};
// "10.0.0.0/8", "fd00::/8", or a bare address. Host bits are cleared. Throws SpecError.
AddrRange parse_cidr(const std::string& text);
// Sorts and merges overlapping and adjacent ranges (the kernel rejects overlaps in interval sets).
std::vector<AddrRange> merge_ranges(std::vector<AddrRange> ranges);
// `a` minus `b`; both merged.
std::vector<AddrRange> subtract_ranges(const std::vector<AddrRange>& a, const std::vector<AddrRange>& b);
// "10.0.0.0/8" when the range is one prefix, else "10.0.0.0-11.0.0.3".
std::string format_range(const AddrRange& range);

}  // namespace portcullis::firewall
