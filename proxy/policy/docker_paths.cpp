// Host paths of bind mounts: where they land on the gateway host, and the segment globs of
// `bind_sources` (and of image names).
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <memory>

#include "proxy/policy/docker.hpp"
#include "proxy/policy/docker_internal.hpp"

namespace portcullis::policy {

std::optional<std::string> system_realpath(std::string_view path) {
  std::string p(path);
  if (p.empty() || p.find('\0') != std::string::npos) return std::nullopt;
  std::unique_ptr<char, decltype(&std::free)> resolved(::realpath(p.c_str(), nullptr), &std::free);
  if (!resolved) return std::nullopt;
  return std::string(resolved.get());
}

namespace docker_detail {
namespace {

std::vector<std::string_view> split_path(std::string_view p) {
  std::vector<std::string_view> out;
  while (!p.empty()) {
    auto slash = p.find('/');
    std::string_view part = p.substr(0, slash);
    if (!part.empty()) out.push_back(part);
    if (slash == std::string_view::npos) break;
    p.remove_prefix(slash + 1);
  }
  return out;
}

std::string join_path(std::string base, const std::vector<std::string_view>& parts, std::size_t from) {
  for (std::size_t i = from; i < parts.size(); ++i) {
    if (base.empty() || base.back() != '/') base += '/';
    base += parts[i];
  }
  return base.empty() ? "/" : base;
}

// The host path `path` reaches: realpath of the longest prefix that exists, plus the rest, which
// cannot hold symlinks since it does not exist yet (dockerd creates missing Binds sources).
std::optional<std::string> resolve_existing_prefix(std::string_view path, const RealpathFn& realpath,
                                                   std::string& error) {
  if (auto r = realpath(path)) return r;
  auto parts = split_path(path);
  for (std::size_t keep = parts.size(); keep-- > 0;) {
    std::vector<std::string_view> head(parts.begin(), parts.begin() + static_cast<long>(keep));
    auto base = realpath(join_path("/", head, 0));
    if (!base) continue;
    std::vector<std::string_view> rest(parts.begin() + static_cast<long>(keep), parts.end());
    for (std::string_view part : rest) {
      if (part == "..") {
        error = "it does not exist and has \"..\" after the missing part";
        return std::nullopt;
      }
    }
    std::vector<std::string_view> kept;
    for (std::string_view part : rest)
      if (part != ".") kept.push_back(part);
    return join_path(*base, kept, 0);
  }
  error = "it cannot be resolved on this host";
  return std::nullopt;
}

// `ancestor` is `path` or a directory above it.
bool is_same_or_above(std::string_view ancestor, std::string_view path) {
  if (ancestor == "/" || ancestor == path) return true;
  return path.size() > ancestor.size() && path.starts_with(ancestor) && path[ancestor.size()] == '/';
}

bool star_match(std::string_view pattern, std::string_view text) {
  // `*` matches any run of characters (within one segment: callers split on '/').
  std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool glob_parts(const std::vector<std::string_view>& pat, std::size_t i, const std::vector<std::string_view>& sub,
                std::size_t j) {
  if (i == pat.size()) return j == sub.size();
  if (pat[i] == "**") {
    for (std::size_t k = j; k <= sub.size(); ++k)
      if (glob_parts(pat, i + 1, sub, k)) return true;
    return false;
  }
  return j < sub.size() && star_match(pat[i], sub[j]) && glob_parts(pat, i + 1, sub, j + 1);
}

}  // namespace

std::string lexically_clean(std::string_view absolute_path) {
  std::vector<std::string_view> out;
  for (std::string_view part : split_path(absolute_path)) {
    if (part == ".") continue;
    if (part == "..") {
      if (!out.empty()) out.pop_back();
      continue;
    }
    out.push_back(part);
  }
  return join_path("/", out, 0);
}

void resolve_bind(DockerBind& bind, const DockerHostPaths& host) {
  const std::string& src = bind.source;
  if (src.empty() || src.front() != '/') {
    bind.error = "it is not an absolute path";
    return;
  }
  if (src.find('\0') != std::string::npos) {
    bind.error = "it contains a NUL byte";
    return;
  }
  // The kernel resolves `..` after following symlinks; a cleaner would drop it first. Both
  // readings must be inside bind_sources.
  for (const std::string& candidate : {src, lexically_clean(src)}) {
    std::string error;
    auto resolved = resolve_existing_prefix(candidate, host.realpath, error);
    if (!resolved) {
      bind.error = error;
      return;
    }
    if (std::find(bind.resolved.begin(), bind.resolved.end(), *resolved) == bind.resolved.end())
      bind.resolved.push_back(*resolved);
  }
  std::vector<std::string> sockets{"/var/run/docker.sock", "/run/docker.sock"};
  sockets.insert(sockets.end(), host.docker_sockets.begin(), host.docker_sockets.end());
  std::size_t given = sockets.size();
  for (std::size_t i = 0; i < given; ++i)
    if (auto r = host.realpath(sockets[i])) sockets.push_back(*r);
  for (const std::string& resolved : bind.resolved)
    for (const std::string& socket : sockets)
      if (is_same_or_above(resolved, socket)) bind.docker_socket = true;
}

bool glob_segments(std::string_view pattern, std::string_view subject) {
  bool pattern_abs = pattern.starts_with('/'), subject_abs = subject.starts_with('/');
  if (pattern_abs != subject_abs) return false;
  return glob_parts(split_path(pattern), 0, split_path(subject), 0);
}

}  // namespace docker_detail
}  // namespace portcullis::policy
