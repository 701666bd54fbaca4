#pragma once
// The `firewall:` section of the config as plain values (parsed by proxy/config.cpp).
// The firewall library turns it into a Ruleset; it knows nothing of YAML.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace portcullis::firewall {

struct AllowEntry {
  std::vector<std::string> cidrs;  // IPv4 or IPv6 CIDRs (a bare address = /32 or /128)
  std::vector<std::uint16_t> ports;  // empty = every port
  std::string protocol = "tcp";      // tcp | udp
};

struct Spec {
  std::string table = "portcullis";
  std::optional<std::uint32_t> proxy_uid;
  std::optional<std::uint32_t> proxy_gid;
  struct Inbound {
    std::vector<std::uint16_t> ports;
    std::uint16_t to = 0;
  };
  struct Outbound {
    std::uint16_t to = 0;
    std::vector<std::uint16_t> exclude_ports;
  };
  std::optional<Inbound> intercept_inbound;
  std::optional<Outbound> intercept_outbound;
  bool has_ingress = false;
  bool ingress_default_drop = true;
  std::vector<AllowEntry> ingress_allow;
  bool has_egress = false;
  bool egress_default_drop = false;
  std::vector<AllowEntry> egress_allow;
  std::vector<std::uint16_t> listener_ports;  // filled from the listeners by proxy/
  // Interfaces (nft wildcards allowed, e.g. "br-*") whose forwarded traffic is judged by the same
  // ingress allowlist: container bridges such as docker0. Published (DNATed) ports are judged on
  // their original destination in prerouting already; this covers routed access to containers.
  std::vector<std::string> forward_interfaces;
};

}  // namespace portcullis::firewall
