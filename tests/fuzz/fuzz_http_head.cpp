// The HTTP request-head path as proxy/http/session.cpp runs it: find the end of the head, the
// raw framing checks, Beast's parser with our callbacks and limits, the field checks, target
// normalisation, then the body streamed through the parser in pieces. Nothing may crash, and a
// head we accept has exactly one framing (Content-Length or chunked, never both).
#include <cstdint>
#include <string>
#include <string_view>

#include <boost/asio/buffer.hpp>

#include "proxy/http/head_check.hpp"
#include "proxy/http/parser.hpp"
#include "proxy/policy/normalize.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace portcullis;

namespace {
constexpr std::size_t header_bytes = 8192;

// session.cpp read_head(): a blank line ends the head ("\n\r\n" or "\n\n").
std::size_t head_length(std::string_view d) {
  for (std::size_t i = 0; i < d.size() && i <= header_bytes; ++i) {
    if (d[i] != '\n') continue;
    if (i + 1 < d.size() && d[i + 1] == '\n') return i + 2;
    if (i + 2 < d.size() && d[i + 1] == '\r' && d[i + 2] == '\n') return i + 3;
  }
  return 0;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::size_t head_len = head_length(in);
  if (head_len == 0) return 0;  // more to read, or 431
  std::string_view head = in.substr(0, head_len);
  if (!http::check_raw_head(head).empty()) return 0;

  http::Parser<true> req;
  req.header_limit(header_bytes);
  req.body_limit(1 << 20);
  boost::system::error_code ec;
  std::size_t used = req.put(boost::asio::buffer(head.data(), head.size()), ec);
  if (ec || !req.is_header_done()) return 0;
  FUZZ_CHECK(used <= head.size());
  if (req.version != 11 && req.version != 10) return 0;
  if (!http::check_request_fields(req.fields).empty()) return 0;
  FUZZ_CHECK(!(req.chunked() && req.content_length()));
  FUZZ_CHECK(req.field("host") != nullptr);
  auto target = policy::normalize_target(req.method, req.target);
  if (target.ok) FUZZ_CHECK(target.path == "*" || target.path.starts_with('/'));

  // The body, fed in small pieces as it would arrive.
  std::string body(in.substr(used));
  req.eager(true);
  std::size_t off = 0;
  while (!req.is_done() && off < body.size()) {
    std::size_t piece = std::min<std::size_t>(body.size() - off, 1 + (body[off] & 0x3f));
    req.pieces().clear();
    std::size_t n = req.put(boost::asio::buffer(body.data() + off, piece), ec);
    for (auto p : req.pieces()) FUZZ_CHECK(p.data() >= body.data() && p.data() + p.size() <= body.data() + body.size());
    if (ec && ec != boost::beast::http::error::need_more) break;
    if (n == 0) break;
    off += n;
  }
  return 0;
}
