#include "proxy/observe/metrics.hpp"

#include <boost/asio/ssl/error.hpp>
#include <boost/beast/http/error.hpp>
#include <cmath>
#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <charconv>

namespace portcullis::observe {
namespace {

struct MetricInfo {
  const char* name;
  const char* type;
  const char* help;
};

constexpr std::array<MetricInfo, metric_count> infos{{
#define PORTCULLIS_METRIC_INFO(id, type, help) {"portcullis_" #id, #type, help},
    PORTCULLIS_METRICS(PORTCULLIS_METRIC_INFO)
#undef PORTCULLIS_METRIC_INFO
}};

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that reads back exactly
  return std::string(buf, r.ptr);
}

void series(std::string& out, const char* name, std::string_view suffix, const std::string& label_set,
            std::string_view extra, const std::string& value) {
  out += name;
  out += suffix;
  if (!label_set.empty() || !extra.empty()) {
    out += '{';
    out += label_set;
    if (!label_set.empty() && !extra.empty()) out += ',';
    out += extra;
    out += '}';
  }
  out += ' ';
  out += value;
  out += '\n';
}

}  // namespace

void Histogram::observe(double v) {
  for (std::size_t i = 0; i < duration_buckets.size(); ++i)
    if (v <= duration_buckets[i]) {
      ++buckets[i];
      break;
    }
  sum += v;
  ++count;
}

void Histogram::merge(const Histogram& o) {
  for (std::size_t i = 0; i < buckets.size(); ++i) buckets[i] += o.buckets[i];
  sum += o.sum;
  count += o.count;
}

void MetricSet::merge(const MetricSet& o) {
  for (std::size_t m = 0; m < metric_count; ++m) {
    for (const auto& [k, v] : o.values[m]) values[m][k] += v;
    for (const auto& [k, h] : o.histograms[m]) histograms[m][k].merge(h);
  }
}

std::string labels(std::initializer_list<std::pair<std::string_view, std::string_view>> kv) {
  std::string out;
  for (const auto& [k, v] : kv) {
    if (!out.empty()) out += ',';
    out += k;
    out += "=\"";
    for (char c : v) {
      if (c == '\\') out += "\\\\";
      else if (c == '"') out += "\\\"";
      else if (c == '\n') out += "\\n";
      else out += c;
    }
    out += '"';
  }
  return out;
}

void count_refusal(MetricSet& m, std::string_view listener, int status) {
  if (status == 400 || status == 505) m.add(Metric::malformed_requests_total, labels({{"listener", listener}}));
  else if (status == 431) m.add(Metric::limit_hits_total, labels({{"listener", listener}, {"limit", "header_bytes"}}));
  else if (status == 413) m.add(Metric::limit_hits_total, labels({{"listener", listener}, {"limit", "max_body_bytes"}}));
}

bool is_framing_error(const boost::system::error_code& ec) {
  namespace e = boost::beast::http;
  return ec == e::error::bad_content_length || ec == e::error::multiple_content_length ||
         ec == e::error::bad_transfer_encoding || ec == e::error::bad_obs_fold || ec == e::error::bad_line_ending;
}

const char* handshake_failure_reason(const SSL* ssl, const boost::system::error_code& ec, bool timed_out) {
  long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  switch (v) {
    case X509_V_OK:
      break;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_CRL_HAS_EXPIRED:
      return "expired";
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
      return "unknown_ca";
    default:
      return "other";
  }
  if (timed_out) return "other";
  if (ec.category() == boost::asio::error::get_ssl_category()) {
    if (ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
      return "no_cert";
    return "protocol";
  }
  return "other";
}

std::string render(const MetricSet& m) {
  std::string out;
  for (std::size_t i = 0; i < metric_count; ++i) {
    const auto& info = infos[i];
    out += "# HELP ";
    out += info.name;
    out += ' ';
    out += info.help;
    out += "\n# TYPE ";
    out += info.name;
    out += ' ';
    out += info.type;
    out += '\n';
    if (std::string_view(info.type) == "histogram") {
      for (const auto& [label_set, h] : m.histograms[i]) {
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b < duration_buckets.size(); ++b) {
          cumulative += h.buckets[b];
          std::string le = "le=\"" + number(duration_buckets[b]) + "\"";
          series(out, info.name, "_bucket", label_set, le, std::to_string(cumulative));
        }
        series(out, info.name, "_bucket", label_set, "le=\"+Inf\"", std::to_string(h.count));
        series(out, info.name, "_sum", label_set, "", number(h.sum));
        series(out, info.name, "_count", label_set, "", std::to_string(h.count));
      }
    } else {
      for (const auto& [label_set, v] : m.values[i]) series(out, info.name, "", label_set, "", std::to_string(v));
    }
  }
  return out;
}

}  // namespace portcullis::observe
