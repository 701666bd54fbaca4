#include "proxy/observe/access_log.hpp"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>

namespace portcullis::observe {
namespace {

struct Sink {
  std::mutex mu;
  std::string target = "stdout";
  int fd = STDOUT_FILENO;
  bool off = false;
  std::uint64_t lost = 0;  // lines that could not be written
  int last_error = 0;      // the errno last reported, so a failing sink is not reported per line
};
Sink& sink() {
  static Sink s;
  return s;
}

// Opens s.target; on failure keeps whatever s.fd was and returns the error.
std::string open_locked(Sink& s) {
  int fd = STDERR_FILENO;
  if (s.target == "stdout") fd = STDOUT_FILENO;
  else if (s.target != "stderr" && s.target != "off") {  // "off": denials still go to stderr
    fd = ::open(s.target.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) return std::strerror(errno);
  }
  if (s.fd > STDERR_FILENO && s.fd != fd) ::close(s.fd);
  s.fd = fd;
  s.off = s.target == "off";
  return {};
}

// Writes the whole line. The audit trail must not lose a line to a signal or to a full pipe on
// a non-blocking descriptor (a parent may hand us one): EINTR is retried, EAGAIN waits up to
// 5 s for room. What still fails is reported on stderr, once per kind of error and a count.
void write_all_locked(Sink& s, std::string_view line) {
  const char* p = line.data();
  std::size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(s.fd, p, left);
    if (n > 0) {
      p += n;
      left -= static_cast<std::size_t>(n);
      continue;
    }
    int err = n == 0 ? EIO : errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      pollfd pfd{s.fd, POLLOUT, 0};
      int ready;
      do {
        ready = ::poll(&pfd, 1, 5000);
      } while (ready < 0 && errno == EINTR);
      if (ready > 0) continue;
      err = ready == 0 ? ETIMEDOUT : errno;
    }
    ++s.lost;
    if (err != s.last_error) {
      s.last_error = err;
      spdlog::error("access log: a line could not be written ({}); {} line(s) lost so far", std::strerror(err), s.lost);
    }
    return;
  }
}

void field(std::string& out, std::string_view key, std::string_view value) {
  if (value.empty()) return;
  out += ",\"";
  out += key;
  out += "\":\"";
  json_escape(out, value);
  out += '"';
}

void number(std::string& out, std::string_view key, std::uint64_t v) {
  out += ",\"";
  out += key;
  out += "\":";
  out += std::to_string(v);
}

}  // namespace

void json_escape(std::string& out, std::string_view s) {
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);  // UTF-8 passes through; invalid bytes were refused earlier
        }
    }
  }
}

bool configure_access_log(const std::string& target) {
  auto& s = sink();
  std::lock_guard lock(s.mu);
  s.target = target;
  if (auto err = open_locked(s); !err.empty()) {
    spdlog::error("access log: cannot open {}: {}", target, err);
    return false;
  }
  return true;
}

bool reopen_access_log() {
  auto& s = sink();
  std::lock_guard lock(s.mu);
  if (auto err = open_locked(s); !err.empty()) {
    spdlog::error("access log: cannot reopen {}: {}; still writing to the file opened before", s.target, err);
    return false;
  }
  return true;
}

bool access_log_records_allows() { return !sink().off; }

void write_access_log(const AccessRecord& r) {
  auto& s = sink();
  if (s.off && r.outcome != "deny" && r.outcome != "audit-deny") return;
  std::string line;
  line.reserve(512);
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::system_clock::to_time_t(now);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count() % 1000000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char ts[64];
  std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(micros));
  line += "{\"@timestamp\":\"";
  line += ts;
  line += '"';
  field(line, "event.outcome", r.outcome);
  field(line, "listener.name", r.listener);
  field(line, "source.ip", r.source_ip);
  if (r.source_port) number(line, "source.port", r.source_port);
  if (r.peer) {
    field(line, "client.identity.spiffe", r.peer->spiffe);
    field(line, "client.identity.user", r.peer->user);
    if (!r.peer->groups.empty()) {
      line += ",\"client.identity.groups\":[";
      for (std::size_t i = 0; i < r.peer->groups.size(); ++i) {
        if (i) line += ',';
        line += '"';
        json_escape(line, r.peer->groups[i]);
        line += '"';
      }
      line += ']';
    }
  }
  field(line, "http.request.method", r.method);
  field(line, "url.path", r.path);
  field(line, "url.query", r.query);
  if (r.status) number(line, "http.response.status_code", static_cast<std::uint64_t>(r.status));
  field(line, "rule.name", r.rule);
  field(line, "reason", r.reason);
  field(line, "kubernetes.verb", r.kube_verb);
  field(line, "kubernetes.resource", r.kube_resource);
  field(line, "kubernetes.namespace", r.kube_namespace);
  field(line, "docker.action", r.docker_action);
  field(line, "upstream.address", r.upstream);
  number(line, "bytes.in", r.bytes_in);
  number(line, "bytes.out", r.bytes_out);
  number(line, "duration_us", static_cast<std::uint64_t>(r.duration.count()));
  line += "}\n";
  std::lock_guard lock(s.mu);
  write_all_locked(s, line);
}

}  // namespace portcullis::observe
