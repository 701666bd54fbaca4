// Image references as Docker reads them (the grammar of distribution/reference, normalised as
// ParseNormalizedNamed does), and the `images:` patterns that judge them.
#include <algorithm>
#include <cctype>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/docker_internal.hpp"

namespace portcullis::policy {
namespace {

constexpr std::size_t kNameTotalLengthMax = 255;

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool is_word(char c) { return is_alnum(c) || c == '_'; }
bool is_lower_hex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// [a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*
bool valid_path_component(std::string_view s) {
  std::size_t i = 0;
  auto alnum_run = [&] {
    std::size_t start = i;
    while (i < s.size() && is_lower_alnum(s[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < s.size()) {
    if (s[i] == '.') {
      ++i;
    } else if (s[i] == '_') {
      i += (i + 1 < s.size() && s[i + 1] == '_') ? 2 : 1;
    } else if (s[i] == '-') {
      while (i < s.size() && s[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// host (dot-separated labels of [a-zA-Z0-9-], not starting or ending with '-') or [ipv6],
// optionally :port
bool valid_domain(std::string_view s) {
  std::string_view host = s, port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close < 2) return false;
    std::string_view inside = s.substr(1, close - 1);
    if (!std::all_of(inside.begin(), inside.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == ':'; }))
      return false;
    std::string_view after = s.substr(close + 1);
    if (!after.empty() && after.front() != ':') return false;
    port = after.empty() ? after : after.substr(1);
    if (!after.empty() && port.empty()) return false;
    host = {};
  } else if (auto colon = s.find(':'); colon != std::string_view::npos) {
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (port.empty()) return false;
  }
  if (!std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  if (s.front() == '[') return true;
  if (host.empty()) return false;
  while (true) {
    auto dot = host.find('.');
    std::string_view label = host.substr(0, dot);
    if (label.empty() || !is_alnum(label.front()) || !is_alnum(label.back())) return false;
    if (!std::all_of(label.begin(), label.end(), [](char c) { return is_alnum(c) || c == '-'; })) return false;
    if (dot == std::string_view::npos) return true;
    host.remove_prefix(dot + 1);
  }
}

// [\w][\w.-]{0,127}
bool valid_tag(std::string_view s) {
  return !s.empty() && s.size() <= 128 && is_word(s.front()) &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_word(c) || c == '.' || c == '-'; });
}

// The algorithms dockerd accepts (go-digest): lowercase hex of the right length.
bool valid_digest(std::string_view s) {
  auto colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view algorithm = s.substr(0, colon), hex = s.substr(colon + 1);
  std::size_t want = algorithm == "sha256" ? 64 : algorithm == "sha384" ? 96 : algorithm == "sha512" ? 128 : 0;
  return want != 0 && hex.size() == want && is_lower_hex(hex);
}

// dockerd resolves `sha256:...`, a 64-hex ID and a hex prefix of an ID to a local image whatever
// its name, so any all-hex reference is treated as an ID (a name like "cafe" too: write
// docker.io/library/cafe instead).
bool looks_like_id(std::string_view s) { return s.starts_with("sha256:") || is_lower_hex(s); }

}  // namespace

std::string ImageReference::name() const { return domain + "/" + path; }

std::string ImageReference::str() const {
  if (is_id) return digest;
  std::string s = name();
  if (!tag.empty()) s += ":" + tag;
  if (!digest.empty()) s += "@" + digest;
  return s;
}

ImageReference parse_image_reference(std::string_view ref, bool default_latest) {
  ImageReference r;
  auto fail = [&](std::string why) {
    r.error = std::move(why);
    return r;
  };
  if (ref.empty()) return fail("empty image reference");
  if (looks_like_id(ref)) {
    r.ok = r.is_id = true;
    r.digest = std::string(ref);
    return r;
  }
  std::string_view rest = ref;
  if (auto at = rest.find('@'); at != std::string_view::npos) {
    r.digest = std::string(rest.substr(at + 1));
    rest = rest.substr(0, at);
    if (!valid_digest(r.digest)) return fail("invalid digest \"" + r.digest + "\"");
  }
  auto colon = rest.rfind(':');
  if (colon != std::string_view::npos && rest.find('/', colon) == std::string_view::npos) {
    r.tag = std::string(rest.substr(colon + 1));
    rest = rest.substr(0, colon);
    if (!valid_tag(r.tag)) return fail("invalid tag \"" + r.tag + "\"");
  }
  if (rest.empty()) return fail("empty repository name");
  if (rest.size() > kNameTotalLengthMax) return fail("repository name longer than 255 characters");
  auto slash = rest.find('/');
  std::string_view first = rest.substr(0, slash);
  bool has_domain = slash != std::string_view::npos &&
                    (first.find_first_of(".:") != std::string_view::npos || first == "localhost" ||
                     std::any_of(first.begin(), first.end(), [](char c) { return std::isupper(static_cast<unsigned char>(c)); }));
  if (has_domain) {
    r.domain = std::string(first);
    r.path = std::string(rest.substr(slash + 1));
    if (!valid_domain(r.domain)) return fail("invalid registry \"" + r.domain + "\"");
  } else {
    r.domain = "docker.io";
    r.path = std::string(rest);
  }
  if (r.domain == "index.docker.io") r.domain = "docker.io";
  if (r.domain == "docker.io" && r.path.find('/') == std::string::npos) r.path = "library/" + r.path;
  std::string_view path = r.path;
  while (true) {
    auto s = path.find('/');
    if (!valid_path_component(path.substr(0, s)))
      return fail("invalid repository name \"" + r.path + "\" (lowercase letters, digits and . _ - only)");
    if (s == std::string_view::npos) break;
    path.remove_prefix(s + 1);
  }
  if (r.tag.empty() && r.digest.empty() && default_latest) r.tag = "latest";
  r.ok = true;
  return r;
}

bool image_pattern_matches(std::string_view pattern, const ImageReference& image) {
  if (!image.ok || image.is_id) return false;
  if (pattern == "*" || pattern == "**") return true;
  std::string_view name = pattern, tag, digest;
  if (auto at = name.find('@'); at != std::string_view::npos) {
    digest = name.substr(at + 1);
    name = name.substr(0, at);
  }
  auto colon = name.rfind(':');
  if (colon != std::string_view::npos && name.find('/', colon) == std::string_view::npos) {
    tag = name.substr(colon + 1);
    name = name.substr(0, colon);
  }
  if (!docker_detail::glob_segments(name, image.name())) return false;
  if (!tag.empty() && (image.tag.empty() || !docker_detail::glob_segments(tag, image.tag))) return false;
  if (!digest.empty() && image.digest != digest) return false;
  return true;
}

namespace docker_detail {

DockerImage run_image(std::string where, std::string_view given) {
  DockerImage img{std::move(where), std::string(given), {}, false, {}};
  if (given.empty()) {
    img.error = "no image given";
    return img;
  }
  ImageReference r = parse_image_reference(given, true);
  img.is_id = r.is_id;
  img.error = r.error;
  if (r.ok && !r.is_id) img.name = r.str();
  return img;
}

DockerImage pull_image(std::string_view from_image, std::string_view tag) {
  std::string given(from_image);
  if (!tag.empty()) given += " (tag " + std::string(tag) + ")";
  DockerImage img{"fromImage", given, {}, false, {}};
  ImageReference r = parse_image_reference(from_image, false);
  if (r.ok && !r.is_id && !tag.empty()) {
    // dockerd replaces whatever tag or digest fromImage had with the `tag` parameter.
    r.tag.clear();
    r.digest.clear();
    if (valid_digest(tag)) {
      r.digest = std::string(tag);
    } else if (valid_tag(tag)) {
      r.tag = std::string(tag);
    } else {
      r.ok = false;
      r.error = "invalid tag \"" + std::string(tag) + "\"";
    }
  }
  img.is_id = r.is_id;
  img.error = r.error;
  if (r.ok && !r.is_id) img.name = r.str();  // no tag at all: a pull of every tag
  return img;
}

}  // namespace docker_detail
}  // namespace portcullis::policy
