// One downstream HTTP/1.1 connection: TLS handshake, then a request loop. Each request is
// checked (framing, target, policy) before anything reaches the upstream, then relayed with
// bodies streamed in both directions.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_allocator.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/intrusive/list.hpp>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "proxy/http/docker_gateway.hpp"
#include "proxy/http/head_check.hpp"
#include "proxy/http/kube_gateway.hpp"
#include "proxy/http/parser.hpp"
#include "proxy/http/responses.hpp"
#include "proxy/net/buffer.hpp"
#include "proxy/net/cold_poll.hpp"
#include "proxy/net/deadline.hpp"
#include "proxy/net/exact_allocator.hpp"
#include "proxy/observe/access_log.hpp"
#include "proxy/policy/normalize.hpp"
#include "proxy/worker.hpp"

namespace portcullis {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using ms = std::chrono::milliseconds;
using net::error_code;

constexpr std::size_t io_chunk = 16 * 1024;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return out;
}

// Hop-by-hop fields (RFC 9110 7.6.1) and framing we set ourselves.
bool is_hop_by_hop(std::string_view name) {
  return name == "connection" || name == "keep-alive" || name == "proxy-connection" || name == "te" ||
         name == "trailer" || name == "transfer-encoding" || name == "upgrade" || name == "content-length" ||
         name == "http2-settings";
}

// Identity headers only Portcullis may set: a client's copies are removed, every X-Remote-*
// (the apiserver's --requestheader-*-headers: User, Group, Uid, Extra-*) included, and in any
// spelling with '_' for '-' (X_Forwarded_Client_Cert is the same header to CGI/WSGI and to nginx
// with underscores_in_headers), whatever headers_with_underscores says.
bool is_identity_header(std::string_view name) {
  constexpr std::string_view remote = "x-remote-";
  return http::same_field_name(name, "x-forwarded-client-cert") ||
         (name.size() >= remote.size() && http::same_field_name(name.substr(0, remote.size()), remote));
}

// RFC 9110 9.2.2.
bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" || method == "PUT" ||
         method == "DELETE";
}

std::string host_without_port(std::string_view h) {
  std::string s = lower(h);
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    return close == std::string::npos ? s : s.substr(0, close + 1);
  }
  auto colon = s.rfind(':');
  if (colon != std::string::npos && s.find(':') == colon) s.resize(colon);
  return s;
}

std::string xfcc_value(const certs::Identity& id) {
  auto quote = [](std::string_view v) {
    std::string out = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    return out + "\"";
  };
  // RFC 4514 escaping inside each value, so that a CN "mallory,O=ops" stays one CN.
  auto dn_value = [](std::string_view v) {
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const char c = v[i];
      if (std::string_view(",+\"\\<>;=").find(c) != std::string_view::npos || (i == 0 && (c == '#' || c == ' ')) ||
          (i + 1 == v.size() && c == ' '))
        out += '\\';
      out += c;
    }
    return out;
  };
  std::string subject = "CN=" + dn_value(id.user);
  for (const auto& g : id.groups) subject += ",O=" + dn_value(g);
  std::string v = "Hash=" + id.fingerprint_sha256;
  if (!id.spiffe.empty()) v += ";URI=" + id.spiffe;
  v += ";Subject=" + quote(subject);
  for (const auto& d : id.dns) v += ";DNS=" + d;
  return v;
}

// "name: value\r\n", growing out once.
void append_field(std::string& out, std::string_view name, std::string_view value) {
  const std::size_t at = out.size();
  out.resize(at + name.size() + value.size() + 4);
  char* p = out.data() + at;
  std::memcpy(p, name.data(), name.size());
  p += name.size();
  *p++ = ':';
  *p++ = ' ';
  std::memcpy(p, value.data(), value.size());
  p += value.size();
  *p++ = '\r';
  *p = '\n';
}

void append_hex(std::string& out, std::size_t n) {
  char buf[20];
  int len = std::snprintf(buf, sizeof buf, "%zx", n);
  out.append(buf, static_cast<std::size_t>(len));
}

class IdleParking;
using IdleHook = boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::auto_unlink>>;

class HttpSession {
 public:
  HttpSession(Worker& w, std::string listener, net::tcp_socket socket, ConnectionEnded ended)
      : w_(w),
        ended_(std::move(ended)),
        snap_(w.snapshot),
        lrt_(&snap_->listeners.at(listener)),
        in_(std::max<std::size_t>(limits().header_bytes + 1, io_chunk)),
        deadline_(socket.get_executor(), [](void* self) { static_cast<HttpSession*>(self)->close_all(); }, this) {
    error_code ec;
    auto ep = socket.remote_endpoint(ec);
    if (!ec) {
      source_ip_ = ep.address().to_string();
      source_port_ = ep.port();
    }
    socket.set_option(net::tcp::no_delay(true), ec);
    if (lrt_->server_ctx) {
      down_ = net::Stream(net::Stream::tls_over, std::move(socket), lrt_->server_ctx.get(), true);
    } else {
      down_ = net::Stream(std::move(socket));
    }
  }

  ~HttpSession() {
    idle_hook_.unlink();
    deadline_.stop();
    if (cold_fd_ >= 0) ::close(cold_fd_);  // the worker is being torn down (closing leaves its epoll set too)
  }

  // What wakes a connection's coroutine.
  enum class Wake { accepted, readable, closing };

  // A connection alternates between two states. Active: a coroutine runs the handshake and
  // requests, and owns the session. Idle (no unread byte): no coroutine at all, only a
  // readiness wait on the socket whose handler owns the session and starts a new coroutine
  // when a byte arrives. An idle connection is this object, OpenSSL's state and one wait, or,
  // after a second or two, not even the wait (IdleParking, below).
  static void activate(std::unique_ptr<HttpSession> self, Wake why) {
    auto& ioc = self->w_.ioc;
    asio::co_spawn(ioc, run(std::move(self), why), asio::detached);
  }

 private:
  friend class IdleParking;

  // The listener's limits, following a reload between requests.
  const config::Limits& limits() const { return lrt_->cfg.limits; }

  static net::awaitable<void> run(std::unique_ptr<HttpSession> self, Wake why) {
    HttpSession& s = *self;
    bool clean = true;  // the connection ends with a close_notify / FIN, not just a close
    try {
      if (why == Wake::accepted && !co_await s.handshake()) {
        clean = false;
      } else if (why != Wake::closing) {
        bool readable = why == Wake::readable;
        while (!s.w_.draining) {
          if (!readable && s.in_.empty()) {
            s.in_.release_if_empty();
            if (!s.tls() || !s.tls()->has_buffered_data()) {
              park(std::move(self));
              co_return;
            }
          }
          s.woken_ = readable;
          readable = false;
          if (!co_await s.serve_one()) break;
          // The listener may have been removed or changed by a reload: finish with it.
          if (s.w_.snapshot != s.snap_) {
            auto it = s.w_.snapshot->listeners.find(s.lrt_->cfg.name);
            if (it == s.w_.snapshot->listeners.end()) break;
            s.snap_ = s.w_.snapshot;
            s.lrt_ = &it->second;
          }
        }
      }
      if (clean) {
        s.deadline_.arm(1000ms);
        s.release_upstream(false);
        co_await s.down_.shutdown_send();
      }
    } catch (const std::exception& e) {
      spdlog::error("connection ended by an unexpected exception: {}", e.what());
    } catch (...) {
      spdlog::error("connection ended by an unexpected exception");
    }
    s.down_.close();
    s.ended_->connection_ended(s.w_);
  }

  // Idle between requests: waits for readability without reading, so no buffer is held, directly
  // on the socket, with the idle timeout armed. A drain closes the socket, which ends the wait.
  static void park(std::unique_ptr<HttpSession> self);

  // The wait of a parked connection. Its handler owns the session. IdleParking's sweep cancels
  // it to move the connection out of asio (going_cold_); anything else that ends the wait (a
  // byte, the peer, a deadline or a drain closing the socket) wakes the connection.
  static void wait_readable(std::unique_ptr<HttpSession> self);

  // False when the handshake failed (logged and counted here).
  net::awaitable<bool> handshake() {
    if (!tls()) co_return true;
    deadline_.arm(ms(limits().handshake_timeout_ms), "handshake timeout");
    auto hec = co_await tls()->handshake();
    w_.metrics.add(observe::Metric::tls_handshakes_total, observe::labels({{"listener", listener()}}));
    if (hec) {
      if (deadline_.expired()) w_.metrics.add(observe::Metric::slow_clients_total, observe::labels({{"listener", listener()}, {"phase", "handshake"}}));
      w_.metrics.add(observe::Metric::tls_handshake_failures_total,
                     observe::labels({{"listener", listener()}, {"reason", observe::handshake_failure_reason(tls()->ssl(), hec, deadline_.expired())}}));
      log_connection_error(deadline_.expired() ? "TLS handshake timed out" : "TLS handshake failed: " + handshake_reason(hec));
      co_return false;
    }
    peer_ = w_.identities.lookup(tls()->ssl());  // shared with connections presenting the same certificate
    co_return true;
  }

  std::string handshake_reason(const error_code& ec) {
    long v = tls() && tls()->ssl() ? SSL_get_verify_result(tls()->ssl()) : X509_V_OK;
    if (v != X509_V_OK) return std::string("client certificate rejected: ") + X509_verify_cert_error_string(v);
    return ec.message();
  }

  // A wait on the upstream that times out closes only the upstream, so the client still gets
  // its 504/502; any other wait closes both sides.
  void close_all();

  // What read_head() returns when a connection woken from idle finds no byte after all: an edge
  // can announce bytes that the previous request's read already took (EdgeReadiness). The
  // connection then goes back to idle, instead of waiting here with a buffer.
  static constexpr long nothing_yet = -1;

  // Reads until a whole request head is buffered. Returns its length, 0 when the connection
  // ended cleanly before a request, nothing_yet, or -status when the head must be refused.
  net::awaitable<long> read_head() {
    std::size_t scanned = 0;
    const bool woken = std::exchange(woken_, false);
    // The head has header_timeout_ms from its first byte. park() woke us for readability, which a
    // TLS record with no request byte in it (a TLS 1.3 KeyUpdate) also gives: until a byte
    // arrives the connection is still idle.
    if (in_.empty()) deadline_.arm(ms(limits().idle_timeout_ms), "idle timeout");
    else deadline_.arm(ms(limits().header_timeout_ms), "header timeout");
    for (;;) {
      auto d = in_.data();
      for (std::size_t i = d.find('\n', scanned); i != std::string_view::npos; i = d.find('\n', i + 1)) {
        // A blank line ends the head: "\n\r\n" or "\n\n" (the bare-LF form is refused later).
        if (i + 1 < d.size() && d[i + 1] == '\n') co_return static_cast<long>(i + 2);
        if (i + 2 < d.size() && d[i + 1] == '\r' && d[i + 2] == '\n') co_return static_cast<long>(i + 3);
      }
      scanned = d.size() >= 2 ? d.size() - 2 : 0;
      if (d.size() > limits().header_bytes) co_return -431;
      char* space = in_.space();
      auto [ec, n] = co_await down_.read_some(asio::buffer(space, std::min(in_.space_size(), io_chunk * 4)), !(woken && in_.empty()));
      if (ec == asio::error::would_block) co_return nothing_yet;
      if (ec || n == 0) {
        if (in_.empty()) co_return 0;
        co_return deadline_.expired() ? -408 : 0;
      }
      if (in_.empty()) deadline_.arm(ms(limits().header_timeout_ms), "header timeout");
      in_.commit(n);
      rq_->bytes_in += n;
    }
  }

  net::awaitable<bool> refuse(int status, std::string_view kind, std::string reason) {
    observe::count_refusal(w_.metrics, listener(), status);
    auto body = http::error_body(lrt_->cfg.protocol, status, kind, reason);
    auto resp = http::json_response(status, body, http::Persistence::close);
    deadline_.arm(ms(limits().idle_timeout_ms), "write timeout");
    co_await down_.write_all(asio::buffer(resp));
    rq_->record.outcome = "error";
    rq_->record.status = status;
    rq_->record.reason = reason;
    rq_->bytes_out += resp.size();
    finish_record();
    co_return false;
  }

  // A head the framing checks refuse: what two parsers could read differently is a smuggling attempt.
  net::awaitable<bool> refuse_framing(std::string reason) {
    w_.metrics.add(observe::Metric::smuggling_attempts_total, observe::labels({{"listener", listener()}}));
    co_return co_await refuse(400, "bad_request", std::move(reason));
  }

  net::awaitable<bool> serve_one() {
    RequestState rq;
    rq_ = &rq;
    reset_record();
    long head_len = co_await read_head();
    if (head_len == 0) co_return false;
    if (head_len == nothing_yet) co_return true;
    if (head_len < 0) {
      int status = static_cast<int>(-head_len);
      if (status == 408) {
        // The deadline has closed the socket: there is no one left to send a 408 to.
        w_.metrics.add(observe::Metric::slow_clients_total, observe::labels({{"listener", listener()}, {"phase", "header"}}));
        log_connection_error("request head not complete within header_timeout_ms");
        co_return false;
      }
      co_return co_await refuse(431, "header_too_large",
                                "request head larger than header_bytes (" + std::to_string(limits().header_bytes) + ")");
    }
    std::string_view head = in_.data().substr(0, static_cast<std::size_t>(head_len));
    if (auto why = http::check_raw_head(head); !why.empty()) co_return co_await refuse_framing(std::move(why));

    http::Parser<true> req;
    req.header_limit(static_cast<std::uint32_t>(std::min<std::uint64_t>(limits().header_bytes, UINT32_MAX)));
    if (limits().max_body_bytes) req.body_limit(limits().max_body_bytes);
    else req.body_limit(boost::none);
    error_code ec;
    std::size_t used = req.put(asio::buffer(head.data(), head.size()), ec);
    if (ec == boost::beast::http::error::header_limit)
      co_return co_await refuse(431, "header_too_large",
                                "request head larger than header_bytes (" + std::to_string(limits().header_bytes) + ")");
    if (ec == boost::beast::http::error::body_limit)
      co_return co_await refuse(413, "body_too_large",
                                "request body larger than max_body_bytes (" + std::to_string(limits().max_body_bytes) + ")");
    if (ec || !req.is_header_done())
    {
      // GCC 12 miscompiles a ?: that builds temporaries inside a co_await expression (it destroys
      // the branch it never built): every such message is built in a local first.
      std::string why = "malformed request head: ";
      if (observe::is_framing_error(ec)) w_.metrics.add(observe::Metric::smuggling_attempts_total, observe::labels({{"listener", listener()}}));
      why += ec ? ec.message() : std::string("incomplete");
      co_return co_await refuse(400, "bad_request", std::move(why));
    }
    in_.consume(used);
    rq_->record.method = req.method;

    if (req.version != 11 && req.version != 10)
      co_return co_await refuse(505, "bad_version", "only HTTP/1.0 and HTTP/1.1 are served");
    rq_->keep_alive = req.keep_alive();  // HTTP/1.1 without `close`, HTTP/1.0 with `keep-alive`
    rq_->http10 = req.version == 10;
    if (auto why = http::check_request_fields(req.fields); !why.empty()) co_return co_await refuse_framing(std::move(why));
    if (auto why = http::check_request_body(req.method, req.fields); !why.empty()) co_return co_await refuse_framing(std::move(why));
    // Header names with '_' (headers_with_underscores): an upstream that reads X_Tenant as
    // X-Tenant would see a header no `headers:` rule looked at.
    auto underscored = [](const policy::Header& f) { return f.name.find('_') != std::string::npos; };
    if (lrt_->cfg.headers_with_underscores != config::Underscores::allow && std::ranges::any_of(req.fields, underscored)) {
      if (lrt_->cfg.headers_with_underscores == config::Underscores::reject) {
        std::string why = "header name '" + std::ranges::find_if(req.fields, underscored)->name +
                          "' has an underscore, which some upstreams read as '-' (headers_with_underscores: reject)";
        co_return co_await refuse(400, "bad_request", std::move(why));
      }
      std::erase_if(req.fields, underscored);
    }
    if (auto why = http::check_request_overrides(req.fields); !why.empty())
      co_return co_await refuse(400, "bad_request", std::move(why));
    auto target = policy::normalize_target(req.method, req.target);
    if (!target.ok) co_return co_await refuse(400, "bad_request", "request target refused: " + target.error);
    rq_->path = target.path;
    rq_->query = target.query;
    rq_->record.path = rq_->path;
    rq_->record.query = rq_->query;

    const std::string* host_field = req.field("host");
    std::string host = host_field ? host_without_port(*host_field) : std::string();
    if (!target.authority.empty() && host_without_port(target.authority) != host)
    {
      std::string why = "absolute-form target names host '" + target.authority + "' but the Host header says '";
      if (host_field) why += *host_field;
      why += "'";
      co_return co_await refuse(400, "bad_request", std::move(why));
    }

    bool has_body = req.chunked() || (req.content_length() && *req.content_length() > 0);
    bool upgrade = false;
    std::string_view upgrade_to;
    if (auto* u = req.field("upgrade"); u && req.version == 11) {
      auto* c = req.field("connection");
      if (c && http::has_token(*c, "upgrade") && !http::has_token(*u, "h2c")) {
        upgrade = true;
        upgrade_to = *u;
      }
    }
    for (const auto& f : req.fields)
      if (f.name.starts_with("impersonate-") || f.name.starts_with("impersonate_"))
        co_return co_await deny("client-sent " + f.name + " header refused: only Portcullis sets impersonation", "", has_body);
    // A subject name left out of the identity (a space at an end, control characters) is not
    // forwarded in some other spelling, nor quietly dropped from what the upstream is told.
    if (peer_ && !peer_->unusable.empty() && lrt_->cfg.protocol != config::Protocol::kubernetes &&
        lrt_->cfg.forward_identity != config::ForwardIdentity::none)
      co_return co_await deny("the client certificate cannot be forwarded as it is: " + peer_->unusable, "", has_body);
    // One X-Remote-Group line per group: a CGI/WSGI app joins repeated lines with commas, so a
    // group "viewer,ops" would read as two groups.
    if (peer_ && lrt_->cfg.protocol != config::Protocol::kubernetes &&
        lrt_->cfg.forward_identity == config::ForwardIdentity::remote_user &&
        std::ranges::any_of(peer_->groups, [](const std::string& g) { return g.find(',') != std::string::npos; }))
      co_return co_await deny("the client certificate has a group name with a comma, which X-Remote-Group cannot carry",
                              "", has_body);

    // Kubernetes listeners: who asks (client certificate or TokenReview) and what, in RBAC terms.
    std::optional<http::KubeGateway> kube;
    if (lrt_->cfg.protocol == config::Protocol::kubernetes) {
      const certs::Identity* cert_identity = peer_.get();
      kube.emplace();
      auto refusal = co_await kube->prepare(*lrt_, cert_identity, req.method, rq_->path, rq_->query, req.fields);
      kube->fill_record(rq_->record);
      if (refusal && refusal->status == 403) co_return co_await deny(std::move(refusal->reason), "", has_body);
      if (refusal) co_return co_await refuse(refusal->status, refusal->kind, std::move(refusal->reason));
    }

    // Docker listeners: the action, and the create/update bodies read whole and inspected.
    std::optional<http::DockerGate> docker;
    if (lrt_->cfg.protocol == config::Protocol::docker) {
      docker.emplace();
      std::string why = co_await docker->prepare(req, rq_->path, rq_->query, limits(), lrt_->upstream->cfg,
                                                 http::DownstreamBody{in_, down_, deadline_, rq_->bytes_in});
      rq_->record.docker_action = docker->attrs.action;
      if (!why.empty()) co_return co_await deny(std::move(why), "", true);
    }
    const bool buffered = docker && docker->buffered;  // forwarded from docker->body, not relayed

    policy::Request pr;
    pr.peer = peer_.get();
    if (kube) pr.peer = kube->identity();
    if (kube) pr.kube = &kube->attributes();
    pr.method = req.method;
    pr.host = host;
    pr.path = rq_->path;
    pr.query = rq_->query;
    pr.headers = req.fields;
    if (docker) pr.docker = &docker->attrs;
    pr.explain_allow = observe::access_log_records_allows();
    auto decision = lrt_->policy->decide(pr);
    if (kube && !decision.allowed()) decision.reason = kube->denial_reason(*lrt_->policy, pr, decision);
    rq_->record.rule = decision.rule;
    rq_->record.reason = decision.reason;
    if (!decision.allowed() && docker) decision.reason = http::docker_denial_reason(*lrt_->policy, pr, decision);
    if (!decision.allowed()) co_return co_await deny(decision.reason, decision.rule, has_body || buffered);
    rq_->record.outcome = decision.outcome == policy::Decision::Outcome::audit_deny ? "audit-deny" : "allow";

    // Allowed: the request goes upstream.
    std::string out;
    out.reserve(head.size() + 256);
    out += req.method;
    out += ' ';
    out += rq_->path;
    if (!rq_->query.empty()) {
      out += '?';
      out += rq_->query;
    }
    out += " HTTP/1.1\r\n";
    bool expect_continue = false;
    bool saw_host = false;
    bool saw_proto = false;
    const bool keep_forwarded = lrt_->cfg.forwarded_headers == config::ForwardedHeaders::append;
    std::string forwarded_for;  // the client's X-Forwarded-For values, when kept
    for (const auto& f : req.fields) {
      if (is_hop_by_hop(f.name) || is_identity_header(f.name)) continue;
      if (kube && kube->drops_header(f.name)) continue;
      if (f.name == "expect") {
        expect_continue = lower(f.value) == "100-continue";
        continue;
      }
      if (http::is_forwarded_field(f.name)) {
        if (!keep_forwarded) continue;  // replaced by what we saw, below
        if (f.name == "x-forwarded-for") {
          if (!forwarded_for.empty()) forwarded_for += ", ";
          forwarded_for += f.value;
          continue;
        }
        if (f.name == "x-forwarded-proto") saw_proto = true;
      }
      if (f.name == "host") saw_host = true;
      append_field(out, f.name, f.value);
    }
    if (!saw_host) append_field(out, "host", host);  // HTTP/1.0 without Host
    // Where the request came from, as this proxy saw it (forwarded_headers).
    if (!source_ip_.empty()) {
      if (!forwarded_for.empty()) forwarded_for += ", ";
      forwarded_for += source_ip_;
    }
    if (!forwarded_for.empty()) append_field(out, "x-forwarded-for", forwarded_for);
    if (!saw_proto) append_field(out, "x-forwarded-proto", lrt_->server_ctx ? "https" : "http");
    if (peer_ && lrt_->cfg.forward_identity == config::ForwardIdentity::xfcc)
    {
      if (side().xfcc.empty()) side().xfcc = xfcc_value(*peer_);  // the peer is fixed for the connection
      append_field(out, "x-forwarded-client-cert", side().xfcc);
    }
    if (kube) kube->append_identity_headers(out);  // Impersonate-* or X-Remote-*
    else if (peer_ && lrt_->cfg.forward_identity == config::ForwardIdentity::remote_user) {
      append_field(out, "x-remote-user", peer_->user);
      for (const auto& g : peer_->groups) append_field(out, "x-remote-group", g);
    }
    if (buffered) out += "content-length: " + std::to_string(docker->body.size()) + "\r\n";
    else if (req.chunked()) out += "transfer-encoding: chunked\r\n";
    else if (req.content_length()) out += "content-length: " + std::to_string(*req.content_length()) + "\r\n";
    if (upgrade) {
      out += "connection: upgrade\r\nupgrade: ";
      out += upgrade_to;
      out += "\r\n";
    }
    out += "\r\n";
    if (buffered) out += docker->body;  // exactly the bytes inspected

    // RFC 9112 9.3.1: an idempotent request whose every byte we still hold may be sent again
    // on a new connection when the kept-alive one was closed under it (between the liveness
    // check and our write, the upstream's keep-alive timeout can pass). Any other request is
    // never sent twice.
    const bool retryable = (!has_body || buffered) && is_idempotent(req.method);
    side().retry_request = retryable ? &out : nullptr;
    if (!co_await ensure_upstream(true)) co_return false;
    deadline_.arm(ms(limits().idle_timeout_ms), "upstream write timeout");
    // Let the worker read the other connections that are ready before this request goes out:
    // their requests then reach the upstream together and it serves several per wake-up, as
    // behind HAProxy, instead of waking once per request (more context switches on both sides,
    // and a longer tail when the cores are shared). One pass of the worker's queue; measured in
    // benchmarks/README.md.
    co_await asio::post(w_.ioc.get_executor(), asio::use_awaitable);
    if (side().early && side().early->done) {
      // The read started on the kept connection found bytes, an end of stream or an error
      // before the request was written: closed or unsolicited, it is not used (ensure_upstream()
      // closes a connection whose early read was not consumed).
      if (!co_await ensure_upstream()) co_return false;
    }
    auto wec = co_await up().write_all(asio::buffer(out));
    if (wec && side().reused) {
      // A pooled connection the upstream had closed: one fresh attempt, nothing was sent yet.
      side().retry_request = nullptr;
      up().close();
      if (!co_await ensure_upstream()) co_return false;
      wec = co_await up().write_all(asio::buffer(out));
    }
    if (wec) co_return co_await upstream_failed(502, "writing the request to the upstream failed: " + wec.message());

    if (expect_continue && has_body && !buffered) {
      static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
      co_await down_.write_all(asio::buffer(cont));
    }

    // Request body, streamed: each piece goes upstream before the buffer is refilled.
    req.eager(true);
    while (!req.is_done()) {
      if (!in_.empty()) {
        error_code pec;
        req.pieces().clear();
        std::size_t n = req.put(asio::buffer(in_.data().data(), in_.size()), pec);
        if (pec && pec != boost::beast::http::error::need_more) {
          up().close();
          int status = pec == boost::beast::http::error::body_limit ? 413 : 400;
          std::string why = status == 413 ? std::string("request body larger than max_body_bytes")
                                          : "malformed request body: " + pec.message();
          co_return co_await refuse(status, status == 413 ? "body_too_large" : "bad_request", std::move(why));
        }
        auto e = co_await forward_pieces(up(), req.pieces(), req.chunked());
        in_.consume(n);
        if (e) co_return co_await upstream_failed(502, "sending the request body to the upstream failed: " + e.message());
        if (!pec && n > 0) continue;
      }
      if (in_.space_size() == 0) co_return co_await refuse(400, "bad_request", "chunk header too large");
      deadline_.arm(ms(limits().idle_timeout_ms), "request body timeout");
      auto [rec, rn] = co_await down_.read_some(asio::buffer(in_.space(), std::min(in_.space_size(), io_chunk * 4)));
      if (rec || rn == 0) {
        up().close();
        rq_->record.outcome = "error";
        rq_->record.reason = "client closed the connection during the request body";
        if (deadline_.expired()) w_.metrics.add(observe::Metric::slow_clients_total, observe::labels({{"listener", listener()}, {"phase", "body"}}));
        finish_record();
        co_return false;
      }
      in_.commit(rn);
      rq_->bytes_in += rn;
    }
    if (req.chunked() && !buffered) {
      static constexpr std::string_view last = "0\r\n\r\n";
      if (auto e = co_await up().write_all(asio::buffer(last)))
        co_return co_await upstream_failed(502, "sending the request body to the upstream failed: " + e.message());
    }
    co_return co_await relay_response(req, upgrade);
  }

  // Writes body pieces, as chunks when `chunked`, coalesced into one write.
  net::awaitable<error_code> forward_pieces(net::Stream& to, const std::vector<std::string_view>& pieces, bool chunked) {
    if (pieces.empty()) co_return error_code{};
    if (!chunked && pieces.size() == 1) co_return co_await to.write_all(asio::buffer(pieces[0].data(), pieces[0].size()));
    rq_->scratch.clear();
    for (auto p : pieces) {
      if (p.empty()) continue;
      if (chunked) {
        append_hex(rq_->scratch, p.size());
        rq_->scratch += "\r\n";
      }
      rq_->scratch.append(p);
      if (chunked) rq_->scratch += "\r\n";
    }
    if (rq_->scratch.empty()) co_return error_code{};
    co_return co_await to.write_all(asio::buffer(rq_->scratch));
  }

  net::awaitable<bool> relay_response(http::Parser<true>& req, bool upgrade) {
    bool head_request = req.method == "HEAD";
    for (;;) {
      http::Parser<false> resp;
      resp.header_limit(static_cast<std::uint32_t>(std::min<std::uint64_t>(limits().header_bytes, UINT32_MAX)));
      resp.body_limit(boost::none);
      if (head_request) resp.skip(true);
      // Time to the first response byte: upstream_timeout_ms (0 = unbounded, for watches).
      if (limits().upstream_timeout_ms) deadline_.arm(ms(limits().upstream_timeout_ms), "upstream timeout");
      else deadline_.disarm();
      while (!resp.is_header_done()) {
        if (!upbuf().empty()) {
          error_code pec;
          std::size_t n = resp.put(asio::buffer(upbuf().data().data(), upbuf().size()), pec);
          upbuf().consume(n);
          if (pec && pec != boost::beast::http::error::need_more)
            co_return co_await upstream_failed(502, "malformed upstream response: " + pec.message());
          if (resp.is_header_done()) break;
        }
        if (upbuf().space_size() == 0) co_return co_await upstream_failed(502, "upstream response head too large");
        error_code rec;
        std::size_t rn = 0;
        if (auto early = std::move(side().early)) {
          // The read ensure_upstream() started into this same space before the request went out.
          if (early->into != upbuf().space()) co_return co_await upstream_failed(502, "internal error: upstream read buffer moved");
          std::tie(rec, rn) = co_await net::Stream::finish_early_read(std::move(early));
        } else {
          std::tie(rec, rn) = co_await up().read_some(asio::buffer(upbuf().space(), upbuf().space_size()));
        }
        if ((rec || rn == 0) && !deadline_.expired() && side().reused && side().retry_request && upbuf().empty()) {
          // Not one byte of a response on a kept-alive connection: the upstream had closed it.
          // Send the request again, once, on a new connection.
          const std::string* again = std::exchange(side().retry_request, nullptr);
          up().close();
          spdlog::debug("listener '{}': kept-alive upstream connection was closed; sending the request again", listener());
          if (!co_await ensure_upstream()) co_return false;
          if (limits().upstream_timeout_ms) deadline_.arm(ms(limits().upstream_timeout_ms), "upstream timeout");
          if (auto e = co_await up().write_all(asio::buffer(*again)))
            co_return co_await upstream_failed(502, "writing the request to the upstream failed: " + e.message());
          continue;
        }
        if (rec || rn == 0) {
          if (deadline_.expired())
            co_return co_await upstream_failed(504, "upstream sent no response within upstream_timeout_ms (" +
                                                        std::to_string(limits().upstream_timeout_ms) + " ms)");
          std::string why = "upstream closed the connection before responding";
          if (rec) why += ": " + rec.message();
          co_return co_await upstream_failed(502, std::move(why));
        }
        upbuf().commit(rn);
        side().retry_request = nullptr;  // the upstream answered: never send this request twice
      }
      side().retry_request = nullptr;
      rq_->record.status = resp.status;
      bool informational = resp.status >= 100 && resp.status < 200;
      if (informational && resp.status != 101) {
        // 100 Continue and friends: pass on, then read the final response. Never to an HTTP/1.0
        // client, which cannot tell one from the final response (RFC 9110 15.2).
        if (resp.status != 100 && req.version == 11) {
          std::string h = "HTTP/1.1 " + std::to_string(resp.status) + " " + resp.reason + "\r\n";
          for (const auto& f : resp.fields)
            if (!is_hop_by_hop(f.name)) h += f.name + ": " + f.value + "\r\n";
          h += "\r\n";
          co_await down_.write_all(asio::buffer(h));
          rq_->bytes_out += h.size();
        }
        continue;
      }
      if (resp.status == 101) {
        // After a switch the bytes are relayed and no rule sees them: only a real one counts.
        // (No ?: building a string here: GCC 12 mishandles such temporaries in coroutines.)
        const std::string* offered = req.field("upgrade");
        std::string why = "the upstream answered 101 Switching Protocols to a request that did not ask to upgrade";
        if (upgrade && offered) why = http::check_switch(*offered, req.fields, resp.fields);
        if (!why.empty()) co_return co_await upstream_failed(502, std::move(why));
      }
      co_return co_await send_response(req, resp, upgrade && resp.status == 101);
    }
  }

  net::awaitable<bool> send_response(http::Parser<true>& req, http::Parser<false>& resp, bool switching) {
    bool no_body = req.method == "HEAD" || resp.status == 204 || resp.status == 304 || switching;
    bool chunked = resp.chunked();
    auto length = resp.content_length();
    bool close_delimited = !no_body && !chunked && !length;
    bool client_11 = req.version == 11;
    bool downstream_chunked = chunked && client_11;
    bool keep_client = req.keep_alive() && !close_delimited && !w_.draining && !(chunked && !client_11) && !switching;

    // A Content-Length body that has already arrived whole leaves with the head: one TLS record
    // and one write instead of two.
    const bool body_with_head = !switching && !no_body && !chunked && length && *length > 0 && upbuf().size() >= *length;
    std::string h;
    h.reserve(512 + (body_with_head ? upbuf().size() : 0));
    h += "HTTP/1.1 ";
    h += std::to_string(resp.status);
    h += ' ';
    h += resp.reason;
    h += "\r\n";
    for (const auto& f : resp.fields) {
      // HEAD and 304 keep the representation length
      if (is_hop_by_hop(f.name) && !(f.name == "content-length" && no_body && !switching)) continue;
      append_field(h, f.name, f.value);
    }
    if (switching) {
      auto* u = resp.field("upgrade");
      h += "connection: upgrade\r\nupgrade: " + (u ? *u : std::string()) + "\r\n";
    } else if (!no_body) {
      if (downstream_chunked) h += "transfer-encoding: chunked\r\n";
      else if (length) h += "content-length: " + std::to_string(*length) + "\r\n";
    }
    if (!switching && !keep_client) h += "connection: close\r\n";
    else if (!switching && !client_11) h += "connection: keep-alive\r\n";  // or an HTTP/1.0 client waits for our close
    h += "\r\n";
    bool complete = true;
    if (body_with_head) {
      resp.eager(true);
      error_code pec;
      resp.pieces().clear();
      std::size_t n = resp.put(asio::buffer(upbuf().data().data(), upbuf().size()), pec);
      if (pec && pec != boost::beast::http::error::need_more) {
        complete = false;
      } else {
        for (auto p : resp.pieces()) h.append(p);
        upbuf().consume(n);
      }
    }
    deadline_.arm(ms(limits().idle_timeout_ms), "client write timeout");
    if (auto e = co_await down_.write_all(asio::buffer(h))) {
      up().close();
      co_return fail_client(e);
    }
    rq_->bytes_out += h.size();

    if (switching) {
      // 101: the connection now carries another protocol (WebSocket, SPDY, Docker's raw
      // stream). Bytes already read on either side go first, then a raw relay.
      deadline_.disarm();
      if (!upbuf().empty()) {
        co_await down_.write_all(asio::buffer(upbuf().data().data(), upbuf().size()));
        rq_->bytes_out += upbuf().size();
        upbuf().consume(upbuf().size());
      }
      if (!in_.empty()) {
        co_await up().write_all(asio::buffer(in_.data().data(), in_.size()));
        in_.consume(in_.size());
      }
      rq_->record.status = 101;
      auto [a, b] = co_await relay(down_, up(), limits().idle_timeout_ms);
      rq_->bytes_in += a;
      rq_->bytes_out += b;
      up().close();
      finish_record();
      co_return false;
    }

    if (!no_body) {
      resp.eager(true);
      deadline_.disarm();
      while (complete && !resp.is_done()) {
        if (!upbuf().empty()) {
          error_code pec;
          resp.pieces().clear();
          std::size_t n = resp.put(asio::buffer(upbuf().data().data(), upbuf().size()), pec);
          if (pec && pec != boost::beast::http::error::need_more) {
            complete = false;
            break;
          }
          deadline_.arm(ms(limits().idle_timeout_ms), "client write timeout");
          auto e = co_await forward_pieces(down_, resp.pieces(), downstream_chunked);
          for (auto p : resp.pieces()) rq_->bytes_out += p.size();
          upbuf().consume(n);
          if (e) {
            up().close();
            co_return fail_client(e);
          }
          if (!pec && n > 0) continue;
        }
        if (upbuf().space_size() == 0) {
          complete = false;
          break;
        }
        // Streamed responses (watches, logs -f) may be quiet for long: no deadline here.
        deadline_.disarm();
        auto [rec, rn] = co_await up().read_some(asio::buffer(upbuf().space(), std::min(upbuf().space_size(), io_chunk * 4)));
        if (rec || rn == 0) {
          if (close_delimited) {
            error_code fec;
            resp.put_eof(fec);
            break;
          }
          complete = false;  // the upstream died mid-response: the client sees it truncated
          break;
        }
        upbuf().commit(rn);
      }
      if (complete && downstream_chunked) {
        static constexpr std::string_view last = "0\r\n\r\n";
        co_await down_.write_all(asio::buffer(last));
      }
    }
    side().reusable = complete && resp.keep_alive() && !close_delimited && upbuf().empty();
    if (!side().reusable) {
      // Bytes after the response are nobody's answer (a desync, or a smuggled response): they go
      // with the connection, never to the next request's parser.
      up().close();
      upbuf().consume(upbuf().size());
    }
    upbuf().release_if_empty();  // idle keep-alive connections hold no response buffer
    if (!complete) {
      rq_->record.outcome = "error";
      rq_->record.reason = "upstream response ended early; the client's response is truncated";
      w_.metrics.add(observe::Metric::upstream_failures_total, observe::labels({{"listener", listener()}, {"reason", "truncated"}}));
      keep_client = false;
    }
    finish_record();
    co_return keep_client && complete;
  }

  bool fail_client(const error_code& e) {
    rq_->record.outcome = "error";
    rq_->record.reason = "writing to the client failed: " + e.message();
    finish_record();
    return false;
  }

  net::awaitable<bool> deny(std::string reason, std::string rule, bool has_body) {
    rq_->record.outcome = "deny";
    rq_->record.status = 403;
    rq_->record.reason = reason;
    rq_->record.rule = rule;
    auto body = http::denial_body(lrt_->cfg.protocol, rule, reason);
    // With a body we did not read, the connection cannot be reused safely. Otherwise it is kept
    // as the client asked (an HTTP/1.0 client is told so, or it waits for us to close).
    const bool keep = !has_body && rq_->keep_alive && !w_.draining;
    auto persistence = !keep ? http::Persistence::close : rq_->http10 ? http::Persistence::keep_http10 : http::Persistence::keep;
    auto resp = http::json_response(403, body, persistence);
    deadline_.arm(ms(limits().idle_timeout_ms), "client write timeout");
    auto ec = co_await down_.write_all(asio::buffer(resp));
    rq_->bytes_out += resp.size();
    finish_record();
    co_return keep && !ec;
  }

  // A kept connection must be checked first: closed by the upstream, or holding bytes nobody
  // asked for (what a request smuggled past us would produce), it is not used again. With
  // `early`, on a plain socket, the check is the response's read itself, started here: its
  // first recv() must find nothing, and the caller looks at it again after its pass of the
  // queue, just before writing (side().early). So the response needs no recv() of its own
  // that would find nothing yet (asio 1.81 reads speculatively before it waits): one syscall
  // per request fewer than a poll(). Otherwise (TLS, a pooled connection) a poll().
  net::awaitable<bool> ensure_upstream(bool early = false) {
    side().reused = false;
    // A read begun on the connection and not consumed: whatever it took is lost to the stream,
    // so the connection is closed, never reused (release_upstream()).
    if (side().early) release_upstream(false);
    std::string key = std::to_string(snap_->generation) + "/" + lrt_->cfg.upstream;
    if (up().is_open() && side().key == key) {
      // start_early_read() starts nothing on TLS: then the poll().
      if (early && upbuf().empty())
        side().early = up().start_early_read(asio::buffer(upbuf().space(), upbuf().space_size()));
      if (side().early || !up().peer_closed_or_sent()) {
        side().reused = true;
        co_return true;
      }
    }
    release_upstream(false);
    if (auto pooled = w_.pool.take(key)) {
      up() = std::move(*pooled);
      side().key = key;
      side().reused = true;
      co_return true;
    }
    auto c = co_await connect_upstream(*lrt_->upstream, ms(limits().connect_timeout_ms));
    if (c.ec) {
      w_.metrics.add(observe::Metric::upstream_connect_failures_total, observe::labels({{"upstream", lrt_->cfg.upstream}}));
      co_await upstream_failed(c.timed_out ? 504 : 502, c.error);
      co_return false;
    }
    up() = std::move(c.stream);
    side().key = key;
    side().address = c.address;
    co_return true;
  }

  void release_upstream(bool) {
    if (!side_) return;
    auto& u = *side_;
    // A read still pending (u.early) writes into this session's buffer: never pooled.
    if (u.conn.is_open() && u.reusable && u.buf.empty() && !u.early) w_.pool.give(u.key, std::move(u.conn));
    else u.conn.close();
    u.early.reset();
    u.buf.consume(u.buf.size());  // what the released connection sent is no other connection's
    u.conn = net::Stream();
    u.reusable = false;
  }

  net::awaitable<bool> upstream_failed(int status, std::string reason) {
    w_.metrics.add(observe::Metric::upstream_failures_total, observe::labels({{"listener", listener()}, {"reason", status == 504 ? "timeout" : "unavailable"}}));
    up().close();
    side().reusable = false;
    upbuf().consume(upbuf().size());
    co_return co_await refuse(status, status == 504 ? "upstream_timeout" : "upstream_unavailable", std::move(reason));
  }

  void reset_record() {
    if (side_) side_->retry_request = nullptr;
    rq_->record = observe::AccessRecord{};
    rq_->reason_holder.clear();
    rq_->bytes_in = rq_->bytes_out = 0;
    rq_->start = std::chrono::steady_clock::now();
    if (side_) side_->reusable = false;
  }

  void finish_record() {
    // AccessRecord holds views: keep the strings alive here.
    rq_->reason_holder = std::string(rq_->record.reason);
    rq_->rule_holder = std::string(rq_->record.rule);
    rq_->record.reason = rq_->reason_holder;
    rq_->record.rule = rq_->rule_holder;
    rq_->record.listener = listener();
    rq_->record.source_ip = source_ip_;
    rq_->record.source_port = source_port_;
    if (!rq_->record.peer) rq_->record.peer = peer_.get();  // kubernetes: a TokenReview identity
    rq_->record.upstream = side_ && !side_->address.empty() ? std::string_view(side_->address)
                                                             : std::string_view(lrt_->upstream->cfg.address_text);
    rq_->record.bytes_in = rq_->bytes_in;
    rq_->record.bytes_out = rq_->bytes_out;
    rq_->record.duration = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - rq_->start);
    observe::write_access_log(rq_->record);
    if (!connection_error_) count_request();
  }

  // Per-worker counters for this request (only this worker's thread touches them).
  // The label sets are rendered once per connection and reused while they stay the same
  // (a keep-alive client mostly repeats one rule and one status class): they are kept on the
  // side the first request makes, with the upstream connection.
  void count_request() {
    std::string_view decision = rq_->record.outcome;
    if (decision == "audit-deny") decision = "audit_deny";
    auto& labels = side().labels;
    auto& rl = labels.request;
    if (rl.empty() || labels.rule != rq_->record.rule || labels.decision != decision || labels.policy != lrt_->cfg.policy) {
      labels.rule = rq_->record.rule;
      labels.decision = decision;
      labels.policy = lrt_->cfg.policy;
      rl = observe::labels({{"listener", listener()}, {"policy", labels.policy}, {"rule", labels.rule}, {"decision", decision}});
    }
    w_.metrics.add(observe::Metric::requests_total, rl);
    if (rq_->record.status >= 200 && rq_->record.status < 600) {
      static constexpr const char* classes[] = {"2xx", "3xx", "4xx", "5xx"};
      auto& cl = labels.status_class[rq_->record.status / 100 - 2];
      if (cl.empty()) cl = observe::labels({{"listener", listener()}, {"class", classes[rq_->record.status / 100 - 2]}});
      w_.metrics.add(observe::Metric::responses_total, cl);
    }
    if (labels.listener.empty()) labels.listener = observe::labels({{"listener", listener()}});
    w_.metrics.observe(observe::Metric::request_duration_seconds, labels.listener,
                       std::chrono::duration<double>(rq_->record.duration).count());
  }

  void log_connection_error(std::string reason) {
    RequestState rq;
    RequestState* outer = std::exchange(rq_, &rq);
    reset_record();
    rq_->record.outcome = "error";
    rq_->reason_holder = std::move(reason);
    rq_->record.reason = rq_->reason_holder;
    connection_error_ = true;  // logged, but not a request
    finish_record();
    connection_error_ = false;
    rq_ = outer;
  }

  Worker& w_;
  ConnectionEnded ended_;
  std::shared_ptr<const Snapshot> snap_;
  const ListenerRuntime* lrt_;
  const std::string& listener() const { return lrt_->cfg.name; }
  net::Buffer in_;
  net::Stream down_;
  IdleHook idle_hook_;  // in one of the worker's IdleParking lists while idle
  net::TlsSocket* tls() { return down_.tls(); }  // null on a plaintext listener
  net::Deadline deadline_;
  std::shared_ptr<const certs::Identity> peer_;
  std::string source_ip_;
  std::uint16_t source_port_ = 0;
  bool connection_error_ = false;
  bool going_cold_ = false;  // IdleParking cancelled the wait to move it out of asio
  bool woken_ = false;       // the request being read follows a wake-up from idle (read_head)
  int cold_fd_ = -1;         // the socket, released from asio, while in IdleParking's ColdPoll
  // Metric label sets, rendered once per connection and reused while they stay the same.
  struct Labels {
    std::string request, rule, decision, policy, listener;
    std::string status_class[4];
  };
  // Made by the first request: a connection that never sends one (held open after its
  // handshake) carries none of it. The upstream side, and the metric labels.
  struct UpstreamSide {
    explicit UpstreamSide(std::size_t buffer) : buf(buffer) {}
    net::Buffer buf;
    net::Stream conn;
    std::string key, address;
    bool reusable = false;
    bool reused = false;
    const std::string* retry_request = nullptr;  // the request bytes, while sending them again is allowed
    std::shared_ptr<net::EarlyRead> early;       // the response's read, started before the request went out
    std::string xfcc;
    Labels labels;
  };
  std::unique_ptr<UpstreamSide> side_;
  UpstreamSide& side() { return side_ ? *side_ : make_side(); }
  [[gnu::noinline]] UpstreamSide& make_side() {
    side_ = std::make_unique<UpstreamSide>(std::max<std::size_t>(limits().header_bytes + 1, io_chunk));
    return *side_;
  }
  net::Stream& up() { return side().conn; }
  net::Buffer& upbuf() { return side().buf; }
  // What one request needs until it is logged: it lives in serve_one()'s frame, so an idle
  // connection does not carry it.
  struct RequestState {
    observe::AccessRecord record;
    std::string reason_holder, rule_holder;
    std::string path, query, scratch;
    std::uint64_t bytes_in = 0, bytes_out = 0;
    std::chrono::steady_clock::time_point start;
    bool keep_alive = false;  // the client asked to keep the connection (set once the head is parsed)
    bool http10 = false;
  };
  RequestState* rq_ = nullptr;  // the request being served (set by serve_one and log_connection_error)
};

// The idle connections of one worker. A connection parks in asio's reactor, in `recent_`; a
// sweep every second moves `recent_` to `old_`, and moves the connections still in `old_` (idle
// for one to two seconds) out of asio into the worker's ColdPoll: their socket is released from
// asio, which frees asio's descriptor state and the wait (264 bytes, ~1.4 % of an idle TLS
// connection), and the cold list owns them. A byte or the peer's end of stream, the idle
// deadline, or a drain brings a cold connection back (warm()): its socket is given back to asio
// and it goes on as any woken connection. Keep-alive connections in use never stay idle that
// long, so they pay nothing: the moves (release, epoll_ctl, getsockname, assign) are paid only by
// connections idle for over a second.
class IdleParking final : public IdleConnections {
 public:
  static IdleParking& of(Worker& w) {
    if (!w.idle) w.idle = std::make_unique<IdleParking>(w);
    return static_cast<IdleParking&>(*w.idle);
  }

  explicit IdleParking(Worker& w) : w_(w), sweep_(w.ioc.get_executor()), poll_(w.ioc, &IdleParking::on_ready, this) {
    w_.metrics.set(observe::Metric::connections_idle_cold, {}, 0);
  }

  // The worker is being torn down (its io_context stopped): the cold connections are ours to
  // free; the others are freed with the waits that own them.
  ~IdleParking() override {
    while (!cold_.empty()) {
      HttpSession& s = cold_.front();
      cold_.pop_front();
      delete &s;
    }
  }

  void parked(HttpSession& s) {
    recent_.push_back(s);
    if (!sweeping_) arm();
  }

  void close_all() override {
    for (List* l : {&recent_, &old_}) {
      for (HttpSession& s : *l) s.down_.close();  // ends the wait; its handler closes the connection
      l->clear();
    }
    while (!cold_.empty()) warm(cold_.front(), HttpSession::Wake::closing);
  }

  // From the wait's handler, after the sweep cancelled it: takes the connection out of asio.
  void go_cold(std::unique_ptr<HttpSession> self) {
    HttpSession& s = *self;
    net::tcp_socket& sock = *s.down_.tcp();
    error_code ec;
    const int fd = sock.release(ec);
    if (!ec) {
      if (poll_.add(fd, &s)) {
        s.cold_fd_ = fd;
        cold_.push_back(s);
        w_.metrics.add(observe::Metric::connections_idle_cold, {}, 1);
        self.release();  // owned by cold_ until warm()
        return;
      }
      // The kernel refused (the user's epoll watch limit, memory): it stays in asio, and no
      // connection of this worker tries again for a while. Said once per pause: the rest of
      // this sweep's connections are refused alike.
      const int why = errno;
      const auto now = std::chrono::steady_clock::now();
      if (now >= refused_until_)
        spdlog::warn("worker {}: the kernel refused to move an idle connection out of asio's reactor ({}); "
                     "idle connections stay there (264 bytes more each) and this worker tries again in 10 s "
                     "(is /proc/sys/fs/epoll/max_user_watches reached?)",
                     w_.index, std::system_category().message(why));
      refused_until_ = now + 10s;
      sock.assign(protocol_of(fd), fd, ec);
      if (ec) ::close(fd);
    }
    if (!sock.is_open()) return HttpSession::activate(std::move(self), HttpSession::Wake::closing);
    parked(s);  // tried again at a later sweep
    HttpSession::wait_readable(std::move(self));
  }

  // Back into asio, woken (readable) or ended (closing: a deadline or a drain).
  void warm(HttpSession& s, HttpSession::Wake why) {
    std::unique_ptr<HttpSession> self(&s);
    s.idle_hook_.unlink();
    const int fd = std::exchange(s.cold_fd_, -1);
    poll_.remove(fd);
    w_.metrics.add(observe::Metric::connections_idle_cold, {}, -1);
    if (why != HttpSession::Wake::closing) {
      error_code ec;
      s.down_.tcp()->assign(protocol_of(fd), fd, ec);
      if (ec) why = HttpSession::Wake::closing;
    }
    if (why == HttpSession::Wake::closing) ::close(fd);  // never given back to asio
    HttpSession::activate(std::move(self), why);
  }

 private:
  using List = boost::intrusive::list<HttpSession, boost::intrusive::member_hook<HttpSession, IdleHook, &HttpSession::idle_hook_>,
                                      boost::intrusive::constant_time_size<false>>;

  static net::tcp protocol_of(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 && ss.ss_family == AF_INET6) return net::tcp::v6();
    return net::tcp::v4();
  }

  static void on_ready(void* self, void* session) {
    static_cast<IdleParking*>(self)->warm(*static_cast<HttpSession*>(session), HttpSession::Wake::readable);
  }

  void arm() {
    sweeping_ = true;
    sweep_.expires_after(1s);
    sweep_.async_wait(asio::bind_allocator(net::ExactAllocator<void>(), [this](const error_code& ec) {
      if (ec) return;  // torn down: this may be gone
      sweeping_ = false;
      sweep();
    }));
  }

  // At most this many moves per sweep (two syscalls each, on the worker's thread): 100,000
  // connections going idle together move 2,048 a second per worker, a few milliseconds of work
  // each time, instead of stalling the worker's busy connections for a fraction of a second.
  static constexpr int max_moves_per_sweep = 2048;

  void sweep() {
    if (poll_.ok() && std::chrono::steady_clock::now() >= refused_until_) {
      int moves = 0;
      for (HttpSession& s : old_) {
        if (s.going_cold_) continue;
        if (++moves > max_moves_per_sweep) break;  // the rest stay first in line
        s.going_cold_ = true;
        error_code ignored;
        s.down_.tcp()->cancel(ignored);  // its handler runs go_cold()
      }
    }
    old_.splice(old_.end(), recent_);
    if (!old_.empty()) arm();
  }

  Worker& w_;
  asio::basic_waitable_timer<std::chrono::steady_clock, asio::wait_traits<std::chrono::steady_clock>, net::executor> sweep_;
  bool sweeping_ = false;
  std::chrono::steady_clock::time_point refused_until_{};
  net::ColdPoll poll_;
  List recent_, old_, cold_;
};

void HttpSession::park(std::unique_ptr<HttpSession> self) {
  HttpSession& s = *self;
  s.deadline_.arm(ms(s.limits().idle_timeout_ms), "idle timeout");
  IdleParking::of(s.w_).parked(s);
  wait_readable(std::move(self));
}

void HttpSession::wait_readable(std::unique_ptr<HttpSession> self) {
  HttpSession& s = *self;
  auto on_readable = [self = std::move(self)](const error_code& ec) mutable {
    HttpSession& s = *self;
    s.idle_hook_.unlink();
    if (std::exchange(s.going_cold_, false) && ec == asio::error::operation_aborted && !s.w_.draining && s.down_.is_open())
      return IdleParking::of(s.w_).go_cold(std::move(self));
    Wake why = ec || s.w_.draining ? Wake::closing : Wake::readable;
    activate(std::move(self), why);
  };
  // No system call when the request's read found the socket empty (EdgeReadiness).
  s.down_.async_wait_quiet(asio::any_completion_handler<void(error_code)>(
      asio::bind_allocator(net::ExactAllocator<void>(), std::move(on_readable))));
}

void HttpSession::close_all() {
  const char* what = deadline_.what();
  if (side_) side_->conn.close();
  if (what && std::string_view(what).starts_with("upstream")) return;
  if (cold_fd_ >= 0) IdleParking::of(w_).warm(*this, Wake::closing);  // no wait of asio's to end
  else down_.close();
}

}  // namespace

void serve_http(Worker& w, std::string listener, net::tcp_socket socket, ConnectionEnded ended) {
  HttpSession::activate(std::make_unique<HttpSession>(w, std::move(listener), std::move(socket), std::move(ended)),
                        HttpSession::Wake::accepted);
}

}  // namespace portcullis
