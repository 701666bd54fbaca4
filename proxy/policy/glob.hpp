#pragma once
// Segment patterns, shared by HTTP paths and SPIFFE IDs (and usable by the kube / docker rule
// forms): a pattern is a list of '/'-separated segments where
//   `*`  matches exactly one non-empty segment,
//   `**` (only as the last segment) matches zero or more segments, so "/static/**" matches
//        "/static", "/static/" and "/static/a/b", but not "/staticfiles".
// Everything else matches itself byte for byte (case-sensitive). Restricting `**` to the end
// keeps matching linear in the length of the value, whatever the rules and the request.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace portcullis::policy {

// Transparent hashing so that maps keyed by std::string can be probed with a string_view.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// `body` is the value without its fixed prefix: for "/a/b" the text after the leading '/',
// for "spiffe://td/x" the text after "spiffe://".
// Empty when `body` is a valid pattern body, else why not ("`*` must be a whole segment", ...).
std::string check_segment_pattern(std::string_view body);
// A `spiffe://trust-domain/path` pattern (`from.spiffe`, an upstream's `verify_spiffe`): empty
// when valid, else why not, quoting the pattern ("must start with spiffe://", "has no trust
// domain", a character not allowed in a SPIFFE ID, an empty path segment, a misplaced `*`).
std::string spiffe_pattern_problem(std::string_view pattern);
// True when the pattern has a `*` or `**` segment (otherwise it can only match itself).
bool is_wildcard_pattern(std::string_view body);
// Direct (unindexed) match; the same semantics as SegmentTrie. Used by explain().
bool segment_pattern_matches(std::string_view pattern_body, std::string_view value_body);

// Many patterns at once: values are attached to patterns; visit() reports, for a value, every
// attached list whose pattern matches it. Work is bounded by the trie nodes along the value.
class SegmentTrie {
 public:
  SegmentTrie();
  ~SegmentTrie();
  SegmentTrie(SegmentTrie&&) noexcept;
  SegmentTrie& operator=(SegmentTrie&&) noexcept;

  // Attaches `value` to the pattern (a valid pattern body). Values attached to one pattern keep
  // their insertion order; attaching the same value twice in a row is a no-op.
  void insert(std::string_view pattern_body, std::uint32_t value);
  bool empty() const { return size_ == 0; }

  // Calls f(const std::vector<std::uint32_t>&) for each matching pattern's values.
  template <class F>
  void visit(std::string_view value_body, F&& f) const {
    walk(root_.get(), value_body, 0, f);
  }

 private:
  struct Node {
    StringMap<std::unique_ptr<Node>> children;
    std::unique_ptr<Node> star;  // `*`
    std::vector<std::uint32_t> values;
    std::vector<std::uint32_t> rest;  // values of a trailing `**` below this node
  };
  static constexpr std::size_t end = std::string_view::npos;

  // pos: where the next segment starts in s, or `end` when the value has no more segments.
  template <class F>
  static void walk(const Node* n, std::string_view s, std::size_t pos, F& f) {
    if (!n->rest.empty()) f(n->rest);
    if (pos == end) {
      if (!n->values.empty()) f(n->values);
      return;
    }
    const std::size_t slash = s.find('/', pos);
    const std::string_view seg = s.substr(pos, slash == end ? end : slash - pos);
    const std::size_t next = slash == end ? end : slash + 1;
    if (auto it = n->children.find(seg); it != n->children.end()) walk(it->second.get(), s, next, f);
    if (n->star && !seg.empty()) walk(n->star.get(), s, next, f);
  }

  std::unique_ptr<Node> root_;
  std::size_t size_ = 0;
};

}  // namespace portcullis::policy
