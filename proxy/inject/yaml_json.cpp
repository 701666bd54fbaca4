#include "proxy/inject/yaml_json.hpp"

#include <boost/json.hpp>
#include <charconv>
#include <cmath>
#include <regex>
#include <set>

namespace portcullis::inject {
namespace json = boost::json;

namespace {

// go-yaml v2's booleans (YAML 1.1), which kubectl uses.
const std::set<std::string, std::less<>> kTrue = {"y",    "Y",    "yes", "Yes", "YES", "true",
                                                  "True", "TRUE", "on",  "On",  "ON"};
const std::set<std::string, std::less<>> kFalse = {"n",     "N",     "no",  "No",  "NO", "false",
                                                   "False", "FALSE", "off", "Off", "OFF"};
const std::set<std::string, std::less<>> kNull = {"", "~", "null", "Null", "NULL"};

bool parse_integer(const std::string& s, json::value& out) {
  static const std::regex re(R"(^[-+]?(0|[1-9][0-9_]*|0[0-7_]+|0o[0-7]+|0x[0-9a-fA-F_]+|0b[01_]+)$)");
  if (!std::regex_match(s, re)) return false;
  std::string t;
  for (char c : s)
    if (c != '_') t += c;
  bool negative = t[0] == '-';
  if (t[0] == '-' || t[0] == '+') t.erase(0, 1);
  int base = 10;
  if (t.size() > 1 && t[0] == '0') {
    if (t[1] == 'x')
      base = 16, t.erase(0, 2);
    else if (t[1] == 'b')
      base = 2, t.erase(0, 2);
    else if (t[1] == 'o')
      base = 8, t.erase(0, 2);
    else
      base = 8, t.erase(0, 1);
  }
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v, base);
  if (ec != std::errc() || p != t.data() + t.size()) return false;  // too large: stays a string
  if (negative) {
    if (v > std::uint64_t(INT64_MAX) + 1) return false;
    out = v == std::uint64_t(INT64_MAX) + 1 ? INT64_MIN : -static_cast<std::int64_t>(v);
  } else if (v <= std::uint64_t(INT64_MAX)) {
    out = static_cast<std::int64_t>(v);
  } else {
    out = v;
  }
  return true;
}

bool parse_float(const std::string& s, json::value& out) {
  static const std::regex re(R"(^[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+]?[0-9]+)?$|^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$)");
  static const std::regex special(R"(^([-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$)");
  if (std::regex_match(s, special)) {
    if (s.find("nan") != std::string::npos || s.find("NaN") != std::string::npos || s.find("NAN") != std::string::npos)
      out = std::nan("");
    else
      out = s[0] == '-' ? -HUGE_VAL : HUGE_VAL;
    return true;
  }
  if (s == "." || !std::regex_match(s, re)) return false;
  std::string t;
  for (char c : s)
    if (c != '_') t += c;
  if (t[0] == '+') t.erase(0, 1);
  double d = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), d);
  if (ec != std::errc() || p != t.data() + t.size()) return false;
  out = d;
  return true;
}

// What a plain (unquoted) scalar means.
json::value resolve_plain(const std::string& s) {
  if (kNull.count(s)) return nullptr;
  if (kTrue.count(s)) return true;
  if (kFalse.count(s)) return false;
  json::value v;
  if (parse_integer(s, v) || parse_float(s, v)) return v;
  return json::string(s);
}

json::value scalar(const YAML::Node& n) {
  const std::string& tag = n.Tag();
  const std::string& s = n.Scalar();
  if (tag == "!" || tag == "tag:yaml.org,2002:str" || tag == "tag:yaml.org,2002:binary") return json::string(s);
  json::value v = resolve_plain(s);
  if (tag == "?" || tag.empty()) return v;
  auto wrong = [&](const char* type) { return YAML::ParserException(n.Mark(), "'" + s + "' is not a valid " + type); };
  if (tag == "tag:yaml.org,2002:int") {
    if (!v.is_int64() && !v.is_uint64()) throw wrong("!!int");
    return v;
  }
  if (tag == "tag:yaml.org,2002:float") {
    if (v.is_int64()) return double(v.as_int64());
    if (!v.is_double()) throw wrong("!!float");
    return v;
  }
  if (tag == "tag:yaml.org,2002:bool") {
    if (!v.is_bool()) throw wrong("!!bool");
    return v;
  }
  if (tag == "tag:yaml.org,2002:null") return nullptr;
  throw YAML::ParserException(n.Mark(), "unsupported tag " + tag);
}

std::string number_text(const json::value& v) {
  if (v.is_int64()) return std::to_string(v.as_int64());
  if (v.is_uint64()) return std::to_string(v.as_uint64());
  double d = v.as_double();
  if (std::isnan(d)) return ".nan";
  if (std::isinf(d)) return d < 0 ? "-.inf" : ".inf";
  char buf[64];
  auto [p, ec] = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, p);
  // YAML 1.1 needs a dot for a float ("1e+06" would read back as a string).
  if (s.find_first_of(".") == std::string::npos) {
    auto e = s.find_first_of("eE");
    if (e == std::string::npos)
      s += ".0";
    else
      s.insert(e, ".0");
  }
  return s;
}

void emit(YAML::Emitter& out, const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      out << YAML::Null;
      break;
    case json::kind::bool_:
      out << (v.get_bool() ? "true" : "false");
      break;
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_:
      out << number_text(v);
      break;
    case json::kind::string: {
      std::string s(v.get_string());
      // A string that a reader would take for something else is quoted.
      if (!resolve_plain(s).is_string())
        out << YAML::DoubleQuoted << s;
      else if (s.find('\n') != std::string::npos && s.find_first_of("\t\r") == std::string::npos && s.back() == '\n' &&
               (s.size() < 2 || s[s.size() - 2] != '\n') && s.find(" \n") == std::string::npos && s.front() != ' ')
        out << YAML::Literal << s;
      else
        out << s;
      break;
    }
    case json::kind::array:
      if (v.get_array().empty()) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        break;
      }
      out << YAML::BeginSeq;
      for (const auto& e : v.get_array()) emit(out, e);
      out << YAML::EndSeq;
      break;
    case json::kind::object:
      if (v.get_object().empty()) {
        out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
        break;
      }
      out << YAML::BeginMap;
      for (const auto& [k, e] : v.get_object()) {
        std::string key(k);
        out << YAML::Key;
        if (!resolve_plain(key).is_string()) out << YAML::DoubleQuoted;
        out << key << YAML::Value;
        emit(out, e);
      }
      out << YAML::EndMap;
      break;
  }
}

}  // namespace

json::value yaml_to_json(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nullptr;
    case YAML::NodeType::Scalar:
      return scalar(node);
    case YAML::NodeType::Sequence: {
      json::array a;
      for (const auto& e : node) a.push_back(yaml_to_json(e));
      return a;
    }
    case YAML::NodeType::Map: {
      json::object o;
      for (const auto& kv : node) {
        if (!kv.first.IsScalar()) throw YAML::ParserException(kv.first.Mark(), "a mapping key must be a scalar");
        const std::string& key = kv.first.Scalar();
        if (o.contains(key)) throw YAML::ParserException(kv.first.Mark(), "duplicate key '" + key + "'");
        o[key] = yaml_to_json(kv.second);
      }
      return o;
    }
  }
  return nullptr;
}

std::string json_to_yaml(const json::value& value) {
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetSeqFormat(YAML::Block);
  out.SetMapFormat(YAML::Block);
  emit(out, value);
  std::string s = out.c_str();
  if (s.empty() || s.back() != '\n') s += '\n';
  return s;
}

YAML::Mark mark_at(const YAML::Node& root, const JsonPath& path) {
  YAML::Node cur = root;
  YAML::Mark mark = root.Mark();
  for (const auto& step : path) {
    YAML::Node next;
    if (const auto* key = std::get_if<std::string>(&step)) {
      if (!cur.IsMap()) break;
      bool found = false;
      for (const auto& kv : cur)
        if (kv.first.IsScalar() && kv.first.Scalar() == *key) {
          next = kv.second;
          // A null value has no useful mark of its own: point at its key.
          mark = kv.second.IsNull() ? kv.first.Mark() : kv.second.Mark();
          found = true;
          break;
        }
      if (!found) break;
    } else {
      std::size_t i = std::get<std::size_t>(step);
      if (!cur.IsSequence() || i >= cur.size()) break;
      next = static_cast<const YAML::Node&>(cur)[i];
      mark = next.Mark();
    }
    cur.reset(next);
  }
  return mark;
}

std::string path_text(const JsonPath& path) {
  std::string s;
  for (const auto& step : path) {
    if (const auto* key = std::get_if<std::string>(&step)) {
      if (!s.empty()) s += '.';
      s += *key;
    } else {
      s += "[" + std::to_string(std::get<std::size_t>(step)) + "]";
    }
  }
  return s;
}

}  // namespace portcullis::inject
