// Test-only driver for the integration tests: reads the `firewall:` section of a config file and
// calls the firewall library directly (plan / apply / update / delete / show), plus a mode that
// injects an element the kernel must reject. `portcullis firewall ...` is the user-facing CLI.
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "firewall/netlink.hpp"
#include "firewall/ruleset.hpp"

namespace fw = portcullis::firewall;

namespace {

std::vector<fw::AllowEntry> allow_list(const YAML::Node& n) {
  std::vector<fw::AllowEntry> out;
  for (const auto& e : n) {
    fw::AllowEntry a;
    for (const auto& c : e["cidrs"]) a.cidrs.push_back(c.as<std::string>());
    if (e["ports"])
      for (const auto& p : e["ports"]) a.ports.push_back(p.as<std::uint16_t>());
    if (e["protocol"]) a.protocol = e["protocol"].as<std::string>();
    out.push_back(a);
  }
  return out;
}

fw::Spec load(const std::string& path) {
  const YAML::Node f = YAML::LoadFile(path)["firewall"];
  fw::Spec s;
  if (f["table"]) s.table = f["table"].as<std::string>();
  if (f["proxy_uid"]) s.proxy_uid = f["proxy_uid"].as<std::uint32_t>();
  if (f["proxy_gid"]) s.proxy_gid = f["proxy_gid"].as<std::uint32_t>();
  if (const auto i = f["intercept"]) {
    if (const auto in = i["inbound"]) {
      fw::Spec::Inbound x;
      for (const auto& p : in["ports"]) x.ports.push_back(p.as<std::uint16_t>());
      x.to = in["to"].as<std::uint16_t>();
      s.intercept_inbound = x;
    }
    if (const auto ob = i["outbound"]) {
      fw::Spec::Outbound x;
      x.to = ob["to"].as<std::uint16_t>();
      if (ob["exclude_ports"])
        for (const auto& p : ob["exclude_ports"]) x.exclude_ports.push_back(p.as<std::uint16_t>());
      s.intercept_outbound = x;
    }
  }
  if (const auto in = f["ingress"]) {
    s.has_ingress = true;
    s.ingress_default_drop = in["default"].as<std::string>("drop") == "drop";
    if (in["allow"]) s.ingress_allow = allow_list(in["allow"]);
  }
  if (const auto eg = f["egress"]) {
    s.has_egress = true;
    s.egress_default_drop = eg["default"].as<std::string>("accept") == "drop";
    if (eg["allow"]) s.egress_allow = allow_list(eg["allow"]);
  }
  if (f["forward_interfaces"])
    for (const auto& i : f["forward_interfaces"]) s.forward_interfaces.push_back(i.as<std::string>());
  return s;
}

int report(const fw::ApplyResult& r) {
  if (r.ok()) return 0;
  std::cerr << "error: " << r.message << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: firewall_driver plan|apply|apply-invalid FILE | update OLD NEW | delete TABLE | show TABLE\n";
  if (argc < 3) {
    std::cerr << usage;
    return 1;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "plan") {
      std::cout << fw::render_nft(fw::build_ruleset(load(argv[2])));
      return 0;
    }
    if (cmd == "apply") return report(fw::apply(fw::build_ruleset(load(argv[2]))));
    if (cmd == "apply-invalid") {
      // The first single-field interval set gets an element overlapping its first element:
      // the kernel's interval set refuses overlaps, so the whole batch must be rejected.
      auto rs = fw::build_ruleset(load(argv[2]));
      for (auto& s : rs.sets) {
        if (!s.interval || s.key.size() != 1 || s.elements.empty()) continue;
        fw::Element bad = s.elements.front();
        bad.fields[0].last = bad.fields[0].first;  // a sub-range of the first element
        s.elements.push_back(bad);
        break;
      }
      return report(fw::apply(rs));
    }
    if (cmd == "update" && argc >= 4) {
      const auto r = fw::update(fw::build_ruleset(load(argv[2])), fw::build_ruleset(load(argv[3])));
      if (!r.note.empty()) std::cerr << "note: " << r.note << "\n";
      return report(r);
    }
    if (cmd == "delete") return report(fw::delete_table(argv[2]));
    if (cmd == "show") {
      std::string out;
      auto r = fw::show_table(argv[2], out);
      std::cout << out;
      return report(r);
    }
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  std::cerr << usage;
  return 1;
}
