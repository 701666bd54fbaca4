#pragma once
// An incremental HTTP/1.1 message parser for the load generator (responses) and its upstream
// sink (requests): just enough to find where a message ends (Content-Length, chunked, or until
// close) and whether the connection stays open. The body is counted and dropped, never copied.
// A full parser (Beast) would cost CPU that the proxy under test needs on a 2-core machine.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace portcullis::bench {

class HttpMessageParser {
 public:
  enum class State { head, body_length, chunk_size, chunk_data, chunk_crlf, trailers, until_close, done, error };

  enum class Kind { response, request };

  explicit HttpMessageParser(Kind kind = Kind::response) : kind_(kind) {}

  // Starts a new message. `head_request`: a response with no body whatever it says.
  void reset(bool head_request = false) {
    const Kind kind = kind_;
    *this = HttpMessageParser{kind};
    head_request_ = head_request;
  }

  // Consumes a prefix of `data` and returns its length. 0 with a state other than done/error means
  // the next unit (the head, a chunk-size line or a trailer line) is not complete yet: the caller
  // keeps the unconsumed bytes and calls again with them plus more.
  std::size_t consume(std::string_view data) {
    std::size_t used = 0;
    while (used < data.size() && state_ != State::done && state_ != State::error) {
      const std::size_t n = step(data.substr(used));
      if (n == 0) break;
      used += n;
    }
    return used;
  }

  // The peer closed the connection: that ends an until-close body, and is an error elsewhere.
  void on_eof() { state_ = state_ == State::until_close ? State::done : State::error; }

  State state() const { return state_; }
  bool done() const { return state_ == State::done; }
  bool failed() const { return state_ == State::error; }
  int status() const { return status_; }  // responses only
  bool expects_continue() const { return expects_continue_; }  // requests only
  bool keep_alive() const { return keep_alive_; }
  std::uint64_t body_bytes() const { return body_bytes_; }
  std::size_t head_bytes() const { return head_bytes_; }

 private:
  std::size_t step(std::string_view in) {
    switch (state_) {
      case State::head: return parse_head(in);
      case State::body_length: return take_body(in, remaining_, State::done);
      case State::chunk_size: return parse_chunk_size(in);
      case State::chunk_data: return take_body(in, remaining_, State::chunk_crlf);
      case State::chunk_crlf: return expect_crlf(in);
      case State::trailers: return parse_trailer(in);
      case State::until_close:
        body_bytes_ += in.size();
        return in.size();
      case State::done:
      case State::error: return 0;
    }
    return 0;
  }

  std::size_t parse_head(std::string_view in) {
    // Resume the search where the last call stopped (minus 3 bytes of a split terminator).
    const std::size_t from = scanned_ > 3 ? scanned_ - 3 : 0;
    const std::size_t end = in.find("\r\n\r\n", from);
    if (end == std::string_view::npos) {
      scanned_ = in.size();
      if (in.size() > kMaxHead) state_ = State::error;
      return 0;
    }
    const std::string_view head = in.substr(0, end + 2);
    head_bytes_ = end + 4;
    if (kind_ == Kind::response ? !parse_status_line(head) : !parse_request_line(head)) return fail();
    bool chunked = false;
    bool have_length = false;
    std::uint64_t length = 0;
    std::size_t line_start = head.find("\r\n") + 2;
    while (line_start < head.size()) {
      const std::size_t line_end = head.find("\r\n", line_start);
      const std::string_view line = head.substr(line_start, line_end - line_start);
      line_start = line_end + 2;
      const std::size_t colon = line.find(':');
      if (colon == std::string_view::npos) return fail();
      const std::string_view name = line.substr(0, colon);
      const std::string_view value = trim(line.substr(colon + 1));
      if (iequals(name, "content-length")) {
        if (value.empty()) return fail();
        length = 0;
        // At most 19 digits: a longer length would wrap around 64 bits and frame the body wrong.
        if (value.size() > 19) return fail();
        for (char c : value) {
          if (c < '0' || c > '9') return fail();
          length = length * 10 + static_cast<std::uint64_t>(c - '0');
        }
        have_length = true;
      } else if (iequals(name, "transfer-encoding")) {
        chunked = contains_token(value, "chunked");
      } else if (iequals(name, "connection")) {
        if (contains_token(value, "close")) keep_alive_ = false;
        if (contains_token(value, "keep-alive")) keep_alive_ = true;
      } else if (iequals(name, "expect")) {
        expects_continue_ = contains_token(value, "100-continue");
      }
    }
    if (kind_ == Kind::request) {
      // A request without Content-Length or chunked has no body (RFC 9112, 6.3).
      remaining_ = have_length ? length : 0;
      state_ = chunked ? State::chunk_size : (remaining_ == 0 ? State::done : State::body_length);
      return head_bytes_;
    }
    if (status_ >= 100 && status_ < 200) {
      // An interim response (100 Continue): the real one follows.
      const std::size_t used = head_bytes_;
      const bool head_request = head_request_;
      reset(head_request);
      return used;
    }
    if (head_request_ || status_ == 204 || status_ == 304) {
      state_ = State::done;
    } else if (chunked) {
      state_ = State::chunk_size;
    } else if (have_length) {
      remaining_ = length;
      state_ = length == 0 ? State::done : State::body_length;
    } else {
      keep_alive_ = false;
      state_ = State::until_close;
    }
    return head_bytes_;
  }

  // HTTP/1.x SP 3DIGIT ...
  bool parse_status_line(std::string_view head) {
    if (head.size() < 12 || head.substr(0, 7) != "HTTP/1." || head[8] != ' ') return false;
    keep_alive_ = head[7] != '0';
    status_ = 0;
    for (std::size_t i = 9; i < 12; ++i) {
      if (head[i] < '0' || head[i] > '9') return false;
      status_ = status_ * 10 + (head[i] - '0');
    }
    return true;
  }

  // METHOD SP target SP HTTP/1.x
  bool parse_request_line(std::string_view head) {
    const std::string_view line = head.substr(0, head.find("\r\n"));
    const std::size_t sp = line.rfind(' ');
    if (sp == std::string_view::npos || line.size() - sp != 9 || line.substr(sp + 1, 7) != "HTTP/1.") return false;
    keep_alive_ = line.back() != '0';
    return line.find(' ') < sp;
  }

  std::size_t take_body(std::string_view in, std::uint64_t& remaining, State next) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining, in.size()));
    remaining -= n;
    body_bytes_ += n;
    if (remaining == 0) state_ = next;
    return n;
  }

  std::size_t parse_chunk_size(std::string_view in) {
    const std::size_t end = in.find("\r\n");
    if (end == std::string_view::npos) {
      if (in.size() > kMaxLine) state_ = State::error;
      return 0;
    }
    std::uint64_t size = 0;
    std::size_t digits = 0;
    for (char c : in.substr(0, end)) {
      int v;
      if (c >= '0' && c <= '9') v = c - '0';
      else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
      else break;  // chunk extensions follow
      if (++digits > 15) return fail();
      size = size * 16 + static_cast<std::uint64_t>(v);
    }
    if (digits == 0) return fail();
    remaining_ = size;
    state_ = size == 0 ? State::trailers : State::chunk_data;
    return end + 2;
  }

  std::size_t expect_crlf(std::string_view in) {
    if (in.size() < 2) return 0;
    if (in.substr(0, 2) != "\r\n") return fail();
    state_ = State::chunk_size;
    return 2;
  }

  std::size_t parse_trailer(std::string_view in) {
    const std::size_t end = in.find("\r\n");
    if (end == std::string_view::npos) {
      if (in.size() > kMaxLine) state_ = State::error;
      return 0;
    }
    if (end == 0) state_ = State::done;  // the empty line ends the trailers
    return end + 2;
  }

  std::size_t fail() {
    state_ = State::error;
    return 0;
  }

  static std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
  }

  static char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

  static bool iequals(std::string_view a, std::string_view lower_b) {
    if (a.size() != lower_b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (lower(a[i]) != lower_b[i]) return false;
    return true;
  }

  // Whether a comma-separated header value lists `token` (case-insensitive).
  static bool contains_token(std::string_view value, std::string_view token) {
    while (!value.empty()) {
      const std::size_t comma = value.find(',');
      if (iequals(trim(value.substr(0, comma)), token)) return true;
      if (comma == std::string_view::npos) break;
      value.remove_prefix(comma + 1);
    }
    return false;
  }

  static constexpr std::size_t kMaxHead = 64 * 1024;
  static constexpr std::size_t kMaxLine = 4096;

  Kind kind_ = Kind::response;
  State state_ = State::head;
  bool head_request_ = false;
  std::size_t scanned_ = 0;
  std::size_t head_bytes_ = 0;
  int status_ = 0;
  bool keep_alive_ = true;
  bool expects_continue_ = false;
  std::uint64_t remaining_ = 0;
  std::uint64_t body_bytes_ = 0;
};

}  // namespace portcullis::bench
