#pragma once
// Beast's HTTP/1.1 parser with callbacks that keep what we need: the request or status line,
// the fields (names lowercased), and body pieces as views into the caller's buffer, so bodies
// are relayed without copying or buffering whole.
#include <boost/beast/http/basic_parser.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/policy/request.hpp"

namespace portcullis::http {

namespace beast_http = boost::beast::http;

template <bool isRequest>
class Parser : public beast_http::basic_parser<isRequest> {
 public:
  std::string method;  // requests
  std::string target;
  int status = 0;  // responses
  std::string reason;
  int version = 11;
  std::vector<policy::Header> fields;
  std::vector<std::string_view> body;  // pieces since the last take_body()

  // Valid until the buffer given to put() is consumed.
  std::vector<std::string_view>& pieces() { return body; }

  const std::string* field(std::string_view lower_name) const { return policy::find_header(fields, lower_name); }

 private:
  using error_code = boost::system::error_code;
  using sv = boost::beast::string_view;
  void on_request_impl(beast_http::verb, sv m, sv t, int v, error_code&) override {
    method.assign(m.data(), m.size());
    target.assign(t.data(), t.size());
    version = v;
  }
  void on_response_impl(int code, sv r, int v, error_code&) override {
    status = code;
    reason.assign(r.data(), r.size());
    version = v;
  }
  void on_field_impl(beast_http::field, sv name_sv, sv value_sv, error_code&) override {
    if (header_done_) return;  // trailers are not forwarded
    std::string_view name(name_sv.data(), name_sv.size());
    std::string_view value(value_sv.data(), value_sv.size());
    if (fields.empty()) fields.reserve(16);  // one allocation for a typical head, not five
    policy::Header& h = fields.emplace_back();
    h.name.resize(name.size());
    char* out = h.name.data();
    for (char c : name) *out++ = static_cast<char>(c + ((static_cast<unsigned char>(c - 'A') < 26) ? 32 : 0));
    h.value.assign(value);
  }
  void on_header_impl(error_code&) override { header_done_ = true; }
  void on_body_init_impl(const boost::optional<std::uint64_t>&, error_code&) override {}
  std::size_t on_body_impl(sv b, error_code&) override {
    body.emplace_back(b.data(), b.size());
    return b.size();
  }
  void on_chunk_header_impl(std::uint64_t, sv, error_code&) override {}
  std::size_t on_chunk_body_impl(std::uint64_t, sv b, error_code&) override {
    body.emplace_back(b.data(), b.size());
    return b.size();
  }
  void on_finish_impl(error_code&) override {}

  bool header_done_ = false;
};

}  // namespace portcullis::http
