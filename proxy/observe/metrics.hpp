#pragma once
// Prometheus metrics. Every metric is declared once, in PORTCULLIS_METRICS below; the enum, the
// names, the HELP text and the exposition all come from that list.
//
// Each worker owns a MetricSet touched only on its own thread (no atomics, no locks on the
// request path); the admin endpoint posts a copy request to each worker and sums the copies.
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include <boost/system/error_code.hpp>
#include <openssl/ssl.h>

namespace portcullis::observe {

// X(id, type, help). The exposed name is "portcullis_" #id.
#define PORTCULLIS_METRICS(X)                                                                                  \
  X(requests_total, counter, "HTTP requests by listener, policy, rule and decision (allow, deny, audit_deny, error).") \
  X(responses_total, counter, "HTTP responses sent to clients by listener and status class.")                  \
  X(request_duration_seconds, histogram, "Time from the start of a request to its last response byte.")        \
  X(tls_handshakes_total, counter, "TLS handshakes attempted with clients, successful or not.")               \
  X(tls_handshake_failures_total, counter, "Failed TLS handshakes with clients by reason (no_cert, unknown_ca, expired, protocol, other).") \
  X(connections_active, gauge, "Client connections open now.")                                                \
  X(connections_total, counter, "Client connections accepted.")                                               \
  X(connections_idle_cold, gauge, "Client connections idle for over a second, waiting in their worker's own epoll set outside asio's reactor (part of connections_active).") \
  X(upstream_connect_failures_total, counter, "Failed connection attempts to an upstream.")                    \
  X(config_reloads_total, counter, "Config reloads by result (success, failure).")                             \
  /* Hostile behaviour (HAProxy's "glitches"): what attackers and broken clients cost us. */                \
  X(malformed_requests_total, counter, "Requests refused before policy as malformed (400, 505), by listener.")  \
  X(smuggling_attempts_total, counter, "Requests refused by the framing checks (Content-Length with Transfer-Encoding, duplicate Content-Length, obs-fold, bare LF, ...); also counted as malformed.") \
  X(slow_clients_total, counter, "Client connections cut by a timeout, by listener and phase (handshake, header, body).") \
  X(limit_hits_total, counter, "Work refused at a limit, by listener and limit (header_bytes, max_body_bytes, max_connections, process_max_connections).") \
  X(upstream_failures_total, counter, "Requests the upstream failed, by listener and reason (unavailable, timeout, truncated).") \
  X(certificate_expiry_seconds, gauge, "Seconds until a certificate the proxy presents expires (negative once expired).") \
  X(firewall_applies_total, counter, "nftables transactions sent by the proxy (startup and reloads) by result (success, failure).") \
  X(firewall_dropped_packets_total, counter, "Packets dropped by the proxy's nftables rules, read back from their counters, by chain.") \
  X(firewall_dropped_bytes_total, counter, "Bytes dropped by the proxy's nftables rules, read back from their counters, by chain.")

enum class Metric : std::size_t {
#define PORTCULLIS_METRIC_ID(id, type, help) id,
  PORTCULLIS_METRICS(PORTCULLIS_METRIC_ID)
#undef PORTCULLIS_METRIC_ID
      count_
};
constexpr std::size_t metric_count = static_cast<std::size_t>(Metric::count_);

// Upper bounds (seconds) of the request duration buckets; +Inf is implied.
inline constexpr std::array<double, 12> duration_buckets{0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                         0.25,  0.5,   1,    2.5,   5,    10};

struct Histogram {
  std::array<std::uint64_t, duration_buckets.size()> buckets{};  // not cumulative
  double sum = 0;
  std::uint64_t count = 0;
  void observe(double v);
  void merge(const Histogram& o);
};

// Series of every metric, keyed by their rendered label set (see labels()).
struct MetricSet {
  std::array<std::map<std::string, std::int64_t>, metric_count> values;  // counters and gauges
  std::array<std::map<std::string, Histogram>, metric_count> histograms;

  void add(Metric m, const std::string& label_set, std::int64_t v = 1) { values[static_cast<std::size_t>(m)][label_set] += v; }
  void set(Metric m, const std::string& label_set, std::int64_t v) { values[static_cast<std::size_t>(m)][label_set] = v; }
  void observe(Metric m, const std::string& label_set, double v) {
    histograms[static_cast<std::size_t>(m)][label_set].observe(v);
  }
  void merge(const MetricSet& o);
};

// `a="x",b="y"` with values escaped per the text exposition format (\\, \", \n).
std::string labels(std::initializer_list<std::pair<std::string_view, std::string_view>> kv);

// Prometheus text exposition format 0.0.4.
std::string render(const MetricSet& m);
// The reason label of portcullis_tls_handshake_failures_total for a failed server-side
// handshake: no_cert, unknown_ca, expired, protocol or other (timeouts, resets).
// A request refused before policy with `status`: 400 and 505 count as malformed, 431 and 413 as
// header_bytes / max_body_bytes limit hits; other statuses are counted where they arise.
void count_refusal(MetricSet& m, std::string_view listener, int status);
// Beast parser errors that are request-smuggling vectors (how a message's length is framed:
// Content-Length and Transfer-Encoding conflicts, obs-fold, bare line endings).
bool is_framing_error(const boost::system::error_code& ec);
const char* handshake_failure_reason(const SSL* ssl, const boost::system::error_code& ec, bool timed_out);

inline constexpr const char* exposition_content_type = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace portcullis::observe
