#pragma once
// A policy compiled once per config load; decide() is called for every request.
#include <memory>
#include <string>
#include <vector>

#include "proxy/policy/request.hpp"
#include "proxy/policy/spec.hpp"

namespace portcullis::policy {

struct CompileError : std::runtime_error {
  using std::runtime_error::runtime_error;
  std::size_t rule_index = 0;  // which rule of the spec is at fault
};

// Why a rule did not match, for `portcullis explain` and deny reasons.
struct RuleMiss {
  std::string rule;
  std::vector<std::string> failed;  // e.g. "method GET not in [POST]"
};

struct Explanation {
  Decision decision;
  std::vector<RuleMiss> closest;  // for a deny: the rules that came nearest, best first
};

class Policy {
 public:
  // Throws CompileError for a spec that cannot be compiled (bad pattern, ...).
  static std::shared_ptr<const Policy> compile(const PolicySpec& spec);

  const std::string& name() const { return name_; }
  Mode mode() const { return mode_; }

  // HTTP / kubernetes / docker listeners: every request is decided afresh.
  Decision decide(const Request& request) const;
  // tcp listeners: only `from` is checked (an L4 identity allowlist).
  Decision decide_peer(const certs::Identity* peer) const;
  Explanation explain(const Request& request) const;

  struct Impl;
  ~Policy();
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

 private:
  Policy();
  std::string name_;
  Mode mode_ = Mode::enforce;
  std::unique_ptr<Impl> impl_;
};

}  // namespace portcullis::policy
