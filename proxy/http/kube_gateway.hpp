#pragma once
// What a `protocol: kubernetes` listener adds to the HTTP request loop (session.cpp):
//   - who is asking: the verified client certificate (CN = user, O = groups, as the apiserver
//     reads them) and/or a bearer token checked with a TokenReview sent to the apiserver
//     upstream with the proxy's own client certificate (authenticate: [client_cert, token_review]);
//   - what is asked: policy::resolve_kube(), as the apiserver's RequestInfo resolver would;
//   - the identity sent upstream: Impersonate-User / Impersonate-Group (forward_identity:
//     impersonate) or X-Remote-User / X-Remote-Group (remote_user); the client's own
//     Authorization never goes upstream then, since the proxy authenticates with its own cert;
//   - a deny message naming user, verb, resource, namespace and the rule that came closest.
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "certs/identity.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/observe/access_log.hpp"
#include "proxy/policy/kube.hpp"
#include "proxy/policy/policy.hpp"
#include "proxy/snapshot.hpp"

namespace portcullis::http {

class KubeGateway {
 public:
  // Why a request is refused before the policy sees it (401 bad token, 503 TokenReview failed).
  struct Refusal {
    int status = 0;
    std::string kind;
    std::string reason;
  };

  // Resolves the request and authenticates the client. `peer`: the verified client certificate,
  // if any. Awaits a TokenReview only for a bearer token that is not cached.
  net::awaitable<std::optional<Refusal>> prepare(const ListenerRuntime& listener, const certs::Identity* peer,
                                                 std::string_view method, std::string_view path, std::string_view query,
                                                 std::span<const policy::Header> fields);

  const policy::KubeAttributes& attributes() const { return attrs_; }
  // Who the policy decides for and who is impersonated; null = anonymous.
  const certs::Identity* identity() const { return identity_; }

  // The reason in the 403 Status: `user "alice" (groups "dev") cannot delete pods "x" in
  // namespace "prod": no rule of policy "apiserver" allows it (closest rule "pods-read": ...)`.
  std::string denial_reason(const policy::Policy& policy, const policy::Request& request,
                            const policy::Decision& decision) const;

  // True when the client's copy of header `lower_name` must not be forwarded.
  bool drops_header(std::string_view lower_name) const;
  // Appends the identity header lines ("Name: value\r\n") for forward_identity impersonate or
  // remote_user; nothing for xfcc / none.
  void append_identity_headers(std::string& out) const;
  // kubernetes.verb / .resource / .namespace and the client identity (views into this object).
  void fill_record(observe::AccessRecord& record) const;

 private:
  // impersonate / remote_user: the proxy names the client in headers it sets itself.
  bool names_client() const;

  config::ForwardIdentity forward_ = config::ForwardIdentity::impersonate;
  policy::KubeAttributes attrs_;
  std::string resource_;
  std::optional<certs::Identity> token_identity_;
  const certs::Identity* identity_ = nullptr;
};

}  // namespace portcullis::http
