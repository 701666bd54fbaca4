// One nftables transaction per call: libnftnl builds the messages, libmnl's socket sends them in
// a single sendmsg. No NLM_F_ACK per message (the kernel then answers only for what it rejects);
// each NLMSG_ERROR's sequence number (and NETLINK_EXT_ACK offset) is mapped back to the object.
#include "firewall/netlink.hpp"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string_view>

namespace portcullis::firewall {
namespace {

template <auto Fn>
struct Free {
  template <class T>
  void operator()(T* p) const { Fn(p); }
};
using TablePtr = std::unique_ptr<nftnl_table, Free<nftnl_table_free>>;
using ChainPtr = std::unique_ptr<nftnl_chain, Free<nftnl_chain_free>>;
using RulePtr = std::unique_ptr<nftnl_rule, Free<nftnl_rule_free>>;
using ExprPtr = std::unique_ptr<nftnl_expr, Free<nftnl_expr_free>>;
using SetPtr = std::unique_ptr<nftnl_set, Free<nftnl_set_free>>;
using SocketPtr = std::unique_ptr<mnl_socket, Free<mnl_socket_close>>;

template <class T>
T* check_alloc(T* p) {
  if (!p) throw std::bad_alloc();
  return p;
}

// Element nests are closed before the list nest could pass nlattr's 16-bit length.
constexpr std::size_t kNestLimit = 60 * 1024;
constexpr std::size_t kMaxMessage = kNestLimit + 8 * 1024;

// What one message of the batch carried, to name it when the kernel rejects it.
struct Sent {
  enum class Kind { control, table, chain, rule, set, elements } kind = Kind::control;
  std::string what;  // "table inet x", "chain y", "set z", "rule 3 of chain y: ..."
  const Set* set = nullptr;
  const std::vector<Element>* elements = nullptr;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> offsets;  // (attr offset, element index)
};
Sent named(Sent::Kind kind, std::string what) {
  Sent s;
  s.kind = kind;
  s.what = std::move(what);
  return s;
}

std::uint32_t key_type_id(KeyType k) {
  switch (k) {  // nft's datatype numbers (TYPE_IPADDR ...), so `nft list` prints our sets
    case KeyType::ipv4_addr: return 7;
    case KeyType::ipv6_addr: return 8;
    case KeyType::inet_proto: return 12;
    case KeyType::inet_service: return 13;
    case KeyType::icmpv6_type: return 29;
  }
  return 0;
}
std::uint8_t key_len(KeyType k) {
  switch (k) {
    case KeyType::ipv4_addr: return 4;
    case KeyType::ipv6_addr: return 16;
    case KeyType::inet_proto: return 1;
    case KeyType::inet_service: return 2;
    case KeyType::icmpv6_type: return 1;
  }
  return 0;
}
std::uint32_t round4(std::uint32_t n) { return (n + 3) & ~3u; }

std::uint32_t set_key_len(const Set& s) {
  if (s.key.size() == 1) return key_len(s.key[0]);
  std::uint32_t n = 0;
  for (auto k : s.key) n += round4(key_len(k));
  return n;
}

class Batch {
 public:
  explicit Batch(std::string table) : table_(std::move(table)) {
    seq_ = first_seq_ = static_cast<std::uint32_t>(time(nullptr));
    buf_.resize(1 << 20);
    auto* nlh = nftnl_batch_begin(room(), seq_);
    finish(nlh, Sent{});
  }

  void end() {
    auto* nlh = nftnl_batch_end(room(), seq_);
    finish(nlh, Sent{});
  }

  void table(std::uint16_t type, std::uint16_t flags) {
    TablePtr t(check_alloc(nftnl_table_alloc()));
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table_.c_str());
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
    auto* nlh = nftnl_nlmsg_build_hdr(room(), type, NFPROTO_INET, flags, seq_);
    nftnl_table_nlmsg_build_payload(nlh, t.get());
    finish(nlh, named(Sent::Kind::table, "table inet " + table_));
  }

  void chain(const Chain& c) {
    ChainPtr ch(check_alloc(nftnl_chain_alloc()));
    nftnl_chain_set_str(ch.get(), NFTNL_CHAIN_TABLE, table_.c_str());
    nftnl_chain_set_str(ch.get(), NFTNL_CHAIN_NAME, c.name.c_str());
    if (c.base) {
      static constexpr std::uint32_t hooks[] = {NF_INET_PRE_ROUTING, NF_INET_LOCAL_IN, NF_INET_FORWARD,
                                                NF_INET_LOCAL_OUT, NF_INET_POST_ROUTING};
      nftnl_chain_set_u32(ch.get(), NFTNL_CHAIN_HOOKNUM, hooks[static_cast<int>(c.base->hook)]);
      nftnl_chain_set_s32(ch.get(), NFTNL_CHAIN_PRIO, c.base->priority);
      nftnl_chain_set_str(ch.get(), NFTNL_CHAIN_TYPE, c.base->type == ChainType::nat ? "nat" : "filter");
      nftnl_chain_set_u32(ch.get(), NFTNL_CHAIN_POLICY, c.base->policy_drop ? NF_DROP : NF_ACCEPT);
    }
    auto* nlh = nftnl_nlmsg_build_hdr(room(), NFT_MSG_NEWCHAIN, NFPROTO_INET, NLM_F_CREATE, seq_);
    nftnl_chain_nlmsg_build_payload(nlh, ch.get());
    finish(nlh, named(Sent::Kind::chain, "chain " + c.name));
  }

  // `id` != 0: the set is created in this batch and rules/elements refer to it by that id too.
  void set(const Set& s, std::uint32_t id) {
    SetPtr st(check_alloc(nftnl_set_alloc()));
    nftnl_set_set_str(st.get(), NFTNL_SET_TABLE, table_.c_str());
    nftnl_set_set_str(st.get(), NFTNL_SET_NAME, s.name.c_str());
    nftnl_set_set_u32(st.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
    std::uint32_t flags = 0, type = 0;
    if (s.interval) flags |= NFT_SET_INTERVAL;
    if (s.key.size() > 1) flags |= NFT_SET_CONCAT;
    for (auto k : s.key) type = (type << 6) | key_type_id(k);  // nft's concat type encoding
    nftnl_set_set_u32(st.get(), NFTNL_SET_FLAGS, flags);
    nftnl_set_set_u32(st.get(), NFTNL_SET_KEY_TYPE, type);
    nftnl_set_set_u32(st.get(), NFTNL_SET_KEY_LEN, set_key_len(s));
    nftnl_set_set_u32(st.get(), NFTNL_SET_ID, id);
    if (s.key.size() > 1) {
      std::uint8_t lens[NFT_REG32_COUNT] = {};
      for (std::size_t i = 0; i < s.key.size(); ++i) lens[i] = key_len(s.key[i]);
      nftnl_set_set_data(st.get(), NFTNL_SET_DESC_CONCAT, lens, s.key.size());
    }
    auto* nlh = nftnl_nlmsg_build_hdr(room(), NFT_MSG_NEWSET, NFPROTO_INET, NLM_F_CREATE, seq_);
    nftnl_set_nlmsg_build_payload(nlh, st.get());
    finish(nlh, named(Sent::Kind::set, "set " + s.name));
  }

  // Adds (or deletes) `elems` of `s`, split over as many messages as the 64 KiB nest limit needs.
  void elements(const Set& s, const std::vector<Element>& elems, bool del, std::uint32_t set_id) {
    std::size_t i = 0;
    while (i < elems.size()) {
      auto* nlh = nftnl_nlmsg_build_hdr(room(), del ? NFT_MSG_DELSETELEM : NFT_MSG_NEWSETELEM, NFPROTO_INET,
                                        del ? 0 : NLM_F_CREATE, seq_);
      mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table_.c_str());
      mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, s.name.c_str());
      if (set_id) mnl_attr_put_u32(nlh, NFTA_SET_ELEM_LIST_SET_ID, htonl(set_id));
      Sent sent = named(Sent::Kind::elements, "set " + s.name);
      sent.set = &s;
      sent.elements = &elems;
      auto* list = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
      const auto list_start = reinterpret_cast<char*>(list);
      for (; i < elems.size(); ++i) {
        if (static_cast<std::size_t>(reinterpret_cast<char*>(mnl_nlmsg_get_payload_tail(nlh)) - list_start) > kNestLimit)
          break;
        sent.offsets.emplace_back(static_cast<std::uint32_t>(reinterpret_cast<char*>(mnl_nlmsg_get_payload_tail(nlh)) -
                                                             reinterpret_cast<char*>(nlh)),
                                  static_cast<std::uint32_t>(i));
        put_element(nlh, s, elems[i]);
      }
      mnl_attr_nest_end(nlh, list);
      finish(nlh, std::move(sent));
    }
  }

  void rule(const Chain& c, std::size_t index, const Ruleset& rs, const std::vector<std::uint32_t>& set_ids) {
    RulePtr r(check_alloc(nftnl_rule_alloc()));
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table_.c_str());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, c.name.c_str());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
    const Rule& rule = c.rules[index];
    for (const auto& m : rule.matches) encode_match(r.get(), m, rs, set_ids);
    if (rule.add_ct_mark) {  // ct mark set ct mark | bits, as nft encodes it
      ct_load(r.get(), NFT_CT_MARK);
      bitwise(r.get(), ~rule.add_ct_mark, rule.add_ct_mark);
      auto e = expr("ct");
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_KEY, NFT_CT_MARK);
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_SREG, NFT_REG_1);
      add(r.get(), std::move(e));
    }
    if (rule.counter) add(r.get(), expr("counter"));
    encode_verdict(r.get(), rule.verdict);
    auto* nlh = nftnl_nlmsg_build_hdr(room(), NFT_MSG_NEWRULE, NFPROTO_INET, NLM_F_CREATE | NLM_F_APPEND, seq_);
    nftnl_rule_nlmsg_build_payload(nlh, r.get());
    finish(nlh, named(Sent::Kind::rule, "rule " + std::to_string(index + 1) + " of chain " + c.name + " (" +
                                       render_rule(rule) + ")"));
  }

  const char* data() const { return buf_.data(); }
  std::size_t size() const { return used_; }
  std::size_t count() const { return sent_.size(); }
  const Sent* find(std::uint32_t seq) const {
    const std::uint32_t i = seq - first_seq_;
    return i < sent_.size() ? &sent_[i] : nullptr;
  }

 private:
  char* room() {
    if (buf_.size() - used_ < kMaxMessage) buf_.resize(std::max(buf_.size() * 2, used_ + kMaxMessage));
    return buf_.data() + used_;
  }
  void finish(nlmsghdr* nlh, Sent sent) {
    used_ += NLMSG_ALIGN(nlh->nlmsg_len);
    sent_.push_back(std::move(sent));
    ++seq_;
  }

  static void put_data(nlmsghdr* nlh, std::uint16_t type, const std::uint8_t* data, std::size_t len) {
    auto* nest = mnl_attr_nest_start(nlh, type);
    mnl_attr_put(nlh, NFTA_DATA_VALUE, len, data);
    mnl_attr_nest_end(nlh, nest);
  }

  // Concatenations put each field in its own 32-bit-aligned slot; interval sets of one field are
  // the kernel's rbtree, which takes a start element and an end element (last + 1) per range.
  static void put_element(nlmsghdr* nlh, const Set& s, const Element& e) {
    std::uint8_t key[64] = {}, key_end[64] = {};
    if (s.key.size() > 1) {
      std::size_t off = 0;
      for (std::size_t f = 0; f < s.key.size(); ++f) {
        const Range& r = e.fields[f];
        std::memcpy(key + off, r.first.data(), r.len);
        std::memcpy(key_end + off, r.last.data(), r.len);
        off += round4(r.len);
      }
      auto* el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
      put_data(nlh, NFTA_SET_ELEM_KEY, key, off);
      if (s.interval) put_data(nlh, NFTA_SET_ELEM_KEY_END, key_end, off);
      mnl_attr_nest_end(nlh, el);
      return;
    }
    const Range& r = e.fields[0];
    auto* el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
    put_data(nlh, NFTA_SET_ELEM_KEY, r.first.data(), r.len);
    mnl_attr_nest_end(nlh, el);
    if (!s.interval) return;
    // End element: last + 1, unless the range runs to the top of the key space.
    std::array<std::uint8_t, 16> end = r.last;
    int i = r.len - 1;
    for (; i >= 0; --i)
      if (++end[i] != 0) break;
    if (i < 0) return;
    el = mnl_attr_nest_start(nlh, NFTA_LIST_ELEM);
    put_data(nlh, NFTA_SET_ELEM_KEY, end.data(), r.len);
    mnl_attr_put_u32(nlh, NFTA_SET_ELEM_FLAGS, htonl(NFT_SET_ELEM_INTERVAL_END));
    mnl_attr_nest_end(nlh, el);
  }

  static ExprPtr expr(const char* name) { return ExprPtr(check_alloc(nftnl_expr_alloc(name))); }
  static void add(nftnl_rule* r, ExprPtr e) { nftnl_rule_add_expr(r, e.release()); }  // the rule owns it now

  static void meta(nftnl_rule* r, std::uint32_t key, std::uint32_t reg) {
    auto e = expr("meta");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_KEY, key);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_META_DREG, reg);
    add(r, std::move(e));
  }
  static void cmp(nftnl_rule* r, std::uint32_t op, const void* data, std::uint32_t len) {
    auto e = expr("cmp");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CMP_OP, op);
    nftnl_expr_set(e.get(), NFTNL_EXPR_CMP_DATA, data, len);
    add(r, std::move(e));
  }
  static void payload(nftnl_rule* r, std::uint32_t base, std::uint32_t offset, std::uint32_t len, std::uint32_t reg) {
    auto e = expr("payload");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_DREG, reg);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_BASE, base);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_OFFSET, offset);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_PAYLOAD_LEN, len);
    add(r, std::move(e));
  }
  static void bitwise(nftnl_rule* r, std::uint32_t mask, std::uint32_t xor_bits) {  // reg1 = (reg1 & mask) ^ xor
    auto e = expr("bitwise");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_BITWISE_LEN, 4);
    nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_MASK, &mask, 4);
    nftnl_expr_set(e.get(), NFTNL_EXPR_BITWISE_XOR, &xor_bits, 4);
    add(r, std::move(e));
  }

  static void masked_nonzero(nftnl_rule* r, std::uint32_t mask, bool nonzero = true) {  // (reg1 & mask) != 0
    const std::uint32_t zero = 0;
    bitwise(r, mask, 0);
    cmp(r, nonzero ? NFT_CMP_NEQ : NFT_CMP_EQ, &zero, 4);
  }

  static void ct_load(nftnl_rule* r, std::uint32_t key) {
    auto e = expr("ct");
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_KEY, key);
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_CT_DREG, NFT_REG_1);
    add(r, std::move(e));
  }

  // Loads `f` into `reg`, returning its length.
  static std::uint32_t load(nftnl_rule* r, Field f, std::uint32_t reg) {
    switch (f) {
      case Field::ip_saddr: payload(r, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, reg); return 4;
      case Field::ip_daddr: payload(r, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, reg); return 4;
      case Field::ip6_saddr: payload(r, NFT_PAYLOAD_NETWORK_HEADER, 8, 16, reg); return 16;
      case Field::ip6_daddr: payload(r, NFT_PAYLOAD_NETWORK_HEADER, 24, 16, reg); return 16;
      case Field::l4proto: meta(r, NFT_META_L4PROTO, reg); return 1;
      case Field::th_dport:
      case Field::tcp_dport: payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, reg); return 2;
      case Field::icmpv6_type: payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1, reg); return 1;
    }
    return 0;
  }

  static void encode_match(nftnl_rule* r, const Match& m, const Ruleset& rs, const std::vector<std::uint32_t>& set_ids) {
    if (auto* x = std::get_if<MatchNfproto>(&m)) {
      meta(r, NFT_META_NFPROTO, NFT_REG_1);
      const std::uint8_t v = x->family == Family::ipv4 ? NFPROTO_IPV4 : NFPROTO_IPV6;
      cmp(r, NFT_CMP_EQ, &v, 1);
    } else if (auto* x = std::get_if<MatchL4proto>(&m)) {
      meta(r, NFT_META_L4PROTO, NFT_REG_1);
      cmp(r, NFT_CMP_EQ, &x->proto, 1);
    } else if (auto* x = std::get_if<MatchIfname>(&m)) {
      meta(r, x->output ? NFT_META_OIFNAME : NFT_META_IIFNAME, NFT_REG_1);
      char name[16] = {};
      const bool wildcard = !x->name.empty() && x->name.back() == '*';
      const std::size_t n = std::min<std::size_t>(wildcard ? x->name.size() - 1 : x->name.size(), 15);
      std::memcpy(name, x->name.data(), n);
      cmp(r, NFT_CMP_EQ, name, wildcard ? n : 16);  // "br-*" compares the prefix only, as nft does
    } else if (std::holds_alternative<MatchCtState>(m)) {
      ct_load(r, NFT_CT_STATE);
      masked_nonzero(r, NF_CT_STATE_BIT(IP_CT_ESTABLISHED) | NF_CT_STATE_BIT(IP_CT_RELATED));
    } else if (std::holds_alternative<MatchCtStatusDnat>(m)) {
      ct_load(r, NFT_CT_STATUS);
      masked_nonzero(r, 1u << 5);  // IPS_DST_NAT
    } else if (auto* x = std::get_if<MatchCtMark>(&m)) {
      ct_load(r, NFT_CT_MARK);
      masked_nonzero(r, x->bits, x->set);
    } else if (auto* x = std::get_if<MatchFibDaddrType>(&m)) {
      auto e = expr("fib");
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_FIB_DREG, NFT_REG_1);
      add(r, std::move(e));
      const std::uint32_t type = static_cast<std::uint32_t>(x->type);  // RTN_LOCAL, RTN_BROADCAST, ...
      cmp(r, x->negate ? NFT_CMP_NEQ : NFT_CMP_EQ, &type, 4);
    } else if (auto* x = std::get_if<MatchSkid>(&m)) {
      meta(r, x->gid ? NFT_META_SKGID : NFT_META_SKUID, NFT_REG_1);
      cmp(r, NFT_CMP_EQ, &x->id, 4);
    } else if (auto* x = std::get_if<MatchIp6Hoplimit>(&m)) {
      payload(r, NFT_PAYLOAD_NETWORK_HEADER, 7, 1, NFT_REG_1);  // the IPv6 header's hop limit
      cmp(r, NFT_CMP_EQ, &x->value, 1);
    } else if (auto* x = std::get_if<MatchLookup>(&m)) {
      std::uint32_t slot = 0;  // in 32-bit registers
      for (auto f : x->fields) {
        const std::uint32_t reg = slot % 4 == 0 ? NFT_REG_1 + slot / 4 : NFT_REG32_00 + slot;
        slot += round4(load(r, f, reg)) / 4;
      }
      auto e = expr("lookup");
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
      nftnl_expr_set_str(e.get(), NFTNL_EXPR_LOOKUP_SET, x->set.c_str());
      for (std::size_t i = 0; i < rs.sets.size(); ++i)
        if (rs.sets[i].name == x->set && set_ids[i]) nftnl_expr_set_u32(e.get(), NFTNL_EXPR_LOOKUP_SET_ID, set_ids[i]);
      add(r, std::move(e));
    }
  }

  static void encode_verdict(nftnl_rule* r, const Verdict& v) {
    if (v.kind == Verdict::Kind::next) return;
    auto e = expr("immediate");
    if (v.kind == Verdict::Kind::redirect) {
      const std::uint16_t port = htons(v.port);
      nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_1);
      nftnl_expr_set(e.get(), NFTNL_EXPR_IMM_DATA, &port, sizeof port);
      add(r, std::move(e));
      auto redir = expr("redir");
      nftnl_expr_set_u32(redir.get(), NFTNL_EXPR_REDIR_REG_PROTO_MIN, NFT_REG_1);
      nftnl_expr_set_u32(redir.get(), NFTNL_EXPR_REDIR_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
      add(r, std::move(redir));
      return;
    }
    nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
    switch (v.kind) {
      case Verdict::Kind::accept: nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, NF_ACCEPT); break;
      case Verdict::Kind::drop: nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, NF_DROP); break;
      case Verdict::Kind::ret: nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, static_cast<std::uint32_t>(NFT_RETURN)); break;
      case Verdict::Kind::jump:
        nftnl_expr_set_u32(e.get(), NFTNL_EXPR_IMM_VERDICT, static_cast<std::uint32_t>(NFT_JUMP));
        nftnl_expr_set_str(e.get(), NFTNL_EXPR_IMM_CHAIN, v.chain.c_str());
        break;
      case Verdict::Kind::redirect:
      case Verdict::Kind::next: break;
    }
    add(r, std::move(e));
  }

  std::string table_;
  std::vector<char> buf_;
  std::size_t used_ = 0;
  std::uint32_t seq_ = 0, first_seq_ = 0;
  std::vector<Sent> sent_;
};

std::string describe(const Sent& s, std::uint32_t offset) {
  if (s.kind != Sent::Kind::elements || s.offsets.empty()) return s.what.empty() ? "the batch" : s.what;
  if (offset) {
    auto it = std::upper_bound(s.offsets.begin(), s.offsets.end(), std::make_pair(offset, ~0u));
    if (it != s.offsets.begin()) {
      const auto index = std::prev(it)->second;
      return "element " + render_element(*s.set, (*s.elements)[index]) + " of " + s.what;
    }
  }
  const auto a = s.offsets.front().second, b = s.offsets.back().second;
  return "one of elements " + render_element(*s.set, (*s.elements)[a]) + " .. " +
         render_element(*s.set, (*s.elements)[b]) + " of " + s.what;
}

void grow_buffer(int fd, int opt_force, int opt, int size) {
  if (setsockopt(fd, SOL_SOCKET, opt_force, &size, sizeof size) != 0)
    setsockopt(fd, SOL_SOCKET, opt, &size, sizeof size);
}

ApplyResult fail(int code, std::string message) {
  ApplyResult r;
  r.error = code;
  r.message = std::move(message);
  return r;
}

std::string permission_hint(int code, const std::string& what) {
  if (code == EPERM)
    return "firewall needs CAP_NET_ADMIN: the kernel refused to change nftables (" + what + ": " +
           std::strerror(code) + ")";
  return {};
}

// Sends the whole batch in one sendmsg and reads back what the kernel rejected.
ApplyResult send(const Batch& batch, const std::string& table) {
  SocketPtr nl(mnl_socket_open(NETLINK_NETFILTER));
  if (!nl) return fail(errno, std::string("cannot open a netfilter netlink socket: ") + std::strerror(errno));
  if (mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0)
    return fail(errno, std::string("cannot bind the netlink socket: ") + std::strerror(errno));
  const int fd = mnl_socket_get_fd(nl.get());
  const int one = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one);
  grow_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, static_cast<int>(std::min<std::size_t>(batch.size() + (1 << 16), 1u << 30)));
  grow_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, 8 << 20);

  ApplyResult result;
  result.messages = batch.count();
  result.bytes = batch.size();
  if (mnl_socket_sendto(nl.get(), batch.data(), batch.size()) < 0) {
    const int code = errno;
    if (auto hint = permission_hint(code, "sendmsg"); !hint.empty()) return fail(code, hint);
    return fail(code, "sending the nftables batch (" + std::to_string(batch.size()) + " bytes) failed: " +
                          std::strerror(code));
  }
  // The kernel runs the whole batch inside sendmsg, so every answer is already queued: drain it.
  std::vector<char> buf(1 << 20);
  int errors = 0;
  bool lost = false;
  for (int round = 0; round < 1 << 20; ++round) {
    const ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOBUFS) {  // answers were dropped; some were errors, since we asked for no acks
        lost = true;
        continue;
      }
      break;  // EAGAIN: nothing more
    }
    int len = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_type != NLMSG_ERROR) continue;
      auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      if (err->error == 0) continue;
      ++errors;
      if (result.error) continue;  // the first error is the one reported
      const int code = -err->error;
      std::uint32_t offset = 0;
      std::string kernel_msg;
      if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
        std::size_t hlen = sizeof(*err);
        if (!(nlh->nlmsg_flags & NLM_F_CAPPED)) hlen += err->msg.nlmsg_len - sizeof(nlmsghdr);
        auto* tail = static_cast<char*>(mnl_nlmsg_get_payload_tail(nlh));
        for (auto* attr = static_cast<nlattr*>(mnl_nlmsg_get_payload_offset(nlh, hlen));
             mnl_attr_ok(attr, static_cast<int>(tail - reinterpret_cast<char*>(attr))); attr = mnl_attr_next(attr)) {
          if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_OFFS) offset = mnl_attr_get_u32(attr);
          if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG) kernel_msg = mnl_attr_get_str(attr);
        }
      }
      const Sent* sent = batch.find(err->msg.nlmsg_seq);
      const std::string what = sent ? describe(*sent, offset) : "message " + std::to_string(err->msg.nlmsg_seq);
      result.error = code;
      if (auto hint = permission_hint(code, what); !hint.empty()) {
        result.message = hint;
      } else {
        result.message = "kernel rejected " + what + ": " + std::strerror(code);
        if (!kernel_msg.empty()) result.message += " (" + kernel_msg + ")";
      }
    }
  }
  if (!result.error && lost) {
    result.error = ENOBUFS;
    result.message = "the kernel's answers overflowed the socket buffer; the batch was rejected";
  }
  if (result.error) {
    if (errors > 1) result.message += " (and " + std::to_string(errors - 1) + " more errors)";
    result.message += "; nothing was changed in table inet " + table;
  }
  return result;
}

void check_table_name(const std::string& t) {
  if (auto why = table_name_problem(t); !why.empty()) throw SpecError("firewall: table name " + why);
}

}  // namespace

ApplyResult apply(const Ruleset& rs) {
  check_table_name(rs.table);
  Batch b(rs.table);
  // add (so that delete cannot fail on a missing table) + delete + add: one atomic replacement.
  b.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
  b.table(NFT_MSG_DELTABLE, 0);
  b.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
  std::vector<std::uint32_t> ids(rs.sets.size());
  for (std::size_t i = 0; i < rs.sets.size(); ++i) {
    ids[i] = static_cast<std::uint32_t>(i + 1);
    b.set(rs.sets[i], ids[i]);
    b.elements(rs.sets[i], rs.sets[i].elements, false, ids[i]);
  }
  for (const auto& c : rs.chains) b.chain(c);  // every chain before any rule: jumps need targets
  for (const auto& c : rs.chains)
    for (std::size_t i = 0; i < c.rules.size(); ++i) b.rule(c, i, rs, ids);
  b.end();
  return send(b, rs.table);
}

namespace {
// build_ruleset() emits sorted elements; only a hand-made Ruleset pays for a sorted copy.
const std::vector<Element>& sorted(const std::vector<Element>& v, std::vector<Element>& scratch) {
  if (std::is_sorted(v.begin(), v.end())) return v;
  scratch = v;
  std::sort(scratch.begin(), scratch.end());
  return scratch;
}
}  // namespace

bool same_structure(const Ruleset& a, const Ruleset& b) {
  if (a.table != b.table || a.chains != b.chains || a.sets.size() != b.sets.size()) return false;
  for (std::size_t i = 0; i < a.sets.size(); ++i)
    if (a.sets[i].name != b.sets[i].name || a.sets[i].key != b.sets[i].key || a.sets[i].interval != b.sets[i].interval)
      return false;
  return true;
}

ApplyResult update(const Ruleset& installed, const Ruleset& desired) {
  if (!same_structure(installed, desired)) return apply(desired);
  check_table_name(desired.table);
  Batch b(desired.table);
  std::vector<std::vector<Element>> removed(desired.sets.size()), added(desired.sets.size());
  std::vector<Element> scratch_from, scratch_to;
  for (std::size_t i = 0; i < desired.sets.size(); ++i) {
    const auto& from = sorted(installed.sets[i].elements, scratch_from);
    const auto& to = sorted(desired.sets[i].elements, scratch_to);
    std::set_difference(from.begin(), from.end(), to.begin(), to.end(), std::back_inserter(removed[i]));
    std::set_difference(to.begin(), to.end(), from.begin(), from.end(), std::back_inserter(added[i]));
  }
  // Deletions first: a merged range that grew is deleted and re-added under the same start key.
  for (std::size_t i = 0; i < desired.sets.size(); ++i) b.elements(desired.sets[i], removed[i], true, 0);
  for (std::size_t i = 0; i < desired.sets.size(); ++i) b.elements(desired.sets[i], added[i], false, 0);
  b.end();
  ApplyResult diff = send(b, desired.table);
  if (diff.ok() || diff.error == EPERM) return diff;
  // The table drifted from `installed`: the desired state still wins, atomically.
  ApplyResult full = apply(desired);
  if (full.ok()) full.note = "element diff rejected (" + diff.message + "); applied the full ruleset instead";
  return full;
}

ApplyResult delete_table(const std::string& table) {
  check_table_name(table);
  Batch b(table);
  b.table(NFT_MSG_NEWTABLE, NLM_F_CREATE);
  b.table(NFT_MSG_DELTABLE, 0);
  b.end();
  return send(b, table);
}

ApplyResult show_table(const std::string& table, std::string& out) {
  check_table_name(table);
  out.clear();
  // Only our table is listed: listing the whole ruleset is slow and trips over version skew.
  const std::string cmd = "nft list table inet " + table + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return fail(errno, std::string("cannot run nft: ") + std::strerror(errno));
  char chunk[4096];
  std::size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, p)) > 0) out.append(chunk, n);
  const int status = pclose(p);
  if (status != 0) {
    std::string msg = out;
    out.clear();
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    if (msg.find("Operation not permitted") != std::string::npos)
      return fail(EPERM, "firewall show needs CAP_NET_ADMIN (" + msg + ")");
    return fail(ENOENT, "table inet " + table + " is not installed (" + msg + ")");
  }
  return {};
}

namespace {

struct CounterDump {
  std::vector<RuleCounter>* out;
};

struct RuleScan {
  RuleCounter rc;
  bool has_counter = false;
};

int on_rule_expr(nftnl_expr* e, void* data) {
  auto* scan = static_cast<RuleScan*>(data);
  const char* name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
  if (!name) return MNL_CB_OK;
  const std::string_view n(name);
  if (n == "counter") {
    scan->has_counter = true;
    scan->rc.packets += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
    scan->rc.bytes += nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
  } else if (n == "immediate" && nftnl_expr_is_set(e, NFTNL_EXPR_IMM_VERDICT)) {
    const auto v = static_cast<std::int32_t>(nftnl_expr_get_u32(e, NFTNL_EXPR_IMM_VERDICT));
    scan->rc.verdict = v == NF_DROP ? "drop" : v == NF_ACCEPT ? "accept" : v == NFT_JUMP ? "jump"
                       : v == NFT_RETURN ? "return" : "other";
  } else if (n == "redir") {
    scan->rc.verdict = "redirect";
  }
  return MNL_CB_OK;
}

int on_rule(const nlmsghdr* nlh, void* data) {
  auto* dump = static_cast<CounterDump*>(data);
  RulePtr r(check_alloc(nftnl_rule_alloc()));
  if (nftnl_rule_nlmsg_parse(nlh, r.get()) < 0) return MNL_CB_OK;
  RuleScan scan;
  if (const char* chain = nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN)) scan.rc.chain = chain;
  nftnl_expr_foreach(r.get(), on_rule_expr, &scan);
  if (scan.has_counter) dump->out->push_back(std::move(scan.rc));
  return MNL_CB_OK;
}

}  // namespace

namespace {

// One netlink socket for the lookups below, bound and ready.
struct Lookup {
  SocketPtr nl;
  std::vector<char> buf = std::vector<char>(1 << 16);
  unsigned portid = 0;
  std::uint32_t seq = static_cast<std::uint32_t>(std::time(nullptr));
};

ApplyResult open_lookup(Lookup& l) {
  l.nl.reset(mnl_socket_open(NETLINK_NETFILTER));
  if (!l.nl) return fail(errno, std::string("cannot open a netfilter netlink socket: ") + std::strerror(errno));
  if (mnl_socket_bind(l.nl.get(), 0, MNL_SOCKET_AUTOPID) < 0)
    return fail(errno, std::string("cannot bind the netlink socket: ") + std::strerror(errno));
  l.portid = mnl_socket_get_portid(l.nl.get());
  return {};
}

// NFT_MSG_GETTABLE for one table: ENOENT when it is not installed, EPERM without CAP_NET_ADMIN.
ApplyResult ask_table(Lookup& l, const std::string& table) {
  auto* get = nftnl_nlmsg_build_hdr(l.buf.data(), NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, l.seq);
  TablePtr t(check_alloc(nftnl_table_alloc()));
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table.c_str());
  nftnl_table_nlmsg_build_payload(get, t.get());
  if (mnl_socket_sendto(l.nl.get(), get, get->nlmsg_len) < 0)
    return fail(errno, std::string("asking the kernel for the table failed: ") + std::strerror(errno));
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(l.nl.get(), l.buf.data(), l.buf.size());
    if (n < 0) return fail(errno, std::string("reading the table failed: ") + std::strerror(errno));
    const int rc = mnl_cb_run(l.buf.data(), static_cast<std::size_t>(n), l.seq, l.portid, nullptr, nullptr);
    if (rc == MNL_CB_STOP) return {};
    if (rc < 0) {
      const int code = errno;
      if (code == EPERM) return fail(code, "reading the firewall table needs CAP_NET_ADMIN");
      if (code == ENOENT) return fail(code, "table inet " + table + " is not installed");
      return fail(code, std::string("reading the table failed: ") + std::strerror(code));
    }
  }
}

}  // namespace

ApplyResult table_installed(const std::string& table) {
  check_table_name(table);
  Lookup l;
  if (auto r = open_lookup(l); !r.ok()) return r;
  return ask_table(l, table);
}

ApplyResult read_counters(const std::string& table, std::vector<RuleCounter>& out) {
  check_table_name(table);
  out.clear();
  Lookup l;
  if (auto r = open_lookup(l); !r.ok()) return r;
  // A rule dump filtered by a table that is not there is just empty: ask for the table first.
  if (auto r = ask_table(l, table); !r.ok()) {
    if (r.error == EPERM) return fail(EPERM, "reading firewall counters needs CAP_NET_ADMIN");
    return r;
  }
  const auto seq = l.seq + 1;
  auto* nlh = nftnl_nlmsg_build_hdr(l.buf.data(), NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP | NLM_F_ACK, seq);
  RulePtr filter(check_alloc(nftnl_rule_alloc()));
  nftnl_rule_set_str(filter.get(), NFTNL_RULE_TABLE, table.c_str());
  nftnl_rule_nlmsg_build_payload(nlh, filter.get());
  if (mnl_socket_sendto(l.nl.get(), nlh, nlh->nlmsg_len) < 0)
    return fail(errno, std::string("asking the kernel for the rules failed: ") + std::strerror(errno));
  CounterDump dump{&out};
  for (;;) {
    const ssize_t n = mnl_socket_recvfrom(l.nl.get(), l.buf.data(), l.buf.size());
    if (n < 0) {
      const int code = errno;
      out.clear();
      return fail(code, std::string("reading the rules failed: ") + std::strerror(code));
    }
    const int rc = mnl_cb_run(l.buf.data(), static_cast<std::size_t>(n), seq, l.portid, on_rule, &dump);
    if (rc == MNL_CB_STOP) break;
    if (rc < 0) {
      const int code = errno;
      out.clear();
      if (code == EPERM) return fail(code, "reading firewall counters needs CAP_NET_ADMIN");
      if (code == ENOENT) return fail(code, "table inet " + table + " is not installed");
      return fail(code, std::string("reading the rules failed: ") + std::strerror(code));
    }
  }
  return {};
}

}  // namespace portcullis::firewall
