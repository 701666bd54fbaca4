#pragma once
// Shared between the docker_*.cpp files; not an interface for other areas (use docker.hpp).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/policy/docker.hpp"

namespace portcullis::policy::docker_detail {

// --- query strings, parsed as Go's url.ParseQuery (dockerd's reading of them) ---
using QueryValues = std::vector<std::pair<std::string, std::string>>;
std::optional<std::string> percent_decode(std::string_view s, bool plus_is_space);
std::optional<QueryValues> parse_query(std::string_view raw);  // nullopt where Go reports an error
const std::string* query_get(const QueryValues& q, std::string_view key);  // first value, as Form.Get

// --- images ---
DockerImage run_image(std::string where, std::string_view given);  // an image run or mounted
DockerImage pull_image(std::string_view from_image, std::string_view tag);  // POST /images/create

// --- namespaces: "host" or "container:<id>" (joining another container's namespaces) ---
bool is_shared_namespace(std::string_view mode);

// --- JSON as Docker's Go decoder reads it ---
struct JsonMember;
struct JsonValue {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  bool boolean = false;
  bool integral = false;  // number without fraction or exponent that fits in int64
  std::int64_t integer = 0;
  std::string text;  // string value; a number's literal
  std::vector<JsonValue> items;
  std::vector<JsonMember> members;
  // Go's encoding/json matches struct fields case-insensitively (with Unicode simple folding).
  const JsonValue* find(std::string_view key) const;
};
struct JsonMember {
  std::string key;
  std::string folded_key;  // fold_key(key)
  JsonValue value;
};
// Go's folding of a key as far as it can matter for ASCII field names: ASCII letters lowercased,
// U+017F (long s) -> 's', U+212A (Kelvin sign) -> 'k'.
std::string fold_key(std::string_view key);
// Strict parse: one JSON value, nothing but whitespace after it, no duplicate keys at any depth
// (compared folded), valid UTF-8, bounded depth. On failure returns nullopt and sets `error`.
std::optional<JsonValue> parse_json_strict(std::string_view text, std::string& error);

// --- host paths ---
std::string lexically_clean(std::string_view absolute_path);
// Fills bind.resolved / bind.error / bind.docker_socket.
void resolve_bind(DockerBind& bind, const DockerHostPaths& host);
// Segment glob: `*` matches within one segment, a `**` segment any number of segments (even none).
// Validated patterns have `**` only as their last segment, which keeps matching linear.
bool glob_segments(std::string_view pattern, std::string_view subject);

extern const char* const kDocsNotes;

}  // namespace portcullis::policy::docker_detail
