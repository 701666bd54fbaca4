#pragma once
// The kernel side: a Ruleset sent as ONE nftables transaction (libnftnl messages over a libmnl
// socket). All of it takes effect or none of it does; only our own table is ever touched.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "firewall/ruleset.hpp"

namespace portcullis::firewall {

// The outcome of a transaction. On failure `error` is the first errno the kernel returned and
// `message` names the object it rejected (chain, rule, set or element); the kernel aborted the
// whole batch, so whatever was installed before is untouched.
struct ApplyResult {
  int error = 0;
  std::string message;
  std::size_t messages = 0;  // netlink messages in the batch
  std::size_t bytes = 0;     // size of the batch
  std::string note;          // on success: how update() got there, when it had to fall back
  bool ok() const { return error == 0; }
  explicit operator bool() const { return ok(); }
};

// Installs `ruleset`, replacing the contents of `table inet <ruleset.table>` atomically
// (add table + delete table + add table with everything). EPERM -> "needs CAP_NET_ADMIN".
ApplyResult apply(const Ruleset& ruleset);

// Moves the kernel from `installed` to `desired`. When only set elements differ it sends an
// element diff (DELSETELEM + NEWSETELEM) in one transaction without rebuilding the table;
// otherwise it falls back to apply(desired). If the kernel's table no longer matches
// `installed` (someone changed it), the kernel rejects the diff as a whole and update() then
// installs `desired` with a full apply(); `note` says so.
ApplyResult update(const Ruleset& installed, const Ruleset& desired);

// True when the two differ only in set elements (update() then sends a diff).
bool same_structure(const Ruleset& a, const Ruleset& b);

// Removes `table inet <table>` (and nothing else). Removing a table that is not there succeeds.
ApplyResult delete_table(const std::string& table);

// What is installed, as `nft list table inet <table>` prints it; empty with `error` set when the
// table is missing or nft cannot run.
ApplyResult show_table(const std::string& table, std::string& out);

// The counter of one rule that has one (`counter` in its text), read back from the kernel.
struct RuleCounter {
  std::string chain;
  std::string verdict;  // "drop", "accept", "redirect", "jump", "return", or "" when none
  std::uint64_t packets = 0;
  std::uint64_t bytes = 0;
};

// Whether `table inet <table>` is installed, with one netlink lookup (no rule dump): fails with
// ENOENT when it is not, EPERM without CAP_NET_ADMIN.
ApplyResult table_installed(const std::string& table);

// Reads the counters of every rule of `table inet <table>` with one netlink dump (no nft
// process). Fails with ENOENT when the table is not installed, EPERM without CAP_NET_ADMIN.
ApplyResult read_counters(const std::string& table, std::vector<RuleCounter>& out);

}  // namespace portcullis::firewall
