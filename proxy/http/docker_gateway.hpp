#pragma once
// `protocol: docker` listeners (issue 9): what the HTTP session does differently in front of
// dockerd. Each request is resolved to a Docker action; the bodies dockerd would act on
// (container/exec/service/volume create and update) are buffered whole, up to the listener's
// inspect_body_bytes, and inspected; and the bytes inspected are the bytes forwarded, with our
// own Content-Length (never the client's framing). Everything that cannot be inspected is
// refused: fail closed. The decision itself stays in proxy/policy (docker.hpp).
#include <cstdint>
#include <string>
#include <vector>

#include "proxy/config.hpp"
#include "proxy/http/parser.hpp"
#include "proxy/net/buffer.hpp"
#include "proxy/net/deadline.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/policy/docker.hpp"
#include "proxy/policy/policy.hpp"

namespace portcullis::http {

// The downstream side of one session, lent to DockerGate while it reads a request body.
struct DownstreamBody {
  net::Buffer& in;  // bytes read after the head (the parser has consumed the head)
  net::Stream& down;
  net::Deadline& deadline;
  std::uint64_t& bytes_in;
};

class DockerGate {
 public:
  policy::DockerAttributes attrs;
  std::string body;       // the exact bytes inspected, and forwarded (when buffered)
  bool buffered = false;  // forward `body` with our own Content-Length instead of relaying

  // Resolves the request's action and, when its body must be inspected, reads the whole body
  // (sending 100 Continue first when the client asked for it) and inspects it. Returns a
  // refusal that must be sent as a 403 on a closed connection: the request cannot be checked
  // (duplicate Content-Type, form-encoded, Content-Encoding, body over inspect_body_bytes,
  // malformed framing, client gone). A body the policy code refuses is not returned here: it
  // is recorded in attrs.refusal, which decide() denies (and which audit mode only logs).
  net::awaitable<std::string> prepare(Parser<true>& req, const std::string& path, const std::string& query,
                                      const config::Limits& limits, const config::Upstream& upstream,
                                      DownstreamBody src);

 private:
  net::awaitable<std::string> read_body(Parser<true>& req, const config::Limits& limits, DownstreamBody src);
};

// The reason a docker client sees for a policy denial: decide()'s reason, plus what the nearest
// rule granted to this peer is missing ("privileged containers are not allowed (add
// \"privileged\" to allow)"), so `docker run` prints why. Rules whose `from` does not match the
// peer are never described (no policy details for strangers).
std::string docker_denial_reason(const policy::Policy& policy, const policy::Request& request,
                                 const policy::Decision& decision);

// `portcullis check` (and `run`) warnings about docker listeners: a rule granting an action that
// can give any image an official-looking name (image.tag, image.build, image.load, image.import,
// container.commit) together with an `images` restriction; an upstream unix socket that a group
// or others may connect to (local users would bypass the gateway).
std::vector<config::Diagnostic> docker_config_warnings(const config::Config& cfg);

}  // namespace portcullis::http
