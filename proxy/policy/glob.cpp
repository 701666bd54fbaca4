#include "proxy/policy/glob.hpp"

namespace portcullis::policy {
namespace {

constexpr std::size_t npos = std::string_view::npos;

// Splits at '/', keeping empty segments ("a//b" has three, "" has one).
template <class F>
void for_each_segment(std::string_view body, F&& f) {
  std::size_t pos = 0;
  while (true) {
    const std::size_t slash = body.find('/', pos);
    if (!f(body.substr(pos, slash == npos ? npos : slash - pos), slash == npos)) return;
    if (slash == npos) return;
    pos = slash + 1;
  }
}

}  // namespace

std::string spiffe_pattern_problem(std::string_view p) {
  constexpr std::string_view scheme = "spiffe://";
  const std::string quoted = "spiffe pattern \"" + std::string(p) + "\"";
  if (!p.starts_with(scheme)) return quoted + " must start with spiffe://";
  const std::string_view body = p.substr(scheme.size());
  if (body.empty() || body.front() == '/') return quoted + " has no trust domain";
  for (char c : body) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '?' || c == '#' || c == '%')
      return quoted + " has a character not allowed in a SPIFFE ID";
  }
  if (body.find("//") != std::string_view::npos || body.back() == '/') return quoted + " has an empty path segment";
  if (auto e = check_segment_pattern(body); !e.empty()) return quoted + ": " + e;
  return {};
}

std::string check_segment_pattern(std::string_view body) {
  std::string error;
  for_each_segment(body, [&](std::string_view seg, bool last) {
    if (seg == "**") {
      if (!last) error = "`**` is only allowed as the last segment";
    } else if (seg != "*" && seg.find('*') != npos) {
      error = "`*` must be a whole segment (got \"" + std::string(seg) + "\")";
    }
    return error.empty();
  });
  return error;
}

bool is_wildcard_pattern(std::string_view body) {
  bool wild = false;
  for_each_segment(body, [&](std::string_view seg, bool) {
    wild = seg == "*" || seg == "**";
    return !wild;
  });
  return wild;
}

bool segment_pattern_matches(std::string_view pattern, std::string_view value) {
  std::size_t p = 0, v = 0;
  while (true) {
    const std::size_t ps = pattern.find('/', p);
    const std::string_view pseg = pattern.substr(p, ps == npos ? npos : ps - p);
    if (pseg == "**" && ps == npos) return true;  // the rest of the value, zero or more segments
    if (v == npos) return false;                  // pattern has segments left, the value does not
    const std::size_t vs = value.find('/', v);
    const std::string_view vseg = value.substr(v, vs == npos ? npos : vs - v);
    if (pseg == "*" ? vseg.empty() : pseg != vseg) return false;
    v = vs == npos ? npos : vs + 1;
    if (ps == npos) return v == npos;
    p = ps + 1;
    // "/a/**" against "/a": the value ran out exactly where a trailing `**` starts.
    if (v == npos) return pattern.substr(p) == "**";
  }
}

SegmentTrie::SegmentTrie() : root_(std::make_unique<Node>()) {}
SegmentTrie::~SegmentTrie() = default;
SegmentTrie::SegmentTrie(SegmentTrie&&) noexcept = default;
SegmentTrie& SegmentTrie::operator=(SegmentTrie&&) noexcept = default;

void SegmentTrie::insert(std::string_view pattern, std::uint32_t value) {
  Node* n = root_.get();
  std::vector<std::uint32_t>* target = nullptr;
  for_each_segment(pattern, [&](std::string_view seg, bool last) {
    if (seg == "**" && last) {
      target = &n->rest;
      return false;
    }
    std::unique_ptr<Node>* child;
    if (seg == "*") {
      child = &n->star;
    } else {
      auto it = n->children.find(seg);
      if (it == n->children.end()) it = n->children.emplace(std::string(seg), nullptr).first;
      child = &it->second;
    }
    if (!*child) *child = std::make_unique<Node>();
    n = child->get();
    if (last) target = &n->values;
    return true;
  });
  if (target->empty() || target->back() != value) target->push_back(value);
  ++size_;
}

}  // namespace portcullis::policy
