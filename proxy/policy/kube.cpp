// The Kubernetes request resolver and the `kubernetes:` rule form. See kube.hpp.
//
// The resolver mirrors the behaviour of k8s.io/apiserver's RequestInfoFactory (requestinfo.go),
// including the parts that decide the verb and name from the query: Go's url.ParseQuery (pairs
// that fail to unescape, or hold a ';', are dropped), the ListOptions decoding that turns a
// fieldSelector of metadata.name=X into the name, and the fallback when that decoding fails
// (the verb is still list or watch from the raw `watch` value; the name is not set).
#include "proxy/policy/kube.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>

namespace portcullis::policy {
namespace {

using sv = std::string_view;

constexpr long max_query_params = 10000;  // Go's net/url default (urlmaxqueryparams)

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

std::string ascii_lower(sv s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool contains(const std::vector<std::string>& list, sv value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

std::string join(const std::vector<std::string>& items) {
  std::string out = "[";
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += items[i].empty() ? "\"\"" : items[i];
  }
  return out + "]";
}

std::string quoted(sv s) {
  std::string out = "\"";
  out += s;
  return out + "\"";
}

// Segments of a path with leading and trailing slashes trimmed; "" and "/" give none.
std::vector<std::string> split_path(sv path) {
  std::vector<std::string> parts;
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.empty()) return parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t slash = path.find('/', start);
    parts.emplace_back(path.substr(start, slash == sv::npos ? sv::npos : slash - start));
    if (slash == sv::npos) break;
    start = slash + 1;
  }
  return parts;
}

// --- the query, as Go's url.ParseQuery reads it ------------------------------------------

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// url.QueryUnescape: '+' is a space, %XX must be two hex digits.
std::optional<std::string> query_unescape(sv s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// The first value of each parameter the resolver reads (Go's Values[key][0]).
struct QueryValues {
  std::optional<std::string> watch, field_selector, label_selector, limit, timeout_seconds;
};

QueryValues parse_query(sv raw) {
  QueryValues q;
  while (!raw.empty()) {
    const std::size_t amp = raw.find('&');
    const sv pair = raw.substr(0, amp);
    raw = amp == sv::npos ? sv{} : raw.substr(amp + 1);
    if (pair.empty() || pair.find(';') != sv::npos) continue;
    const std::size_t eq = pair.find('=');
    auto key = query_unescape(pair.substr(0, eq));
    if (!key) continue;
    auto value = query_unescape(eq == sv::npos ? sv{} : pair.substr(eq + 1));
    if (!value) continue;
    std::optional<std::string>* slot = nullptr;
    if (*key == "watch") slot = &q.watch;
    else if (*key == "fieldSelector") slot = &q.field_selector;
    else if (*key == "labelSelector") slot = &q.label_selector;
    else if (*key == "limit") slot = &q.limit;
    else if (*key == "timeoutSeconds") slot = &q.timeout_seconds;
    if (slot && !*slot) *slot = std::move(*value);
  }
  return q;
}

// strconv.ParseInt(s, 10, 64) succeeds.
bool go_parses_int64(sv s) {
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.empty()) return false;
  std::uint64_t v = 0;
  const std::uint64_t limit = negative ? (std::uint64_t{1} << 63) : (std::uint64_t{1} << 63) - 1;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    const auto d = static_cast<std::uint64_t>(c - '0');
    if (v > (limit - d) / 10) return false;
    v = v * 10 + d;
  }
  return true;
}

// --- fieldSelector (k8s.io/apimachinery/pkg/fields) ----------------------------------------

// Terms split on commas not escaped by a backslash (the backslash is kept).
std::vector<sv> split_field_terms(sv s) {
  std::vector<sv> terms;
  if (s.empty()) return terms;
  std::size_t start = 0;
  bool in_slash = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (in_slash) in_slash = false;
    else if (s[i] == '\\') in_slash = true;
    else if (s[i] == ',') {
      terms.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  terms.push_back(s.substr(start));
  return terms;
}

// Value unescaping: \\ \, \= are the only escapes; a bare ',' or '=' is an error.
std::optional<std::string> unescape_field_value(sv s) {
  if (s.find_first_of("\\,=") == sv::npos) return std::string(s);
  std::string out;
  bool in_slash = false;
  for (char c : s) {
    if (in_slash) {
      if (c != '\\' && c != ',' && c != '=') return std::nullopt;
      out.push_back(c);
      in_slash = false;
    } else if (c == '\\') {
      in_slash = true;
    } else if (c == ',' || c == '=') {
      return std::nullopt;
    } else {
      out.push_back(c);
    }
  }
  if (in_slash) return std::nullopt;
  return out;
}

struct FieldSelector {
  bool ok = false;
  std::optional<std::string> name;  // RequiresExactMatch("metadata.name")
};

FieldSelector parse_field_selector(sv selector) {
  FieldSelector result;
  std::vector<sv> terms = split_field_terms(selector);
  std::sort(terms.begin(), terms.end());  // the apiserver sorts the raw terms; the first wins
  for (sv term : terms) {
    if (term.empty()) continue;
    // The first operator occurrence splits the term; "!=" and "==" are tried before "=".
    std::size_t at = sv::npos, op_len = 0;
    bool negated = false;
    for (std::size_t i = 0; i < term.size() && at == sv::npos; ++i) {
      const sv rest = term.substr(i);
      if (rest.starts_with("!=")) at = i, op_len = 2, negated = true;
      else if (rest.starts_with("==")) at = i, op_len = 2;
      else if (rest.starts_with("=")) at = i, op_len = 1;
    }
    if (at == sv::npos) return result;
    auto value = unescape_field_value(term.substr(at + op_len));
    if (!value) return result;
    if (!negated && !result.name && term.substr(0, at) == "metadata.name") result.name = std::move(*value);
  }
  result.ok = true;
  return result;
}

// path.IsValidPathSegmentName
bool is_valid_path_segment_name(sv name) {
  return name != "." && name != ".." && name.find('/') == sv::npos && name.find('%') == sv::npos;
}

// --- labelSelector (k8s.io/apimachinery/pkg/labels), validity only --------------------------

bool is_dns1123_subdomain(sv s) {
  if (s.empty() || s.size() > 253) return false;
  std::size_t start = 0;
  for (;;) {
    const std::size_t dot = s.find('.', start);
    const sv label = s.substr(start, dot == sv::npos ? sv::npos : dot - start);
    if (label.empty() || !is_lower_alnum(label.front()) || !is_lower_alnum(label.back())) return false;
    for (char c : label)
      if (!is_lower_alnum(c) && c != '-') return false;
    if (dot == sv::npos) return true;
    start = dot + 1;
  }
}

// ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63 characters.
bool is_qualified_name_part(sv s) {
  if (s.empty() || s.size() > 63 || !is_alnum(s.front()) || !is_alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '-' || c == '_' || c == '.'; });
}

bool is_label_key(sv key) {
  const std::size_t slash = key.find('/');
  if (slash == sv::npos) return is_qualified_name_part(key);
  if (key.find('/', slash + 1) != sv::npos) return false;
  return is_dns1123_subdomain(key.substr(0, slash)) && is_qualified_name_part(key.substr(slash + 1));
}

bool is_label_value(sv v) { return v.empty() || is_qualified_name_part(v); }

enum class Tok { error, end, close_par, comma, not_, deq, eq, gt, ident, in, lt, neq, notin, open_par };

struct LabelToken {
  Tok tok;
  sv text;
};

bool is_label_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }
bool is_label_special(char c) { return sv("=!(),><").find(c) != sv::npos; }

// The apiserver's lexer reads a NUL byte like the end of the input: at the start of a token it
// ends the token list; inside an identifier or operator it ends that token and is consumed.
std::vector<LabelToken> lex_labels(sv s) {
  std::vector<LabelToken> out;
  std::size_t i = 0;
  auto at_nul_or_end = [&] { return i >= s.size() || s[i] == '\0'; };
  for (;;) {
    while (i < s.size() && is_label_space(s[i])) ++i;
    if (at_nul_or_end()) {
      out.push_back({Tok::end, {}});
      return out;
    }
    const std::size_t start = i;
    if (is_label_special(s[i])) {
      const sv two = s.substr(i, 2);
      if (two == "!=" || two == "==") {
        out.push_back({two == "!=" ? Tok::neq : Tok::deq, two});
        i += 2;
      } else {
        static constexpr std::array<std::pair<char, Tok>, 7> singles = {{{')', Tok::close_par},
            {',', Tok::comma}, {'!', Tok::not_}, {'=', Tok::eq}, {'>', Tok::gt}, {'<', Tok::lt}, {'(', Tok::open_par}}};
        for (const auto& [c, t] : singles)
          if (c == s[i]) out.push_back({t, s.substr(i, 1)});
        ++i;
      }
    } else {
      while (!at_nul_or_end() && !is_label_special(s[i]) && !is_label_space(s[i])) ++i;
      const sv word = s.substr(start, i - start);
      out.push_back({word == "in" ? Tok::in : word == "notin" ? Tok::notin : Tok::ident, word});
    }
    if (i < s.size() && s[i] == '\0') ++i;  // a NUL right after a token is consumed with it
  }
}

class LabelParser {
 public:
  explicit LabelParser(sv s) : toks_(lex_labels(s)) {}

  bool parse() {
    for (;;) {
      const Tok t = peek(true);
      if (t == Tok::end) return true;
      if (t != Tok::ident && t != Tok::not_) return false;
      if (!requirement()) return false;
      const Tok after = next(true);
      if (after == Tok::end) return true;
      if (after != Tok::comma) return false;
      const Tok t2 = peek(true);
      if (t2 != Tok::ident && t2 != Tok::not_) return false;
    }
  }

 private:
  // In a value position `in` and `notin` are plain identifiers.
  Tok as_context(Tok t, bool values) const {
    return values && (t == Tok::in || t == Tok::notin) ? Tok::ident : t;
  }
  Tok peek(bool values) const { return as_context(toks_[std::min(pos_, toks_.size() - 1)].tok, values); }
  Tok next(bool values) {
    const LabelToken& tk = toks_[std::min(pos_, toks_.size() - 1)];
    ++pos_;
    text_ = tk.text;
    return as_context(tk.tok, values);
  }

  bool requirement() {
    Tok t = next(true);
    bool not_exists = false;
    if (t == Tok::not_) {
      not_exists = true;
      t = next(true);
    }
    if (t != Tok::ident || !is_label_key(text_)) return false;
    const Tok la = peek(true);
    if (not_exists || la == Tok::end || la == Tok::comma) return true;  // exists / does not exist
    const Tok op = next(false);
    std::vector<std::string> values;
    switch (op) {
      case Tok::in:
      case Tok::notin:
        if (!value_set(values)) return false;
        break;
      case Tok::eq:
      case Tok::deq:
      case Tok::neq:
      case Tok::gt:
      case Tok::lt:
        if (peek(true) == Tok::end || peek(true) == Tok::comma) {
          values.emplace_back();
        } else {
          if (next(true) != Tok::ident) return false;
          values.emplace_back(text_);
        }
        if ((op == Tok::gt || op == Tok::lt) && !go_parses_int64(values.front())) return false;
        break;
      default:
        return false;
    }
    return std::all_of(values.begin(), values.end(), [](const std::string& v) { return is_label_value(v); });
  }

  bool value_set(std::vector<std::string>& values) {
    if (next(true) != Tok::open_par) return false;
    const Tok la = peek(true);
    if (la == Tok::close_par) {
      next(true);
      values.emplace_back();
      return true;
    }
    if (la != Tok::ident && la != Tok::comma) return false;
    for (;;) {
      const Tok t = next(true);
      if (t == Tok::ident) {
        values.emplace_back(text_);
        const Tok t2 = peek(true);
        if (t2 == Tok::comma) continue;
        if (t2 != Tok::close_par) return false;
        break;
      }
      if (t != Tok::comma) return false;
      values.emplace_back();  // "(,", ",,", ",)" each stand for the empty value
      if (peek(true) == Tok::close_par) break;
    }
    return next(true) == Tok::close_par;
  }

  std::vector<LabelToken> toks_;
  std::size_t pos_ = 0;
  sv text_;
};

bool label_selector_parses(sv s) { return LabelParser(s).parse(); }

// --- the ListOptions decoding --------------------------------------------------------------

// strings.EqualFold(v, "false"): ASCII case-insensitive, and U+017F (long s) folds to 's'.
bool equal_fold_false(sv v) {
  static constexpr sv word = "false";
  std::size_t i = 0;
  for (char w : word) {
    if (i >= v.size()) return false;
    if (w == 's' && v.substr(i, 2) == "\xC5\xBF") {
      i += 2;
      continue;
    }
    const char c = v[i] >= 'A' && v[i] <= 'Z' ? static_cast<char>(v[i] - 'A' + 'a') : v[i];
    if (c != w) return false;
    ++i;
  }
  return i == v.size();
}

struct ListOptions {
  bool decoded = false;  // the apiserver's ParameterCodec accepted the query
  bool watch = false;
  std::optional<std::string> name;
};

ListOptions decode_list_options(const QueryValues& q) {
  ListOptions o;
  FieldSelector fs;
  fs.ok = true;
  if (q.field_selector) fs = parse_field_selector(*q.field_selector);
  o.decoded = fs.ok && (!q.label_selector || label_selector_parses(*q.label_selector)) &&
              (!q.limit || go_parses_int64(*q.limit)) && (!q.timeout_seconds || go_parses_int64(*q.timeout_seconds));
  if (o.decoded) {
    o.watch = q.watch && *q.watch != "0" && !equal_fold_false(*q.watch);
    o.name = std::move(fs.name);
  } else {
    // Decoding failed: the apiserver still reports a watch, from strings.ToLower of the value.
    o.watch = q.watch && ascii_lower(*q.watch) != "0" && ascii_lower(*q.watch) != "false";
  }
  return o;
}

// --- rule patterns -------------------------------------------------------------------------

constexpr std::array<sv, 9> resource_verbs = {"get", "list", "watch", "create", "update", "patch", "delete",
                                              "deletecollection", "proxy"};
constexpr std::array<sv, 7> non_resource_verbs = {"get", "post", "put", "patch", "delete", "head", "options"};

// One `resources` entry: resource[/subresource][.group].
struct ResourcePattern {
  bool everything = false;  // the single entry `*`
  sv resource, subresource, group;
  bool has_subresource = false;
};

// A DNS-1035-style lowercase name as resources and subresources are spelt, or `*`.
bool is_resource_name(sv s) {
  if (s == "*") return true;
  if (s.empty() || s.size() > 63) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return is_lower_alnum(c) || c == '-'; });
}

// Never throws: a malformed pattern yields an error message.
std::optional<ResourcePattern> parse_resource_pattern(sv entry, std::string* why) {
  ResourcePattern p;
  if (entry == "*") {
    p.everything = true;
    return p;
  }
  sv head = entry;
  if (const std::size_t dot = entry.find('.'); dot != sv::npos) {
    head = entry.substr(0, dot);
    p.group = entry.substr(dot + 1);
    if (p.group != "*" && !is_dns1123_subdomain(p.group)) {
      if (why) *why = "group \"" + std::string(p.group) + "\" is not a DNS subdomain or `*`";
      return std::nullopt;
    }
  }
  if (const std::size_t slash = head.find('/'); slash != sv::npos) {
    p.has_subresource = true;
    p.resource = head.substr(0, slash);
    p.subresource = head.substr(slash + 1);
  } else {
    p.resource = head;
  }
  if (!is_resource_name(p.resource) || (p.has_subresource && !is_resource_name(p.subresource))) {
    if (why)
      *why = "expected resource[/subresource][.group] with lowercase plural names or `*` "
             "(e.g. pods, pods/log, deployments.apps, *.apps)";
    return std::nullopt;
  }
  return p;
}

bool segment_matches(sv pattern, sv value) { return pattern == value || (pattern == "*" && !value.empty()); }

bool resource_matches(const ResourcePattern& p, const KubeAttributes& a) {
  if (p.everything) return true;
  if (p.group != "*" && p.group != a.api_group) return false;
  if (!segment_matches(p.resource, a.resource)) return false;
  if (p.has_subresource != !a.subresource.empty()) return false;
  return !p.has_subresource || segment_matches(p.subresource, a.subresource);
}

// Non-resource URL patterns; see kube.hpp. Empty when valid, else why not.
std::string check_url_pattern(sv pattern) {
  if (pattern.empty() || pattern.front() != '/') return "must start with '/'";
  const std::vector<std::string> segs = split_path(pattern);
  for (std::size_t i = 0; i < segs.size(); ++i) {
    const sv seg = segs[i];
    const bool last = i + 1 == segs.size();
    if (seg == "**" && !last) return "`**` is allowed only as the last segment";
    if (seg == "*" || seg == "**") continue;
    const std::size_t star = seg.find('*');
    if (star == sv::npos) continue;
    if (!last || star + 1 != seg.size()) return "`*` must be a whole segment or end the pattern";
    if (pattern.substr(0, pattern.size() - 1).find('*') != sv::npos)
      return "a prefix pattern (ending in `*`) cannot hold other wildcards";
  }
  if (pattern.find("//") != sv::npos) return "has an empty segment";
  return {};
}

bool url_matches(sv pattern, sv path) {
  if (pattern == path) return true;
  if (!check_url_pattern(pattern).empty()) return false;
  const bool trailing_slash_pattern = pattern.size() > 1 && pattern.back() == '/';
  std::vector<std::string> ps = split_path(pattern);
  const std::vector<std::string> vs = split_path(path);
  if (!ps.empty()) {
    const std::string& last = ps.back();
    if (last == "**") {
      ps.pop_back();
      if (vs.size() < ps.size()) return false;
      for (std::size_t i = 0; i < ps.size(); ++i)
        if (!segment_matches(ps[i], vs[i])) return false;
      return true;
    }
    if (last != "*" && last.back() == '*') return path.starts_with(pattern.substr(0, pattern.size() - 1));
  }
  // Segment by segment; a trailing '/' is significant ("/version/" is not "/version").
  if (trailing_slash_pattern != (path.size() > 1 && path.back() == '/')) return false;
  if (ps.size() != vs.size()) return false;
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (!segment_matches(ps[i], vs[i])) return false;
  return true;
}

template <std::size_t N>
bool known(const std::array<sv, N>& set, sv v) {
  return std::find(set.begin(), set.end(), v) != set.end();
}

template <std::size_t N>
std::string list_of(const std::array<sv, N>& set) {
  std::string out;
  for (sv v : set) {
    if (!out.empty()) out += ", ";
    out += v;
  }
  return out;
}

bool verb_granted(const std::vector<std::string>& verbs, sv verb) {
  return verbs.empty() || contains(verbs, "*") || contains(verbs, verb);
}

// Built-in resources whose storage strategy has AllowCreateOnUpdate() true (Kubernetes 1.32).
constexpr std::array<std::pair<sv, sv>, 14> creates_on_update = {{
    {"", "services"}, {"", "endpoints"}, {"", "events"}, {"", "limitranges"},
    {"rbac.authorization.k8s.io", "roles"}, {"rbac.authorization.k8s.io", "rolebindings"},
    {"rbac.authorization.k8s.io", "clusterroles"}, {"rbac.authorization.k8s.io", "clusterrolebindings"},
    {"coordination.k8s.io", "leases"}, {"policy", "poddisruptionbudgets"}, {"node.k8s.io", "runtimeclasses"},
    {"events.k8s.io", "events"}, {"admissionregistration.k8s.io", "validatingadmissionpolicies"},
    {"admissionregistration.k8s.io", "mutatingadmissionpolicies"},
}};

void fail(std::vector<std::string>* failed, std::string why) {
  if (failed) failed->push_back(std::move(why));
}

// The apiserver cuts the first Content-Type at ';' and compares it exactly with
// application/apply-patch+yaml (or +cbor); every spelling that could be one counts here.
bool is_apply_patch_type(sv content_type) {
  while (!content_type.empty() && (content_type.front() == ' ' || content_type.front() == '\t'))
    content_type.remove_prefix(1);
  return ascii_lower(content_type.substr(0, 23)) == "application/apply-patch";
}

}  // namespace

// --- resolve_kube --------------------------------------------------------------------------

KubeAttributes resolve_kube(sv method, sv path, sv raw_query, sv content_type) {
  KubeAttributes a;
  a.path = std::string(path);
  a.verb = ascii_lower(method);  // non-resource requests: the method, lowercased

  std::vector<std::string> parts = split_path(path);
  if (parts.size() < 3) return a;
  if (parts[0] != "api" && parts[0] != "apis") return a;
  a.api_prefix = parts[0];
  std::size_t at = 1;
  if (a.api_prefix == "apis") {
    // /apis/{group}/{version} is group-version discovery: a non-resource request.
    if (parts.size() - at < 3) return a;
    a.api_group = parts[at++];
  }
  a.is_resource_request = true;
  a.api_version = parts[at++];
  // Go 1.24.12 / 1.25.6 and later read no parameter at all from a query of more than 10000
  // (CVE-2025-61726), older apiservers read them all: the verb would depend on the apiserver's
  // build, so such a request is refused rather than guessed.
  if (std::count(raw_query.begin(), raw_query.end(), '&') + 1 > max_query_params) {
    a.error = "more than " + std::to_string(max_query_params) + " query parameters";
    return a;
  }

  bool verb_from_path = false;
  if (parts[at] == "watch" || parts[at] == "proxy") {
    if (parts.size() - at < 2) {
      a.error = "unable to determine kind and namespace from url " + std::string(path);
      return a;
    }
    a.verb = parts[at++];
    verb_from_path = true;
  } else if (method == "POST") {
    a.verb = "create";
  } else if (method == "GET" || method == "HEAD") {
    a.verb = "get";
  } else if (method == "PUT") {
    a.verb = "update";
  } else if (method == "PATCH") {
    a.verb = "patch";
  } else if (method == "DELETE") {
    a.verb = "delete";
  } else {
    a.verb.clear();
  }

  // namespaces/{ns}/{resource}/...: the parts become relative to the resource, unless the step
  // after the namespace is one of its own subresources (status, finalize).
  if (parts[at] == "namespaces" && parts.size() - at > 1) {
    a.namespace_ = parts[at + 1];
    if (parts.size() - at > 2 && parts[at + 2] != "status" && parts[at + 2] != "finalize") at += 2;
  }
  a.parts.assign(parts.begin() + static_cast<std::ptrdiff_t>(at), parts.end());

  const std::size_t n = a.parts.size();
  if (n >= 3 && a.verb != "proxy") a.subresource = a.parts[2];
  if (n >= 2) a.name = a.parts[1];
  if (n >= 1) a.resource = a.parts[0];

  if (a.name.empty() && a.verb == "get") {
    ListOptions o = decode_list_options(parse_query(raw_query));
    a.verb = o.watch ? "watch" : "list";
    if (o.name && is_valid_path_segment_name(*o.name)) a.name = std::move(*o.name);
  }
  if (a.name.empty() && a.verb == "delete") a.verb = "deletecollection";
  a.apply_patch = a.verb == "patch" && is_apply_patch_type(content_type);

  if (!verb_from_path && (a.verb == "list" || a.verb == "watch" || a.verb == "deletecollection")) {
    QueryValues q = parse_query(raw_query);
    if (q.field_selector) a.field_selector = std::move(*q.field_selector);
    if (q.label_selector) a.label_selector = std::move(*q.label_selector);
  }
  return a;
}

bool is_kube_streaming_subresource(const KubeAttributes& a) {
  if (!a.is_resource_request || !a.api_group.empty()) return false;
  if (a.resource == "pods")
    return a.subresource == "exec" || a.subresource == "attach" || a.subresource == "portforward" ||
           a.subresource == "proxy";
  return (a.resource == "services" || a.resource == "nodes") && a.subresource == "proxy";
}

std::vector<std::string> kube_creates_on_update(const KubeSpec& spec) {
  std::vector<std::string> out;
  if (!verb_granted(spec.verbs, "update") || verb_granted(spec.verbs, "create")) return out;
  for (const auto& entry : spec.resources) {
    auto p = parse_resource_pattern(entry, nullptr);
    if (!p) continue;
    for (const auto& [group, resource] : creates_on_update) {
      KubeAttributes a;
      a.is_resource_request = true;
      a.api_group = std::string(group);
      a.resource = std::string(resource);
      if (resource_matches(*p, a)) {
        out.push_back(entry);
        break;
      }
    }
  }
  return out;
}

bool kube_requires_create(const KubeAttributes& a) {
  if (!a.is_resource_request) return false;
  if (a.apply_patch) return true;
  return a.api_group.empty() && a.resource == "pods" &&
         (a.subresource == "exec" || a.subresource == "attach" || a.subresource == "portforward");
}

// --- match_kube ----------------------------------------------------------------------------

bool match_kube(const KubeSpec& spec, const KubeAttributes& a, std::vector<std::string>* failed) {
  bool ok = true;
  if (!a.error.empty()) {
    fail(failed, "request not resolvable: " + a.error);
    return false;
  }
  if (!spec.non_resource_urls.empty()) {
    if (a.is_resource_request) {
      fail(failed, "rule is for non-resource URLs, request is for " + kube_resource_string(a));
      return false;
    }
    if (!verb_granted(spec.verbs, a.verb)) {
      fail(failed, "verb " + a.verb + " not in " + join(spec.verbs));
      ok = false;
    }
    const bool url_ok = std::any_of(spec.non_resource_urls.begin(), spec.non_resource_urls.end(),
                                    [&](const std::string& p) { return url_matches(p, a.path); });
    if (!url_ok) {
      fail(failed, "path " + a.path + " not in " + join(spec.non_resource_urls));
      ok = false;
    }
    return ok;
  }

  if (!a.is_resource_request) {
    fail(failed, "rule is for resources, request is for non-resource path " + a.path);
    return false;
  }
  if (!verb_granted(spec.verbs, a.verb)) {
    fail(failed, "verb " + (a.verb.empty() ? std::string("(none)") : a.verb) + " not in " + join(spec.verbs));
    ok = false;
  } else if (kube_requires_create(a) && a.verb != "create" && !verb_granted(spec.verbs, "create")) {
    const std::string why =
        a.apply_patch ? "a server-side apply creates a missing object" : "pods/" + a.subresource + " requires create";
    fail(failed, "verb create not in " + join(spec.verbs) + " (" + why + ")");
    ok = false;
  }
  if (!spec.resources.empty()) {
    const bool res_ok = std::any_of(spec.resources.begin(), spec.resources.end(), [&](const std::string& e) {
      auto p = parse_resource_pattern(e, nullptr);
      return p && resource_matches(*p, a);
    });
    if (!res_ok) {
      fail(failed, "resource " + kube_resource_string(a) + " not in " + join(spec.resources));
      ok = false;
    }
  }
  if (!spec.namespaces.empty()) {
    const bool ns_ok = contains(spec.namespaces, a.namespace_) ||
                       (!a.namespace_.empty() && contains(spec.namespaces, "*"));
    if (!ns_ok) {
      fail(failed, (a.namespace_.empty() ? std::string("cluster scope") : "namespace " + a.namespace_) +
                       " not in " + join(spec.namespaces));
      ok = false;
    }
  }
  if (!spec.names.empty()) {
    // A create names its object in the body. RequestInfo takes a name from the URL of a POST
    // too (/apis/G/V/namespaces/NS/widgets/mine), and a custom resource's handler serves that as
    // a create whose object is named by the body alone (handlers/create.go): such a name is not
    // the object's. A subresource's create (pods/x/eviction, serviceaccounts/x/token, pods/x/exec)
    // does act on the object in the URL.
    if (a.verb == "create" && a.subresource.empty() && !a.name.empty()) {
      fail(failed, "name " + a.name + " is not the object's (a create takes its name from the body)");
      ok = false;
    } else if (!contains(spec.names, a.name)) {
      fail(failed, (a.name.empty() ? std::string("no name") : "name " + a.name) + " not in " + join(spec.names));
      ok = false;
    }
  }
  return ok;
}

// --- validate_kube_spec --------------------------------------------------------------------

void validate_kube_spec(const KubeSpec& spec) {
  auto bad = [](const std::string& what, const char* field, std::size_t index) {
    throw KubeSpecError(what, field, index);
  };
  const bool non_resource = !spec.non_resource_urls.empty();
  if (non_resource && (!spec.resources.empty() || !spec.namespaces.empty() || !spec.names.empty()))
    bad("non_resource_urls cannot be combined with resources, namespaces or names (use two rules)",
        "non_resource_urls", 0);
  for (std::size_t i = 0; i < spec.verbs.size(); ++i) {
    const std::string& v = spec.verbs[i];
    if (v == "*") continue;
    if (non_resource ? known(non_resource_verbs, v) : known(resource_verbs, v)) continue;
    std::string msg = "unknown verb \"" + v + "\"";
    if (ascii_lower(v) != v) msg += " (verbs are lowercase)";
    msg += non_resource ? "; with non_resource_urls, expected one of: " + list_of(non_resource_verbs)
                        : "; expected one of: " + list_of(resource_verbs);
    bad(msg + ", *", "verbs", i);
  }
  for (std::size_t i = 0; i < spec.resources.size(); ++i) {
    std::string why;
    if (!parse_resource_pattern(spec.resources[i], &why))
      bad("bad resource \"" + spec.resources[i] + "\": " + why, "resources", i);
  }
  for (std::size_t i = 0; i < spec.namespaces.size(); ++i) {
    const std::string& ns = spec.namespaces[i];
    if (ns.empty() || ns == "*") continue;
    if (ns.size() > 63 || !is_lower_alnum(ns.front()) || !is_lower_alnum(ns.back()) ||
        !std::all_of(ns.begin(), ns.end(), [](char c) { return is_lower_alnum(c) || c == '-'; }))
      bad("bad namespace \"" + ns + "\": expected a DNS label, \"\" (cluster scope) or `*`", "namespaces", i);
  }
  for (std::size_t i = 0; i < spec.names.size(); ++i) {
    const std::string& name = spec.names[i];
    if (name.empty() || !is_valid_path_segment_name(name))
      bad("bad name \"" + name + "\": names are non-empty and hold no '/' or '%' (and are not . or ..)", "names", i);
  }
  for (std::size_t i = 0; i < spec.non_resource_urls.size(); ++i) {
    const std::string& u = spec.non_resource_urls[i];
    if (std::string why = check_url_pattern(u); !why.empty())
      bad("bad non_resource_url \"" + u + "\": " + why, "non_resource_urls", i);
  }
}

// --- describe ------------------------------------------------------------------------------

std::string kube_resource_string(const KubeAttributes& a) {
  if (!a.is_resource_request) return {};
  std::string out = a.resource;
  if (!a.subresource.empty()) out += "/" + a.subresource;
  if (!a.api_group.empty()) out += "." + a.api_group;
  return out;
}

std::string describe(const KubeAttributes& a) {
  const std::string verb = a.verb.empty() ? std::string("(no verb)") : a.verb;
  if (!a.is_resource_request) return verb + " path " + quoted(a.path);
  std::string out = verb + " " + kube_resource_string(a);
  if (!a.name.empty()) out += " " + quoted(a.name);
  if (!a.namespace_.empty()) out += " in namespace " + quoted(a.namespace_);
  else out += " at the cluster scope";
  return out;
}

}  // namespace portcullis::policy
