// portcullis-loadgen: an HTTP/1.1 load generator that presents a client certificate, for
// benchmarking mTLS proxies on loopback (wrk and h2load cannot present one; ab speaks HTTP/1.0
// from one thread). See benchmarks/README.md. It also serves, with --serve, the upstream sink of
// the upload scenario, and measures, with --loopback-tcp, the machine's loopback TCP ceiling.
//
// Each thread owns an io_context and the connections assigned to it; nothing is shared on the
// request path but one atomic ticket counter (when --requests bounds the run). Statistics are
// kept per thread and merged at the end.
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/json.hpp>
#include <csignal>
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "benchmarks/http_message_parser.hpp"
#include "benchmarks/latency_histogram.hpp"

namespace asio = boost::asio;
namespace ssl = asio::ssl;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

namespace portcullis::bench {
namespace {

constexpr auto kUseTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadBufferBytes = 64 * 1024;

struct Options {
  std::string url = "https://127.0.0.1:8443/api/bench";
  std::string method;  // GET, or POST when a body is sent
  std::vector<std::string> headers;
  std::string cert, key, ca, sni, ciphersuites;
  bool tls13_only = false;
  unsigned connections = 16;
  unsigned threads = 2;
  double duration_s = 0;
  std::uint64_t max_requests = 0;
  double warmup_s = 0;
  double rate = 0;
  bool new_connection = false;
  std::uint64_t body_bytes = 0;
  bool chunked = false;
  std::size_t chunk_bytes = 256 * 1024;
  unsigned timeout_ms = 10000;
  unsigned idle_connections = 0;
  double hold_s = 10;
  unsigned idle_concurrency = 64;
  bool idle_request = false;
  std::string ready_file;
  std::uint64_t loopback_tcp_bytes = 0;
  unsigned short serve_port = 0;
  double serve_seconds = 3600;
  std::string sink_log;
  std::string label;
};

struct Target {
  bool tls = true;
  std::string host;
  std::string port;
  std::string path;
};

enum class ErrorKind : unsigned { connect, handshake, write, read, closed, timeout, parse };
constexpr std::array<const char*, 7> kErrorNames = {"connect", "handshake", "write", "read",
                                                    "closed", "timeout", "parse"};

struct Stats {
  LatencyHistogram latency;  // nanoseconds
  std::uint64_t responses = 0;
  std::uint64_t ok = 0;
  std::array<std::uint64_t, 600> status{};
  std::array<std::uint64_t, kErrorNames.size()> errors{};
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t body_bytes_sent = 0;
  std::uint64_t handshakes = 0;
  Clock::time_point last_completion{};

  void merge(const Stats& o) {
    latency.merge(o.latency);
    responses += o.responses;
    ok += o.ok;
    for (std::size_t i = 0; i < status.size(); ++i) status[i] += o.status[i];
    for (std::size_t i = 0; i < errors.size(); ++i) errors[i] += o.errors[i];
    bytes_sent += o.bytes_sent;
    bytes_received += o.bytes_received;
    body_bytes_sent += o.body_bytes_sent;
    handshakes += o.handshakes;
    last_completion = std::max(last_completion, o.last_completion);
  }
  std::uint64_t error_total() const {
    std::uint64_t n = 0;
    for (auto e : errors) n += e;
    return n;
  }
};

// What every connection reads: the options, the prepared request and the time bounds.
struct Run {
  const Options& opt;
  Target target;
  tcp::endpoint endpoint;
  std::unique_ptr<ssl::context> tls;
  std::string request_head;
  std::vector<char> body_block;  // the upload body is this block, sent again and again
  Clock::time_point start, measure_from, end, hard_end;
  std::atomic<std::uint64_t> issued{0};
  std::once_flag tls_noted;
  std::string tls_version, tls_cipher;

  explicit Run(const Options& o) : opt(o) {}

  // Takes a ticket for one more request, or says the run is over.
  bool claim(Clock::time_point when) {
    if (when >= end) return false;
    if (opt.max_requests != 0 && issued.fetch_add(1, std::memory_order_relaxed) >= opt.max_requests)
      return false;
    return true;
  }
};

class Connection;

struct Worker {
  asio::io_context ioc{1};
  Stats stats;
  std::vector<Connection*> live;  // scanned by the watchdog for expired deadlines
  unsigned running = 0;           // connection loops (or idle openers) still going
  std::vector<std::unique_ptr<Connection>> idle;
};

struct Outcome {
  std::optional<ErrorKind> error;
  int status = 0;
  bool keep_alive = true;
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  std::uint64_t body_sent = 0;
};

bool is_closed_error(const error_code& ec) {
  return ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated;
}

// One client connection (plaintext or TLS) with its read buffer and its I/O deadline. The
// watchdog closes the socket when the deadline passes, which completes the pending operation
// with an error that the coroutine then reports as a timeout.
class Connection {
 public:
  Connection(Worker& worker, Run& run) : worker_(worker), run_(run), buffer_(kReadBufferBytes) {
    worker_.live.push_back(this);
  }
  ~Connection() {
    auto& live = worker_.live;
    live.erase(std::find(live.begin(), live.end(), this));
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool is_open() const { return plain_.has_value() || tls_.has_value(); }

  void close() {
    error_code ignored;
    if (tls_) tls_->next_layer().close(ignored);
    if (plain_) plain_->close(ignored);
    tls_.reset();
    plain_.reset();
    head_ = tail_ = 0;
    unconfirmed_ = false;
  }

  void expire_if_due(Clock::time_point now) {
    if (deadline_ > now) return;
    timed_out_ = true;
    deadline_ = Clock::time_point::max();
    error_code ignored;
    if (tls_) tls_->next_layer().close(ignored);
    if (plain_) plain_->close(ignored);
  }

  void disarm() { deadline_ = Clock::time_point::max(); }

  // Connects, and with TLS completes the handshake. Returns the error kind on failure.
  asio::awaitable<std::optional<ErrorKind>> open() {
    close();
    timed_out_ = false;
    tcp::socket socket(worker_.ioc);
    arm();
    auto [ec] = co_await socket.async_connect(run_.endpoint, kUseTuple);
    if (ec) co_return failure(ErrorKind::connect);
    socket.set_option(tcp::no_delay(true), ec);
    if (!run_.tls) {
      plain_.emplace(std::move(socket));
      disarm();
      co_return std::nullopt;
    }
    tls_.emplace(std::move(socket), *run_.tls);
    prepare_tls(tls_->native_handle());
    arm();
    auto [hec] = co_await tls_->async_handshake(ssl::stream_base::client, kUseTuple);
    disarm();
    if (hec) co_return failure(ErrorKind::handshake);
    // Not counted yet: in TLS 1.3 the client's side of the handshake is complete before the
    // server has checked the client certificate. A server that refuses it answers the first
    // request with an alert instead (exchange() counts that as a handshake error).
    unconfirmed_ = true;
    std::call_once(run_.tls_noted, [&] {
      run_.tls_version = SSL_get_version(tls_->native_handle());
      run_.tls_cipher = SSL_get_cipher_name(tls_->native_handle());
    });
    co_return std::nullopt;
  }

  // Counts the handshake of this connection, once: the server answered on it, or (idle mode,
  // no request) the client's side completed and the connection is watched for a drop.
  void confirm_handshake() {
    if (std::exchange(unconfirmed_, false)) ++worker_.stats.handshakes;
  }

  // Sends the request (head and body) and reads one response.
  asio::awaitable<Outcome> exchange() {
    Outcome out = co_await exchange_once();
    // Nothing came back on a new TLS connection: the server refused the handshake (a TLS 1.3
    // server checks the client certificate after the client has finished).
    if (out.error && unconfirmed_ && (*out.error == ErrorKind::read || *out.error == ErrorKind::closed ||
                                      *out.error == ErrorKind::write))
      out.error = ErrorKind::handshake;
    co_return out;
  }

  asio::awaitable<Outcome> exchange_once() {
    Outcome out;
    if (auto err = co_await send_request(out)) {
      out.error = err;
      co_return out;
    }
    parser_.reset();
    for (;;) {
      if (head_ < tail_) {
        const std::size_t used = parser_.consume({buffer_.data() + head_, tail_ - head_});
        head_ += used;
        if (head_ == tail_) head_ = tail_ = 0;
      }
      if (parser_.done()) break;
      if (parser_.failed()) {
        out.error = ErrorKind::parse;
        co_return out;
      }
      if (tail_ == buffer_.size()) {  // an incomplete unit at the end: move it to the front
        if (head_ == 0) {
          out.error = ErrorKind::parse;
          co_return out;
        }
        std::copy(buffer_.begin() + static_cast<std::ptrdiff_t>(head_),
                  buffer_.begin() + static_cast<std::ptrdiff_t>(tail_), buffer_.begin());
        tail_ -= head_;
        head_ = 0;
      }
      arm();
      auto [ec, n] = co_await read_some(asio::buffer(buffer_.data() + tail_, buffer_.size() - tail_));
      disarm();
      if (ec) {
        if (is_closed_error(ec) && !timed_out_) {
          parser_.on_eof();
          if (parser_.done()) {
            out.keep_alive = false;
            break;
          }
          out.error = out.received == 0 ? ErrorKind::closed : ErrorKind::read;
        } else {
          out.error = timed_out_ ? ErrorKind::timeout : ErrorKind::read;
        }
        co_return out;
      }
      tail_ += n;
      out.received += n;
      confirm_handshake();
    }
    out.status = parser_.status();
    out.keep_alive = out.keep_alive && parser_.keep_alive();
    co_return out;
  }

  asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer b) {
    if (tls_) co_return co_await tls_->async_read_some(b, kUseTuple);
    co_return co_await plain_->async_read_some(b, kUseTuple);
  }

 private:
  void arm() {
    deadline_ = std::min(Clock::now() + std::chrono::milliseconds(run_.opt.timeout_ms), run_.hard_end);
  }

  std::optional<ErrorKind> failure(ErrorKind kind) {
    disarm();
    const bool timed_out = timed_out_;
    close();
    return timed_out ? ErrorKind::timeout : kind;
  }

  void prepare_tls(SSL* ssl) {
    const std::string& name = run_.opt.sni.empty() ? run_.target.host : run_.opt.sni;
    error_code ec;
    const auto ip = asio::ip::make_address(name, ec);
    if (ec) SSL_set_tlsext_host_name(ssl, name.c_str());  // SNI carries names, never addresses
    if (!run_.opt.ca.empty()) {
      if (ec) SSL_set1_host(ssl, name.c_str());
      else X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip.to_string().c_str());
    }
  }

  template <class Buffers>
  asio::awaitable<std::tuple<error_code, std::size_t>> write(const Buffers& b) {
    arm();
    std::tuple<error_code, std::size_t> result;
    if (tls_) result = co_await asio::async_write(*tls_, b, kUseTuple);
    else result = co_await asio::async_write(*plain_, b, kUseTuple);
    disarm();
    co_return result;
  }

  asio::awaitable<std::optional<ErrorKind>> send_request(Outcome& out) {
    const auto write_error = [&](const error_code& ec) {
      return timed_out_ ? ErrorKind::timeout : (is_closed_error(ec) ? ErrorKind::closed : ErrorKind::write);
    };
    auto [ec, n] = co_await write(asio::buffer(run_.request_head));
    out.sent += n;
    if (ec) co_return write_error(ec);
    const std::vector<char>& block = run_.body_block;
    std::uint64_t left = run_.opt.body_bytes;
    while (left > 0) {
      const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(left, block.size()));
      std::size_t written = 0;
      if (run_.opt.chunked) {
        char size_line[24];
        const int size_len = std::snprintf(size_line, sizeof size_line, "%zx\r\n", len);
        const std::array<asio::const_buffer, 3> chunk = {
            asio::buffer(size_line, static_cast<std::size_t>(size_len)), asio::buffer(block.data(), len),
            asio::buffer("\r\n", 2)};
        auto [wec, wn] = co_await write(chunk);
        ec = wec;
        written = wn;
      } else {
        auto [wec, wn] = co_await write(asio::buffer(block.data(), len));
        ec = wec;
        written = wn;
      }
      out.sent += written;
      if (ec) co_return write_error(ec);
      out.body_sent += len;
      left -= len;
    }
    if (run_.opt.chunked && run_.opt.body_bytes > 0) {
      auto [fec, fn] = co_await write(asio::buffer("0\r\n\r\n", 5));
      out.sent += fn;
      if (fec) co_return write_error(fec);
    }
    co_return std::nullopt;
  }

  Worker& worker_;
  Run& run_;
  std::optional<tcp::socket> plain_;
  std::optional<ssl::stream<tcp::socket>> tls_;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool timed_out_ = false;
  bool unconfirmed_ = false;  // TLS handshake done on our side, not yet answered on
  std::vector<char> buffer_;
  std::size_t head_ = 0;  // unparsed bytes are buffer_[head_, tail_)
  std::size_t tail_ = 0;
  HttpMessageParser parser_;
};

void record(Worker& w, Run& run, Clock::time_point intended, Clock::time_point done, const Outcome& out) {
  if (intended < run.measure_from) return;  // warm-up
  Stats& s = w.stats;
  if (out.error) {
    ++s.errors[static_cast<unsigned>(*out.error)];
    return;
  }
  ++s.responses;
  if (out.status >= 0 && out.status < static_cast<int>(s.status.size())) ++s.status[static_cast<std::size_t>(out.status)];
  if (out.status >= 200 && out.status < 300) ++s.ok;
  s.latency.record(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(done - intended).count()));
  s.bytes_sent += out.sent;
  s.bytes_received += out.received;
  s.body_bytes_sent += out.body_sent;
  s.last_completion = std::max(s.last_completion, done);
}

asio::awaitable<void> watchdog(Worker& w) {
  asio::steady_timer timer(w.ioc);
  while (w.running > 0) {
    timer.expires_after(std::chrono::milliseconds(50));
    co_await timer.async_wait(kUseTuple);
    const auto now = Clock::now();
    for (Connection* c : w.live) c->expire_if_due(now);
  }
}

// One connection's request loop. Closed loop: the next request goes as soon as the last response
// is in. Open loop: requests follow a fixed schedule, and latency counts from the scheduled time,
// so a stalled server is charged for the requests it held up (no coordinated omission).
asio::awaitable<void> connection_loop(Worker& w, Run& run, unsigned index) {
  const Options& opt = run.opt;
  Connection conn(w, run);
  asio::steady_timer pacer(w.ioc);
  const bool open_loop = opt.rate > 0;
  const auto interval = std::chrono::nanoseconds(
      static_cast<std::int64_t>(open_loop ? 1e9 * opt.connections / opt.rate : 0));
  Clock::time_point next = run.start + interval * index / opt.connections;
  for (;;) {
    Clock::time_point intended = Clock::now();
    if (open_loop) {
      intended = next;
      next += interval;
      if (intended >= run.end) break;
      if (intended > Clock::now()) {
        pacer.expires_at(intended);
        co_await pacer.async_wait(kUseTuple);
      }
    }
    if (!run.claim(intended)) break;
    Outcome out;
    if (!conn.is_open()) out.error = co_await conn.open();
    if (!out.error) out = co_await conn.exchange();
    record(w, run, intended, Clock::now(), out);
    if (out.error || !out.keep_alive || opt.new_connection) conn.close();
    if (out.error && !open_loop) {  // do not spin on a refusing server
      pacer.expires_after(std::chrono::milliseconds(10));
      co_await pacer.async_wait(kUseTuple);
    }
  }
  conn.close();
  --w.running;
}

// ---- idle mode ----

struct IdleState {
  std::atomic<unsigned> next{0};
  std::atomic<unsigned> established{0};
  std::atomic<unsigned> failed{0};
  std::atomic<unsigned> dropped{0};
  std::atomic<unsigned> openers_left{0};
  std::atomic<bool> stopping{false};
};

asio::awaitable<void> idle_watch(Connection& conn, IdleState& st) {
  // A server that closes an idle connection completes this read; a quiet one never does.
  char byte;
  co_await conn.read_some(asio::buffer(&byte, 1));
  if (!st.stopping.load()) st.dropped.fetch_add(1);
}

asio::awaitable<void> idle_opener(Worker& w, Run& run, IdleState& st) {
  for (;;) {
    const unsigned i = st.next.fetch_add(1);
    if (i >= run.opt.idle_connections) break;
    auto conn = std::make_unique<Connection>(w, run);
    std::optional<ErrorKind> err = co_await conn->open();
    if (!err && !run.opt.idle_request) conn->confirm_handshake();
    if (!err && run.opt.idle_request) {
      Outcome out = co_await conn->exchange();
      err = out.error;
      if (!err && (out.status < 200 || out.status >= 300 || !out.keep_alive)) err = ErrorKind::parse;
    }
    conn->disarm();
    if (err) {
      ++w.stats.errors[static_cast<unsigned>(*err)];
      st.failed.fetch_add(1);
      continue;
    }
    st.established.fetch_add(1);
    Connection& held = *conn;
    w.idle.push_back(std::move(conn));
    asio::co_spawn(w.ioc, idle_watch(held, st), asio::detached);
  }
  --w.running;
  st.openers_left.fetch_sub(1);
}

// ---- upstream sink (--serve) ----
// A plaintext HTTP/1.1 upstream that reads every request body to its end before it answers
// `200 ok`. nginx's `return 200` answers first and discards the body, which would let a proxy
// stop relaying an upload early; an application reads what it is sent.

struct Sink {
  std::mutex log_mutex;
  std::ofstream log;  // one line per request with a body of 1 MiB or more: its length
};

asio::awaitable<void> sink_session(tcp::socket socket, Sink& sink) {
  static constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";
  static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  std::vector<char> buffer(256 * 1024);
  std::size_t head = 0;
  std::size_t tail = 0;
  HttpMessageParser parser(HttpMessageParser::Kind::request);
  bool continue_sent = false;
  for (;;) {
    if (head < tail) {
      head += parser.consume({buffer.data() + head, tail - head});
      if (head == tail) head = tail = 0;
    }
    if (parser.failed()) co_return;
    if (parser.done()) {
      if (parser.body_bytes() >= (1u << 20) && sink.log.is_open()) {
        std::lock_guard lock(sink.log_mutex);
        sink.log << parser.body_bytes() << std::endl;
      }
      auto [ec, n] = co_await asio::async_write(socket, asio::buffer(kOk), kUseTuple);
      if (ec || !parser.keep_alive()) co_return;
      parser.reset();
      continue_sent = false;
      continue;
    }
    if (parser.state() != HttpMessageParser::State::head && parser.expects_continue() && !continue_sent) {
      continue_sent = true;
      auto [ec, n] = co_await asio::async_write(socket, asio::buffer(kContinue), kUseTuple);
      if (ec) co_return;
    }
    if (tail == buffer.size()) {
      if (head == 0) co_return;  // a head larger than the buffer
      std::copy(buffer.begin() + static_cast<std::ptrdiff_t>(head), buffer.begin() + static_cast<std::ptrdiff_t>(tail),
                buffer.begin());
      tail -= head;
      head = 0;
    }
    auto [ec, n] = co_await socket.async_read_some(asio::buffer(buffer.data() + tail, buffer.size() - tail), kUseTuple);
    if (ec) co_return;
    tail += n;
  }
}

asio::awaitable<void> sink_acceptor(tcp::acceptor& acceptor, Sink& sink) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(kUseTuple);
    if (ec == asio::error::operation_aborted) co_return;
    if (!ec) asio::co_spawn(acceptor.get_executor(), sink_session(std::move(socket), sink), asio::detached);
  }
}

// Runs the sink on 127.0.0.1:PORT with one SO_REUSEPORT acceptor per thread, until SIGTERM or
// SIGINT, or --serve-seconds at the latest.
int run_sink(const Options& opt) {
  Sink sink;
  if (!opt.sink_log.empty()) sink.log.open(opt.sink_log, std::ios::app);
  using reuse_port = asio::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>;
  const tcp::endpoint endpoint(asio::ip::address_v4::loopback(), opt.serve_port);
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::list<tcp::acceptor> acceptors;
  for (unsigned i = 0; i < opt.threads; ++i) {
    auto& ioc = *contexts.emplace_back(std::make_unique<asio::io_context>(1));
    auto& acceptor = acceptors.emplace_back(ioc);
    acceptor.open(endpoint.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.set_option(reuse_port(true));
    acceptor.bind(endpoint);
    acceptor.listen(4096);
    asio::co_spawn(ioc, sink_acceptor(acceptor, sink), asio::detached);
  }
  asio::io_context control;
  asio::signal_set signals(control, SIGINT, SIGTERM);
  asio::steady_timer lifetime(control);
  lifetime.expires_after(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.serve_seconds)));
  const auto stop = [&] {
    signals.cancel();
    lifetime.cancel();
    for (auto& ioc : contexts) ioc->stop();
  };
  signals.async_wait([&](const error_code&, int) { stop(); });
  lifetime.async_wait([&](const error_code& ec) {
    if (!ec) stop();
  });
  std::vector<std::thread> threads;
  for (auto& ioc : contexts) threads.emplace_back([&ioc] { ioc->run(); });
  std::fprintf(stderr, "sink: serving on 127.0.0.1:%u with %u thread(s)\n", static_cast<unsigned>(opt.serve_port), opt.threads);
  control.run();
  for (auto& t : threads) t.join();
  return 0;
}

// ---- setup and reporting ----

Target parse_url(const std::string& url) {
  Target t;
  std::string rest;
  if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
  } else if (url.rfind("http://", 0) == 0) {
    t.tls = false;
    rest = url.substr(7);
  } else {
    throw std::runtime_error("the URL must start with https:// or http://: " + url);
  }
  const std::size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  t.path = slash == std::string::npos ? "/" : rest.substr(slash);
  std::size_t colon = authority.rfind(':');
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string::npos) throw std::runtime_error("bad IPv6 address in " + url);
    t.host = authority.substr(1, close - 1);
    colon = authority.find(':', close);
  } else {
    t.host = authority.substr(0, colon);
  }
  t.port = colon == std::string::npos ? (t.tls ? "443" : "80") : authority.substr(colon + 1);
  return t;
}

// Resolves the target and refuses anything that is not loopback: this tool must never load
// someone else's server.
tcp::endpoint resolve_loopback(const Target& t) {
  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  const auto results = resolver.resolve(t.host, t.port);
  std::optional<tcp::endpoint> chosen;
  for (const auto& r : results) {
    if (!r.endpoint().address().is_loopback())
      throw std::runtime_error("refusing non-loopback target " + t.host + " (" +
                               r.endpoint().address().to_string() + "): loopback only");
    if (!chosen) chosen = r.endpoint();
  }
  if (!chosen) throw std::runtime_error("cannot resolve " + t.host);
  return *chosen;
}

std::unique_ptr<ssl::context> make_tls_context(const Options& opt, bool idle) {
  auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, opt.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
  // No client-side session cache: every new connection is a full handshake.
  SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  if (idle) SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);  // keeps 10,000 idle clients small
  if (!opt.ciphersuites.empty() && SSL_CTX_set_ciphersuites(native, opt.ciphersuites.c_str()) != 1)
    throw std::runtime_error("bad --ciphersuites " + opt.ciphersuites);
  if (!opt.cert.empty()) {
    ctx->use_certificate_chain_file(opt.cert);
    ctx->use_private_key_file(opt.key.empty() ? opt.cert : opt.key, ssl::context::pem);
  }
  if (!opt.ca.empty()) {
    ctx->load_verify_file(opt.ca);
    ctx->set_verify_mode(ssl::verify_peer);
  } else {
    ctx->set_verify_mode(ssl::verify_none);
  }
  return ctx;
}

std::string build_request_head(const Options& opt, const Target& t) {
  std::string method = opt.method.empty() ? (opt.body_bytes > 0 ? "POST" : "GET") : opt.method;
  std::string head = method + " " + t.path + " HTTP/1.1\r\n";
  const bool v6 = t.host.find(':') != std::string::npos;
  head += "Host: " + (v6 ? "[" + t.host + "]" : t.host) + ":" + t.port + "\r\n";
  head += "User-Agent: portcullis-loadgen\r\n";
  for (const auto& h : opt.headers) head += h + "\r\n";
  if (opt.body_bytes > 0) {
    if (opt.chunked) head += "Transfer-Encoding: chunked\r\n";
    else head += "Content-Length: " + std::to_string(opt.body_bytes) + "\r\n";
  }
  if (opt.new_connection) head += "Connection: close\r\n";
  head += "\r\n";
  return head;
}

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void raise_open_file_limit() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
}

void run_workers(std::vector<std::unique_ptr<Worker>>& workers) {
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->ioc.run(); });
  for (auto& t : threads) t.join();
}

json::object base_report(const Run& run, const char* mode) {
  const Options& opt = run.opt;
  json::object o;
  if (!opt.label.empty()) o["label"] = opt.label;
  o["mode"] = mode;
  o["target"] = run.target.host + ":" + run.target.port;
  o["tls"] = run.target.tls;
  if (run.target.tls) {
    o["tls_version"] = run.tls_version;
    o["cipher"] = run.tls_cipher;
  }
  o["threads"] = opt.threads;
  return o;
}

int run_load(const Options& opt, Run& run) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 0; i < opt.threads; ++i) workers.push_back(std::make_unique<Worker>());
  run.start = Clock::now();
  run.measure_from = run.start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt.warmup_s));
  run.end = opt.duration_s > 0 ? run.start + std::chrono::duration_cast<Clock::duration>(
                                                 std::chrono::duration<double>(opt.warmup_s + opt.duration_s))
                               : Clock::time_point::max();
  // In-flight requests get two seconds past the end before they are cut off (as timeouts).
  run.hard_end = opt.duration_s > 0 ? run.end + std::chrono::seconds(2) : Clock::time_point::max();
  for (unsigned i = 0; i < opt.connections; ++i) {
    Worker& w = *workers[i % workers.size()];
    ++w.running;
    asio::co_spawn(w.ioc, connection_loop(w, run, i), asio::detached);
  }
  for (auto& w : workers) asio::co_spawn(w->ioc, watchdog(*w), asio::detached);
  run_workers(workers);

  Stats total;
  for (auto& w : workers) total.merge(w->stats);
  const auto window_end = total.responses > 0 ? total.last_completion : Clock::now();
  const double window = std::max(1e-9, seconds(window_end - run.measure_from));
  const auto& h = total.latency;
  const auto us = [](std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; };

  json::object o = base_report(run, opt.rate > 0 ? "open" : "closed");
  o["connections"] = opt.connections;
  o["keepalive"] = !opt.new_connection;
  if (opt.rate > 0) o["rate_target"] = opt.rate;
  o["seconds"] = window;
  o["responses"] = total.responses;
  o["ok"] = total.ok;
  o["rps"] = static_cast<double>(total.responses) / window;
  o["ok_rps"] = static_cast<double>(total.ok) / window;
  o["handshakes"] = total.handshakes;
  json::object lat;
  lat["min"] = us(h.min());
  lat["mean"] = h.mean() / 1000.0;
  lat["p50"] = us(h.percentile(50));
  lat["p90"] = us(h.percentile(90));
  lat["p99"] = us(h.percentile(99));
  lat["p999"] = us(h.percentile(99.9));
  lat["max"] = us(h.max());
  o["latency_us"] = std::move(lat);
  json::object errors;
  for (std::size_t i = 0; i < kErrorNames.size(); ++i)
    if (total.errors[i] != 0) errors[kErrorNames[i]] = total.errors[i];
  o["errors"] = std::move(errors);
  o["error_total"] = total.error_total();
  json::object status;
  for (std::size_t i = 0; i < total.status.size(); ++i)
    if (total.status[i] != 0) status[std::to_string(i)] = total.status[i];
  o["status"] = std::move(status);
  o["bytes_sent"] = total.bytes_sent;
  o["bytes_received"] = total.bytes_received;
  o["send_MBps"] = static_cast<double>(total.bytes_sent) / window / 1e6;
  o["recv_MBps"] = static_cast<double>(total.bytes_received) / window / 1e6;
  if (opt.body_bytes > 0) o["upload_MBps"] = static_cast<double>(total.body_bytes_sent) / window / 1e6;
  std::cout << json::serialize(o) << std::endl;

  std::string errs;
  for (std::size_t i = 0; i < kErrorNames.size(); ++i)
    if (total.errors[i] != 0) errs += " " + std::string(kErrorNames[i]) + "=" + std::to_string(total.errors[i]);
  std::fprintf(stderr,
               "%s %s %s %u conn/%u thr %.1fs: %.0f req/s (%llu responses, %llu 2xx) | latency ms p50 %.3f "
               "p90 %.3f p99 %.3f p99.9 %.3f max %.3f | errors %llu%s | sent %.1f MB/s recv %.1f MB/s\n",
               opt.rate > 0 ? "open-loop" : "closed-loop", run.target.tls ? run.tls_version.c_str() : "plaintext",
               opt.new_connection ? "new-conn" : "keep-alive", opt.connections, opt.threads, window,
               static_cast<double>(total.responses) / window, static_cast<unsigned long long>(total.responses),
               static_cast<unsigned long long>(total.ok), us(h.percentile(50)) / 1000, us(h.percentile(90)) / 1000,
               us(h.percentile(99)) / 1000, us(h.percentile(99.9)) / 1000, us(h.max()) / 1000,
               static_cast<unsigned long long>(total.error_total()), errs.c_str(),
               static_cast<double>(total.bytes_sent) / window / 1e6, static_cast<double>(total.bytes_received) / window / 1e6);
  return total.responses > 0 ? 0 : 2;
}

int run_idle(const Options& opt, Run& run) {
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 0; i < opt.threads; ++i) workers.push_back(std::make_unique<Worker>());
  IdleState st;
  run.start = run.measure_from = Clock::now();
  run.end = run.hard_end = Clock::time_point::max();
  const unsigned per_thread = std::max(1u, opt.idle_concurrency / opt.threads);
  st.openers_left = per_thread * opt.threads;
  for (auto& w : workers) {
    w->running = per_thread;
    for (unsigned i = 0; i < per_thread; ++i) asio::co_spawn(w->ioc, idle_opener(*w, run, st), asio::detached);
    asio::co_spawn(w->ioc, watchdog(*w), asio::detached);
  }
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->ioc.run(); });

  while (st.openers_left.load() > 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const double open_s = seconds(Clock::now() - run.start);
  std::fprintf(stderr, "idle: %u established, %u failed in %.1fs; holding %.0fs\n", st.established.load(),
               st.failed.load(), open_s, opt.hold_s);
  if (!opt.ready_file.empty()) {
    std::ofstream(opt.ready_file) << st.established.load() << "\n";
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(opt.hold_s));
  const unsigned dropped = st.dropped.load();
  st.stopping = true;
  for (auto& w : workers) {
    asio::post(w->ioc, [&w] {
      for (auto& c : w->idle) c->close();
    });
  }
  for (auto& t : threads) t.join();
  workers.clear();

  Stats total;
  json::object o = base_report(run, "idle");
  o["requested"] = opt.idle_connections;
  o["established"] = st.established.load();
  o["failed"] = st.failed.load();
  o["dropped_while_held"] = dropped;
  o["held"] = st.established.load() - dropped;
  o["open_seconds"] = open_s;
  o["hold_seconds"] = opt.hold_s;
  std::cout << json::serialize(o) << std::endl;
  std::fprintf(stderr, "idle %u requested: %u established, %u failed, %u dropped while held %.0fs\n",
               opt.idle_connections, st.established.load(), st.failed.load(), dropped, opt.hold_s);
  return st.established.load() - dropped == opt.idle_connections ? 0 : 2;
}

// The machine's loopback TCP ceiling: one writer thread and one reader thread, 1 MiB writes.
int run_loopback_tcp(const Options& opt) {
  asio::io_context ioc;
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
  std::uint64_t received = 0;
  std::thread reader([&] {
    tcp::socket s = acceptor.accept();
    std::vector<char> b(1 << 20);
    error_code ec;
    for (;;) {
      const std::size_t n = s.read_some(asio::buffer(b), ec);
      if (ec) break;
      received += n;
    }
  });
  tcp::socket out(ioc);
  out.connect(acceptor.local_endpoint());
  const std::vector<char> block(1 << 20, 'x');
  const auto start = Clock::now();
  for (std::uint64_t left = opt.loopback_tcp_bytes; left > 0;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(left, block.size()));
    asio::write(out, asio::buffer(block.data(), n));
    left -= n;
  }
  out.shutdown(tcp::socket::shutdown_send);
  reader.join();
  const double s = seconds(Clock::now() - start);
  json::object o;
  if (!opt.label.empty()) o["label"] = opt.label;
  o["mode"] = "loopback_tcp";
  o["bytes"] = received;
  o["seconds"] = s;
  o["MBps"] = static_cast<double>(received) / s / 1e6;
  std::cout << json::serialize(o) << std::endl;
  std::fprintf(stderr, "loopback TCP: %.0f MB/s (%llu bytes in %.2fs)\n", static_cast<double>(received) / s / 1e6,
               static_cast<unsigned long long>(received), s);
  return received == opt.loopback_tcp_bytes ? 0 : 2;
}

int main_impl(int argc, char** argv) {
  Options opt;
  CLI::App app{"portcullis-loadgen: HTTP/1.1 (+mTLS) load generator for loopback benchmarks"};
  app.add_option("url", opt.url, "https://HOST:PORT/PATH or http://... (loopback only)");
  app.add_option("-c,--connections", opt.connections, "concurrent connections")->check(CLI::Range(1u, 20000u));
  app.add_option("-t,--threads", opt.threads, "threads, one io_context each")->check(CLI::Range(1u, 64u));
  app.add_option("-d,--duration", opt.duration_s, "seconds of measurement (after --warmup)")->check(CLI::Range(0.0, 3600.0));
  app.add_option("-n,--requests", opt.max_requests, "stop after this many requests (warm-up included)");
  app.add_option("--warmup", opt.warmup_s, "seconds run but not measured")->check(CLI::Range(0.0, 600.0));
  app.add_option("-R,--rate", opt.rate, "open loop at this many requests/s in total (0 = closed loop)")->check(CLI::NonNegativeNumber);
  app.add_flag("--new-connection", opt.new_connection, "a new connection (full TLS handshake) per request");
  app.add_option("-m,--method", opt.method, "request method (default GET, or POST with a body)");
  app.add_option("-H,--header", opt.headers, "extra request header 'Name: value'");
  app.add_option("--body-bytes", opt.body_bytes, "stream a request body of this many bytes");
  app.add_flag("--chunked", opt.chunked, "send the body chunked instead of with Content-Length");
  app.add_option("--chunk-bytes", opt.chunk_bytes, "body write (and chunk) size")->check(CLI::Range(std::size_t{1}, std::size_t{16} << 20));
  app.add_option("--cert", opt.cert, "client certificate chain (PEM); may also hold the key");
  app.add_option("--key", opt.key, "client private key (PEM)");
  app.add_option("--ca", opt.ca, "verify the server against this CA (default: no verification)");
  app.add_option("--sni", opt.sni, "server name to send and verify (default: the URL's host)");
  app.add_flag("--tls13", opt.tls13_only, "offer TLS 1.3 only");
  app.add_option("--ciphersuites", opt.ciphersuites, "TLS 1.3 ciphersuites to offer");
  app.add_option("--timeout-ms", opt.timeout_ms, "per I/O operation")->check(CLI::Range(1u, 600000u));
  app.add_option("--idle", opt.idle_connections, "idle mode: open this many connections, hold, report")->check(CLI::Range(0u, 19000u));
  app.add_option("--hold", opt.hold_s, "idle mode: seconds to hold the connections")->check(CLI::Range(0.0, 600.0));
  app.add_option("--idle-concurrency", opt.idle_concurrency, "idle mode: handshakes in flight")->check(CLI::Range(1u, 4096u));
  app.add_flag("--idle-request", opt.idle_request, "idle mode: one request on each connection before holding it");
  app.add_option("--ready-file", opt.ready_file, "idle mode: written once every connection is open");
  app.add_option("--loopback-tcp", opt.loopback_tcp_bytes, "reference mode: loopback TCP MB/s over this many bytes");
  app.add_option("--serve", opt.serve_port, "sink mode: serve the upload sink on 127.0.0.1:PORT");
  app.add_option("--serve-seconds", opt.serve_seconds, "sink mode: exit after this long at the latest")->check(CLI::Range(1.0, 86400.0));
  app.add_option("--sink-log", opt.sink_log, "sink mode: append the length of each body of 1 MiB or more");
  app.add_option("--label", opt.label, "copied into the JSON line");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (opt.loopback_tcp_bytes > 0) return run_loopback_tcp(opt);
  if (opt.serve_port != 0) return run_sink(opt);
  if (opt.duration_s == 0 && opt.max_requests == 0 && opt.idle_connections == 0) opt.duration_s = 10;
  if (opt.rate > 0 && opt.duration_s == 0 && opt.max_requests == 0) opt.duration_s = 10;
  opt.threads = std::min(opt.threads, std::max(1u, opt.idle_connections > 0 ? opt.threads : opt.connections));

  raise_open_file_limit();
  Run run(opt);
  run.target = parse_url(opt.url);
  run.endpoint = resolve_loopback(run.target);
  if (run.target.tls) run.tls = make_tls_context(opt, opt.idle_connections > 0);
  run.request_head = build_request_head(opt, run.target);
  if (opt.body_bytes > 0) {
    run.body_block.resize(static_cast<std::size_t>(std::min<std::uint64_t>(opt.body_bytes, opt.chunk_bytes)));
    for (std::size_t i = 0; i < run.body_block.size(); ++i) run.body_block[i] = static_cast<char>('a' + i % 26);
  }
  return opt.idle_connections > 0 ? run_idle(opt, run) : run_load(opt, run);
}

}  // namespace
}  // namespace portcullis::bench

int main(int argc, char** argv) {
  try {
    return portcullis::bench::main_impl(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "portcullis-loadgen: %s\n", e.what());
    return 1;
  }
}
