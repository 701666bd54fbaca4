// A strict JSON reader for Docker bodies. Boost.JSON's value parser keeps the last of duplicate
// keys, and Go's decoder matches keys case-insensitively; `"privileged": true` after
// `"Privileged": false` looks harmless to a case-sensitive reader and is privileged to dockerd.
// So we build a small tree from boost::json::basic_parser events and refuse every duplicate key,
// compared as Go compares them.
#include <boost/json/basic_parser_impl.hpp>

#include <new>
#include <unordered_set>

#include "proxy/policy/docker_internal.hpp"

namespace portcullis::policy::docker_detail {
namespace {

constexpr std::size_t kMaxDepth = 64;

class TreeBuilder {
 public:
  static constexpr std::size_t max_object_size = 1u << 20;
  static constexpr std::size_t max_array_size = 1u << 20;
  static constexpr std::size_t max_key_size = 1u << 20;
  static constexpr std::size_t max_string_size = 1u << 26;

  std::optional<JsonValue> root;
  std::string error;  // set when a handler refuses (duplicate key)

  bool on_document_begin(boost::json::error_code&) { return true; }
  bool on_document_end(boost::json::error_code&) { return true; }
  bool on_array_begin(boost::json::error_code&) {
    push(JsonValue::Kind::array);
    return true;
  }
  bool on_array_end(std::size_t, boost::json::error_code&) {
    stack_.pop_back();
    return true;
  }
  bool on_object_begin(boost::json::error_code&) {
    push(JsonValue::Kind::object);
    keys_.emplace_back();
    return true;
  }
  bool on_object_end(std::size_t, boost::json::error_code&) {
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }
  bool on_string_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    part_.append(s.data(), s.size());
    return true;
  }
  bool on_string(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    part_.append(s.data(), s.size());
    JsonValue& v = push(JsonValue::Kind::string);
    v.text = std::move(part_);
    part_.clear();
    stack_.pop_back();
    return true;
  }
  bool on_key_part(boost::json::string_view s, std::size_t, boost::json::error_code&) {
    part_.append(s.data(), s.size());
    return true;
  }
  bool on_key(boost::json::string_view s, std::size_t, boost::json::error_code& ec) {
    part_.append(s.data(), s.size());
    std::string folded = fold_key(part_);
    if (!keys_.back().insert(folded).second) {
      error = "duplicate key \"" + part_ + "\"" + where() +
              " (Docker reads keys case-insensitively and keeps the last one)";
      ec = boost::json::error::syntax;
      return false;
    }
    folded_ = std::move(folded);
    key_ = std::move(part_);
    part_.clear();
    return true;
  }
  bool on_number_part(boost::json::string_view s, boost::json::error_code&) {
    part_.append(s.data(), s.size());
    return true;
  }
  bool on_int64(std::int64_t i, boost::json::string_view s, boost::json::error_code&) {
    JsonValue& v = number(s);
    v.integral = true;
    v.integer = i;
    return true;
  }
  bool on_uint64(std::uint64_t, boost::json::string_view s, boost::json::error_code&) {
    number(s);  // beyond int64: never a valid port, count, ...
    return true;
  }
  bool on_double(double, boost::json::string_view s, boost::json::error_code&) {
    number(s);
    return true;
  }
  bool on_bool(bool b, boost::json::error_code&) {
    push(JsonValue::Kind::boolean).boolean = b;
    stack_.pop_back();
    return true;
  }
  bool on_null(boost::json::error_code&) {
    push(JsonValue::Kind::null);
    stack_.pop_back();
    return true;
  }
  bool on_comment_part(boost::json::string_view, boost::json::error_code&) { return true; }
  bool on_comment(boost::json::string_view, boost::json::error_code&) { return true; }

 private:
  // Only the innermost open container ever grows, so the pointers to the outer ones stay valid.
  JsonValue& push(JsonValue::Kind kind) {
    JsonValue* v = nullptr;
    if (stack_.empty()) {
      root.emplace();
      v = &*root;
    } else if (JsonValue* parent = stack_.back(); parent->kind == JsonValue::Kind::object) {
      parent->members.push_back(JsonMember{std::move(key_), std::move(folded_), {}});
      key_.clear();
      folded_.clear();
      v = &parent->members.back().value;
    } else {
      parent->items.emplace_back();
      v = &parent->items.back();
    }
    v->kind = kind;
    stack_.push_back(v);
    return *v;
  }
  JsonValue& number(boost::json::string_view s) {
    part_.append(s.data(), s.size());
    JsonValue& v = push(JsonValue::Kind::number);
    v.text = std::move(part_);
    part_.clear();
    stack_.pop_back();
    return v;
  }
  std::string where() const {
    // The keys of the open objects, outermost first, as a dotted path.
    std::string path;
    for (std::size_t i = 1; i < stack_.size(); ++i) {
      const JsonValue* parent = stack_[i - 1];
      if (parent->kind != JsonValue::Kind::object || parent->members.empty()) continue;
      if (!path.empty()) path += '.';
      path += parent->members.back().key;
    }
    return path.empty() ? std::string(" at the top level") : " in " + path;
  }

  std::vector<JsonValue*> stack_;
  std::vector<std::unordered_set<std::string>> keys_;  // folded keys seen, per open object
  std::string part_, key_, folded_;
};

}  // namespace

std::string fold_key(std::string_view key) {
  std::string out;
  out.reserve(key.size());
  for (std::size_t i = 0; i < key.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(key[i]);
    if (c >= 'A' && c <= 'Z') {
      out += static_cast<char>(c - 'A' + 'a');
    } else if (c == 0xC5 && i + 1 < key.size() && static_cast<unsigned char>(key[i + 1]) == 0xBF) {
      out += 's';  // U+017F LATIN SMALL LETTER LONG S folds to s
      ++i;
    } else if (c == 0xE2 && i + 2 < key.size() && static_cast<unsigned char>(key[i + 1]) == 0x84 &&
               static_cast<unsigned char>(key[i + 2]) == 0xAA) {
      out += 'k';  // U+212A KELVIN SIGN folds to k
      i += 2;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

const JsonValue* JsonValue::find(std::string_view key) const {
  if (kind != Kind::object) return nullptr;
  std::string folded = fold_key(key);
  for (const JsonMember& m : members)
    if (m.folded_key == folded) return &m.value;
  return nullptr;
}

std::optional<JsonValue> parse_json_strict(std::string_view text, std::string& error) {
  try {
    boost::json::parse_options opt;
    opt.max_depth = kMaxDepth;  // comments, trailing commas, invalid UTF-8: all refused (defaults)
    boost::json::basic_parser<TreeBuilder> parser(opt);
    boost::json::error_code ec;
    std::size_t n = parser.write_some(false, text.data(), text.size(), ec);
    if (!parser.handler().error.empty()) {
      error = parser.handler().error;
      return std::nullopt;
    }
    if (ec) {
      error = "the body is not valid JSON (" + ec.message() + " at byte " + std::to_string(n) + ")";
      return std::nullopt;
    }
    std::string_view rest = text.substr(n);
    if (rest.find_first_not_of(" \t\r\n") != std::string_view::npos) {
      // dockerd would decode the first value and ignore the rest; we refuse the ambiguity.
      error = "the body has data after its JSON value";
      return std::nullopt;
    }
    if (!parser.handler().root) {
      error = "the body is not valid JSON";
      return std::nullopt;
    }
    return std::move(parser.handler().root);
  } catch (const std::bad_alloc&) {
    error = "the body is too large to inspect";
  } catch (const std::exception& e) {
    error = std::string("the body cannot be inspected: ") + e.what();
  }
  return std::nullopt;
}

}  // namespace portcullis::policy::docker_detail
