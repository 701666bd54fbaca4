#pragma once
// The mutating admission webhook's decision (`portcullis webhook`), without
// I/O: an AdmissionReview (admission.k8s.io/v1) in, the AdmissionReview answer
// out. The patch is the RFC 6902 JSONPatch from the submitted Pod to the Pod
// `portcullis inject` would write.
#include <boost/json/array.hpp>
#include <boost/json/value.hpp>
#include <string>
#include <string_view>

#include "proxy/inject/inject.hpp"

namespace portcullis::inject {

// RFC 6902 operations turning `from` into `to`: objects are compared member by
// member, arrays and scalars that differ are replaced whole. Keys are escaped
// per RFC 6901 (`~0`, `~1`).
boost::json::array json_patch(const boost::json::value& from, const boost::json::value& to);

struct AdmissionAnswer {
  int status = 200;  // 400: not an AdmissionReview we can answer (body says why)
  std::string body;  // JSON
};

// Pods being created are injected (unless opted out or already injected) and
// allowed with a base64 JSONPatch; any other request is allowed unchanged. A
// Pod the injector cannot handle is refused (allowed: false with the reason),
// so no pod starts unprotected.
AdmissionAnswer review_admission(std::string_view request_body, const Options& options);

}  // namespace portcullis::inject
