#include "proxy/inject/admission.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

using namespace portcullis::inject;
namespace json = boost::json;

namespace {

const char* kPod =
    R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"shop",
  "annotations":{"team":"a/b"}},"spec":{"containers":[{"name":"app","image":"app:1"}]}})";

std::string review(const std::string& object, const char* operation = "CREATE", const char* kind = "Pod") {
  return R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"705ab4f5-6393-11e8",
    "kind":{"group":"","version":"v1","kind":")" +
         std::string(kind) + R"("},"operation":")" + operation + R"(","namespace":"shop","object":)" + object + "}}";
}

}  // namespace

TEST_CASE("json_patch: add, replace, remove, with RFC 6901 escaping") {
  auto from = json::parse(R"({"a":1,"b":{"x/y":1,"t~":2},"gone":true,"list":[1,2]})");
  auto to = json::parse(R"({"a":1,"b":{"x/y":2,"t~":2,"n":{"k":"v"}},"list":[1,2,3]})");
  CHECK(json_patch(from, to) == json::parse(R"([
    {"op":"remove","path":"/gone"},
    {"op":"replace","path":"/b/x~1y","value":2},
    {"op":"add","path":"/b/n","value":{"k":"v"}},
    {"op":"replace","path":"/list","value":[1,2,3]}])"));
  CHECK(json_patch(to, to).empty());
}

TEST_CASE(
    "webhook: a new Pod is allowed with a base64 JSONPatch and its uid "
    "echoed") {
  auto a = review_admission(review(kPod), Options{});
  REQUIRE(a.status == 200);
  auto r = json::parse(a.body);
  CHECK(r.at("apiVersion") == "admission.k8s.io/v1");
  CHECK(r.at("kind") == "AdmissionReview");
  CHECK(r.at("response").at("uid") == "705ab4f5-6393-11e8");
  CHECK(r.at("response").at("allowed") == true);
  CHECK(r.at("response").at("patchType") == "JSONPatch");
  const auto& patch = r.at("response").at("patch").as_string();
  CHECK(patch.size() > 100);
  CHECK(patch.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrst"
                                "uvwxyz0123456789+/=") == json::string::npos);
}

TEST_CASE(
    "webhook: opted out, already injected, not a Pod, not CREATE: "
    "allowed without a patch") {
  const std::string opted =
      R"({"kind":"Pod","metadata":{"annotations":{"portcullis.io/inject":"false"}},
    "spec":{"containers":[{"name":"app","image":"app:1"}]}})";
  const std::string injected =
      R"({"kind":"Pod","spec":{"initContainers":[{"name":"portcullis-proxy"}],
    "containers":[{"name":"app","image":"app:1"}]}})";
  for (const auto& body :
       {review(opted), review(injected), review(kPod, "UPDATE"), review("{}", "CREATE", "Service")}) {
    auto a = review_admission(body, Options{});
    REQUIRE(a.status == 200);
    auto resp = json::parse(a.body).at("response");
    CHECK(resp.at("allowed") == true);
    CHECK_FALSE(resp.as_object().contains("patch"));
    CHECK_FALSE(resp.as_object().contains("patchType"));
  }
}

TEST_CASE(
    "webhook: a Pod the injector cannot handle is refused, not let "
    "through unprotected") {
  auto a = review_admission(review(R"({"kind":"Pod","spec":{"containers":"app"}})"), Options{});
  REQUIRE(a.status == 200);
  auto resp = json::parse(a.body).at("response");
  CHECK(resp.at("allowed") == false);
  CHECK(resp.at("status").at("message") == "portcullis: spec.containers must be a list");
}

TEST_CASE("webhook: malformed reviews are 400 with the reason") {
  auto reason = [](const std::string& body) {
    auto a = review_admission(body, Options{});
    CHECK(a.status == 400);
    return std::string(json::parse(a.body).at("reason").as_string());
  };
  CHECK(reason("{not json").starts_with("the body is not JSON"));
  CHECK(reason(R"({"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}})") ==
        "expected apiVersion admission.k8s.io/v1, kind AdmissionReview");
  CHECK(reason(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"})") == "no request object");
  CHECK(reason(R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"kind":"Pod"}}})") ==
        "request.uid is missing");
  CHECK(reason(review("[1]")) == "request.object is not a Pod object");
}
