#include "proxy/http/kube_gateway.hpp"

#include <openssl/evp.h>

#include <algorithm>
#include <boost/asio/this_coro.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cctype>
#include <chrono>
#include <cstring>
#include <optional>
#include <unordered_map>

#include "proxy/http/parser.hpp"
#include "proxy/net/deadline.hpp"
#include "proxy/upstream.hpp"

namespace portcullis::http {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
using clock = std::chrono::steady_clock;

// TokenReview results are cached per worker thread (no lock on the request path), keyed by a
// SHA-256 of the token (the token itself is not kept) and the upstream that reviewed it.
constexpr auto allow_ttl = std::chrono::minutes(5);
constexpr auto deny_ttl = std::chrono::seconds(30);
constexpr std::size_t cache_capacity = 4096;
constexpr std::size_t max_review_response = 1 << 20;
constexpr auto review_timeout = std::chrono::seconds(10);
constexpr std::string_view tokenreview_path = "/apis/authentication.k8s.io/v1/tokenreviews";

struct Review {
  bool authenticated = false;
  certs::Identity identity;
  std::string error;  // why not authenticated, as the apiserver said
};

struct CachedReview {
  Review review;
  clock::time_point expires;
};

class TokenCache {
 public:
  const Review* find(const std::string& key) {
    auto it = entries_.find(key);
    if (it == entries_.end()) return nullptr;
    if (it->second.expires <= clock::now()) {
      entries_.erase(it);
      return nullptr;
    }
    return &it->second.review;
  }
  // not_after: when the token itself expires, if it says so (an allow is never reused past it).
  void put(const std::string& key, Review r, std::optional<clock::time_point> not_after) {
    auto now = clock::now();
    if (entries_.size() >= cache_capacity) {
      std::erase_if(entries_, [&](const auto& e) { return e.second.expires <= now; });
      // Still full of live entries (many distinct tokens): start over rather than grow.
      if (entries_.size() >= cache_capacity) entries_.clear();
    }
    auto expires = now + (r.authenticated ? clock::duration(allow_ttl) : clock::duration(deny_ttl));
    if (r.authenticated && not_after) expires = std::min(expires, *not_after);
    entries_[key] = CachedReview{std::move(r), expires};
  }

 private:
  std::unordered_map<std::string, CachedReview> entries_;
};

thread_local TokenCache token_cache;

// When a JWT (a ServiceAccount or OIDC token) expires, from its `exp` claim, on the steady clock.
// Read without checking the signature: it can only shorten how long an allow is reused, and the
// apiserver refuses an expired token at once. Empty for a token that is not such a JWT.
std::optional<clock::time_point> jwt_expiry(std::string_view token) {
  const std::size_t dot1 = token.find('.');
  const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos) return std::nullopt;
  std::string b64(token.substr(dot1 + 1, dot2 - dot1 - 1));  // base64url, unpadded
  if (b64.empty() || b64.size() > 16384 || b64.size() % 4 == 1) return std::nullopt;
  for (char& c : b64) {
    if (c == '-')
      c = '+';
    else if (c == '_')
      c = '/';
    else if (!std::isalnum(static_cast<unsigned char>(c)))
      return std::nullopt;
  }
  const std::size_t padding = (4 - b64.size() % 4) % 4;
  b64.append(padding, '=');
  std::string json_text(b64.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(json_text.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  if (n < 0 || static_cast<std::size_t>(n) < padding) return std::nullopt;
  json_text.resize(static_cast<std::size_t>(n) - padding);
  boost::system::error_code ec;
  json::value claims = json::parse(json_text, ec);
  if (ec || !claims.is_object()) return std::nullopt;
  const json::value* exp = claims.as_object().if_contains("exp");
  if (!exp || !exp->is_number()) return std::nullopt;
  const double seconds = exp->to_number<double>(ec);
  if (ec) return std::nullopt;
  const double left =
      seconds - std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  if (left <= 0) return clock::now();
  if (left > 86400.0 * 365) return std::nullopt;  // far beyond allow_ttl anyway
  return clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(left));
}

std::string sha256_hex(std::string_view s) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(s.data(), s.size(), digest, &len, EVP_sha256(), nullptr);
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[digest[i] >> 4];
    out += hex[digest[i] & 15];
  }
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x >= 'A' && x <= 'Z' ? x + 32 : x) == (y >= 'A' && y <= 'Z' ? y + 32 : y);
         });
}

// A value that may go into a header line as is: no control characters (CR, LF, NUL ...).
bool header_safe(std::string_view v) {
  return std::none_of(v.begin(), v.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

// ... and arrives as it left: a space at either end would be dropped by the apiserver's parser
// (RFC 9110 5.5), so " system:masters" would be impersonated as system:masters.
bool name_header_safe(std::string_view v) {
  auto space = [](char c) { return c == ' ' || c == '\t'; };
  return header_safe(v) && (v.empty() || (!space(v.front()) && !space(v.back())));
}

bool identity_header_safe(const certs::Identity& id) {
  if (!name_header_safe(id.user)) return false;
  return std::all_of(id.groups.begin(), id.groups.end(), [](const std::string& g) { return name_header_safe(g); });
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  out += s;
  out += '"';
  return out;
}

// Reads a TokenReview status into a Review. Returns an error text when the answer is not one.
std::string read_review(std::string_view body, Review& out) {
  boost::system::error_code ec;
  json::value v = json::parse(json::string_view(body.data(), body.size()), ec);
  if (ec || !v.is_object()) return "TokenReview response is not a JSON object";
  const json::object* status = nullptr;
  if (auto* s = v.as_object().if_contains("status"); s && s->is_object()) status = &s->as_object();
  if (!status) return "TokenReview response has no status";
  if (auto* a = status->if_contains("authenticated"); a && a->is_bool()) out.authenticated = a->as_bool();
  if (auto* e = status->if_contains("error"); e && e->is_string()) out.error = std::string(e->as_string());
  if (!out.authenticated) return {};
  const json::object* user = nullptr;
  if (auto* u = status->if_contains("user"); u && u->is_object()) user = &u->as_object();
  if (!user) return "TokenReview authenticated the token but names no user";
  if (auto* n = user->if_contains("username"); n && n->is_string()) out.identity.user = std::string(n->as_string());
  if (out.identity.user.empty()) return "TokenReview authenticated the token but names no user";
  if (auto* g = user->if_contains("groups"); g && g->is_array())
    for (const auto& item : g->as_array())
      if (item.is_string()) out.identity.groups.emplace_back(item.as_string());
  return {};
}

// One TokenReview (authentication.k8s.io/v1) POST on a fresh connection to the listener's
// upstream, which presents the proxy's own client certificate. Returns an error text when the
// apiserver could not be asked or did not answer properly (the request is then refused, and
// nothing is cached).
net::awaitable<std::string> token_review(const ListenerRuntime& listener, std::string_view token, Review& out) {
  const UpstreamRuntime& up = *listener.upstream;
  auto c = co_await connect_upstream(up, std::chrono::milliseconds(listener.cfg.limits.connect_timeout_ms));
  if (c.ec) co_return "cannot connect to the apiserver for a TokenReview: " + c.error;
  net::Stream& s = c.stream;
  net::DeadlineWith deadline(co_await asio::this_coro::executor, [&s] { s.close(); });
  deadline.arm(std::chrono::duration_cast<std::chrono::milliseconds>(review_timeout), "token review");

  json::object spec;
  spec["token"] = json::string(token.data(), token.size());
  json::object review;
  review["apiVersion"] = "authentication.k8s.io/v1";
  review["kind"] = "TokenReview";
  review["spec"] = std::move(spec);
  std::string body = json::serialize(review);
  std::string host = up.cfg.server_name.empty() ? up.cfg.host : up.cfg.server_name;
  if (host.empty()) host = "kubernetes";  // unix:// upstreams
  std::string req = "POST " + std::string(tokenreview_path) + " HTTP/1.1\r\nhost: " + host +
                    "\r\ncontent-type: application/json\r\naccept: application/json\r\nuser-agent: portcullis\r\n"
                    "connection: close\r\ncontent-length: " +
                    std::to_string(body.size()) + "\r\n\r\n" + body;
  if (auto ec = co_await s.write_all(asio::buffer(req))) co_return "sending the TokenReview failed: " + ec.message();

  Parser<false> resp;
  resp.header_limit(64 * 1024);
  resp.body_limit(max_review_response);
  resp.eager(true);
  std::string buf(16 * 1024, '\0');
  std::string got;
  std::size_t have = 0;
  while (!resp.is_done()) {
    if (have == buf.size()) co_return "TokenReview response head too large";
    auto [ec, n] = co_await s.read_some(asio::buffer(buf.data() + have, buf.size() - have));
    if (ec || n == 0) {
      boost::system::error_code eec;
      if (resp.is_header_done()) resp.put_eof(eec);
      if (resp.is_done() && !eec) break;
      if (deadline.expired()) co_return "the apiserver did not answer the TokenReview in time";
      co_return "the apiserver closed the connection during the TokenReview";
    }
    have += n;
    std::size_t used = 0;
    while (used < have && !resp.is_done()) {
      boost::system::error_code pec;
      resp.pieces().clear();
      std::size_t k = resp.put(asio::buffer(buf.data() + used, have - used), pec);
      for (auto p : resp.pieces()) got.append(p);
      used += k;
      if (pec == boost::beast::http::error::need_more) break;
      if (pec) co_return "malformed TokenReview response: " + pec.message();
      if (k == 0) break;
    }
    std::memmove(buf.data(), buf.data() + used, have - used);
    have -= used;
  }
  s.close();
  if (resp.status != 200 && resp.status != 201) {
    std::string why = "the apiserver answered the TokenReview with " + std::to_string(resp.status);
    co_return why;
  }
  co_return read_review(got, out);
}

}  // namespace

net::awaitable<std::optional<KubeGateway::Refusal>> KubeGateway::prepare(const ListenerRuntime& listener,
                                                                         const certs::Identity* peer,
                                                                         std::string_view method, std::string_view path,
                                                                         std::string_view query,
                                                                         std::span<const policy::Header> fields) {
  forward_ = listener.cfg.forward_identity;
  const std::string* content_type = policy::find_header(fields, "content-type");  // the first, as Go's Header.Get
  attrs_ =
      policy::resolve_kube(method, path, query, content_type ? std::string_view(*content_type) : std::string_view());
  resource_ = policy::kube_resource_string(attrs_);
  identity_ = nullptr;
  token_identity_.reset();
  const auto& methods = listener.cfg.authenticate;
  const bool by_cert = std::find(methods.begin(), methods.end(), "client_cert") != methods.end();
  const bool by_token = std::find(methods.begin(), methods.end(), "token_review") != methods.end();

  // As the apiserver's own union authenticator: a client certificate first, then a token.
  if (by_cert && peer) {
    identity_ = peer;
  } else if (by_token) {
    const policy::Header* auth = nullptr;
    for (const auto& f : fields) {
      if (f.name != "authorization") continue;
      if (auth) co_return Refusal{400, "bad_request", "more than one Authorization header"};
      auth = &f;
    }
    std::string_view v = auth ? std::string_view(auth->value) : std::string_view();
    if (v.size() > 7 && iequals(v.substr(0, 7), "bearer ")) {
      // As the apiserver's bearertoken.go reads it: strings.SplitN(value, " ", 3)[1], so
      // "Bearer  x" carries an empty token and "Bearer x y" the token x. Reviewing another
      // token would name a user the apiserver would not have named for this header.
      std::string_view token = v.substr(7);
      token = token.substr(0, token.find(' '));
      if (token.empty()) co_return Refusal{401, "unauthorized", "empty bearer token"};
      // Keyed by where the token was reviewed: a reload that points the upstream elsewhere
      // does not reuse answers from the old apiserver.
      std::string key = listener.upstream->cfg.address_text + "/" + sha256_hex(token);
      const Review* cached = token_cache.find(key);
      Review fresh;
      if (!cached) {
        std::string error = co_await token_review(listener, token, fresh);
        if (!error.empty()) co_return Refusal{503, "token_review_failed", "bearer token not checked: " + error};
        token_cache.put(key, fresh, jwt_expiry(token));
        cached = &fresh;
      }
      if (!cached->authenticated) {
        std::string why = "the apiserver's TokenReview did not authenticate the bearer token";
        if (!cached->error.empty()) why += ": " + cached->error;
        co_return Refusal{401, "unauthorized", std::move(why)};
      }
      token_identity_ = cached->identity;
      identity_ = &*token_identity_;
    }
  }
  if (names_client() && identity_ && !identity_->unusable.empty())
    co_return Refusal{403, "denied", "the client certificate cannot be impersonated as it is: " + identity_->unusable};
  if (names_client() && identity_ && identity_->user.empty())
    co_return Refusal{403, "denied", "the client certificate names no user (empty CN): nothing to impersonate"};
  if (names_client() && identity_ && !identity_header_safe(*identity_))
    co_return Refusal{403, "denied",
                      "the client's user or group name contains control characters or begins or ends with a space"};
  co_return std::nullopt;
}

std::string KubeGateway::denial_reason(const policy::Policy& policy, const policy::Request& request,
                                       const policy::Decision& decision) const {
  if (!attrs_.error.empty()) return decision.reason;  // unresolvable: the resolver's words
  std::string out;
  if (identity_) {
    out = "user " + quoted(identity_->user);
    if (!identity_->groups.empty()) {
      out += " (groups ";
      for (std::size_t i = 0; i < identity_->groups.size(); ++i) {
        if (i) out += ", ";
        out += quoted(identity_->groups[i]);
      }
      out += ')';
    }
  } else {
    out = "anonymous user";
  }
  out += " cannot " + policy::describe(attrs_) + ": no rule of policy " + quoted(policy.name()) + " allows it";
  // Name the closest rule that applies to this client. Rules written for other clients are
  // not shown: a denied client learns nothing about who else may do what.
  auto explanation = policy.explain(request);
  for (const auto& miss : explanation.closest) {
    // Skipped too: rules of the other kind (non_resource_urls for a resource request and back),
    // which say nothing useful about this request.
    bool unrelated = std::any_of(miss.failed.begin(), miss.failed.end(), [](const std::string& f) {
      return f.starts_with("peer ") || f.starts_with("no verified client certificate") || f.starts_with("rule is for ");
    });
    if (unrelated || miss.failed.empty()) continue;
    out += " (closest rule " + quoted(miss.rule) + ": ";
    for (std::size_t i = 0; i < miss.failed.size(); ++i) {
      if (i) out += "; ";
      out += miss.failed[i];
    }
    out += ')';
    break;
  }
  return out;
}

bool KubeGateway::drops_header(std::string_view lower_name) const {
  // The proxy authenticates to the apiserver with its own certificate and names the client in
  // identity headers: the client's credentials stay here.
  return lower_name == "authorization" && names_client();
}

bool KubeGateway::names_client() const {
  return forward_ == config::ForwardIdentity::impersonate || forward_ == config::ForwardIdentity::remote_user;
}

void KubeGateway::append_identity_headers(std::string& out) const {
  const char* user_header = nullptr;
  const char* group_header = nullptr;
  if (forward_ == config::ForwardIdentity::impersonate) {
    user_header = "impersonate-user: ";
    group_header = "impersonate-group: ";
  } else if (forward_ == config::ForwardIdentity::remote_user) {
    user_header = "x-remote-user: ";
    group_header = "x-remote-group: ";
  } else {
    return;
  }
  // Without a client identity the request must not run as the proxy itself: name the
  // apiserver's anonymous user explicitly.
  static const certs::Identity anonymous{{}, "system:anonymous", {"system:unauthenticated"}, {}, {}, {}};
  const certs::Identity& id = identity_ ? *identity_ : anonymous;
  out += user_header;
  out += id.user;
  out += "\r\n";
  for (const auto& g : id.groups) {
    out += group_header;
    out += g;
    out += "\r\n";
  }
}

void KubeGateway::fill_record(observe::AccessRecord& record) const {
  record.kube_verb = attrs_.verb;
  record.kube_resource = attrs_.is_resource_request ? std::string_view(resource_) : std::string_view(attrs_.path);
  record.kube_namespace = attrs_.namespace_;
  record.peer = identity_;  // the identity the policy saw (a TokenReview user, too)
}

}  // namespace portcullis::http
