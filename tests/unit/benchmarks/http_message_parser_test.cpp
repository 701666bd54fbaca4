// The load generator's HTTP/1.1 parser (benchmarks/http_message_parser.hpp). It decides where a
// response ends and whether the connection may carry the next request, so a mistake here would
// miscount every run: each message is fed whole, in 7-byte pieces and one byte at a time.
#include "benchmarks/http_message_parser.hpp"

#include <catch2/catch.hpp>
#include <cstdint>
#include <string>
#include <string_view>

using portcullis::bench::HttpMessageParser;
using Kind = HttpMessageParser::Kind;

namespace {
struct Parsed {
  HttpMessageParser parser;
  std::string left;  // bytes not consumed when the message ended (or failed)
};

// Feeds `wire` in pieces of `piece` bytes, as reads from a socket would deliver it.
Parsed feed(std::string_view wire, std::size_t piece, Kind kind = Kind::response, bool head_request = false) {
  Parsed out{HttpMessageParser(kind), {}};
  out.parser.reset(head_request);
  std::string pending;
  std::size_t at = 0;
  while (at < wire.size() && !out.parser.done() && !out.parser.failed()) {
    pending += wire.substr(at, piece);
    at += piece;
    pending.erase(0, out.parser.consume(pending));
  }
  out.left = pending + std::string(wire.substr(std::min(at, wire.size())));
  return out;
}

struct Case {
  const char* name;
  std::string wire;
  int status;
  bool keep_alive;
  std::uint64_t body;
};
}  // namespace

TEST_CASE("http parser: responses end where their framing says, however the bytes arrive") {
  const Case cases[] = {
      {"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, true, 2},
      {"content-length with spaces and odd case", "HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh:\t 2 \r\n\r\nok", 200, true, 2},
      {"chunked with extension and trailer",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\n",
       200, true, 19},
      {"chunked wins over content-length",
       "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", 200, true,
       2},
      {"connection close", "HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\nconnection: close\r\n\r\nnope!", 403, false, 5},
      {"close among other tokens", "HTTP/1.1 200 OK\r\nConnection: upgrade, Close\r\nContent-Length: 0\r\n\r\n", 200,
       false, 0},
      {"100 continue first", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 204, true, 0},
      {"304 has no body whatever it says", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", 304, true, 0},
      {"http/1.0 closes by default", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", 200, false, 1},
      {"http/1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 200, true, 0},
  };
  for (const auto& c : cases) {
    for (std::size_t piece : {std::size_t{1}, std::size_t{7}, c.wire.size()}) {
      INFO(c.name << ", fed " << piece << " bytes at a time");
      const Parsed p = feed(c.wire, piece);
      REQUIRE(p.parser.done());
      REQUIRE(p.parser.status() == c.status);
      REQUIRE(p.parser.keep_alive() == c.keep_alive);
      REQUIRE(p.parser.body_bytes() == c.body);
      REQUIRE(p.left.empty());
    }
  }
}

TEST_CASE("http parser: a response to HEAD has no body, and pipelined bytes are left alone") {
  const Parsed head = feed("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", 5, Kind::response, /*head_request=*/true);
  REQUIRE(head.parser.done());
  REQUIRE(head.parser.body_bytes() == 0);

  HttpMessageParser p;
  const std::string two = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
  const std::size_t first = p.consume(two);
  REQUIRE(p.done());
  REQUIRE(first == two.find("xHTTP") + 1);
  REQUIRE(p.head_bytes() == two.find("\r\n\r\n") + 4);
  p.reset();
  REQUIRE(p.consume(std::string_view(two).substr(first)) == two.size() - first);
  REQUIRE(p.done());
  REQUIRE(p.status() == 404);
}

TEST_CASE("http parser: a body that runs until close ends at EOF, and a cut one is an error") {
  HttpMessageParser p;
  p.consume("HTTP/1.1 200 OK\r\n\r\nabc");
  REQUIRE_FALSE(p.done());
  p.on_eof();
  REQUIRE(p.done());
  REQUIRE_FALSE(p.keep_alive());
  REQUIRE(p.body_bytes() == 3);

  for (const char* cut : {"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "HTTP/1.1 200 OK\r\nContent-"}) {
    INFO(cut);
    p.reset();
    p.consume(cut);
    p.on_eof();
    REQUIRE(p.failed());
  }
}

TEST_CASE("http parser: malformed responses are errors, not guesses") {
  const char* bad[] = {
      "HTTP/1.1 2x0 OK\r\n\r\n",                                              // status not three digits
      "HTTP/2 200 OK\r\n\r\n",                                                // not HTTP/1.x
      "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",                             // field without a colon
      "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",                        // length not a number
      "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",                           // empty length
      "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",   // length past 64 bits
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",          // chunk size not hex
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",  // no CRLF after data
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n",  // chunk size past 15 hex digits
  };
  for (const char* wire : bad) {
    for (std::size_t piece : {std::size_t{1}, std::string_view(wire).size()}) {
      INFO(wire << " fed " << piece << " at a time");
      REQUIRE(feed(wire, piece).parser.failed());
    }
  }
  // A head that never ends is cut off at 64 KiB instead of being buffered without bound.
  HttpMessageParser p;
  std::string endless = "HTTP/1.1 200 OK\r\n";
  while (endless.size() <= 70 * 1024) endless += "X-Filler: 0123456789abcdef0123456789abcdef\r\n";
  p.consume(endless);
  REQUIRE(p.failed());
}

TEST_CASE("http parser: requests, as the upload sink reads them") {
  const Parsed get = feed("GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n", 1, Kind::request);
  REQUIRE(get.parser.done());
  REQUIRE(get.parser.keep_alive());
  REQUIRE(get.parser.body_bytes() == 0);

  const Parsed chunked = feed(
      "POST /upload/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n4\r\nabcd\r\n0\r\n\r\n", 3,
      Kind::request);
  REQUIRE(chunked.parser.done());
  REQUIRE(chunked.parser.body_bytes() == 4);
  REQUIRE(chunked.parser.expects_continue());

  const Parsed old = feed("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", 2, Kind::request);
  REQUIRE(old.parser.done());
  REQUIRE_FALSE(old.parser.keep_alive());
  REQUIRE(old.parser.body_bytes() == 3);

  for (const char* bad : {"BROKEN\r\n\r\n", "GET /x HTTP/2.0\r\n\r\n", "GET\r\n\r\n"}) {
    INFO(bad);
    REQUIRE(feed(bad, 100, Kind::request).parser.failed());
  }
}
