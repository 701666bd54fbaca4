#include "proxy/inject/admission.hpp"

#include <openssl/evp.h>

#include <boost/json.hpp>

namespace portcullis::inject {
namespace json = boost::json;

namespace {

std::string pointer_token(std::string_view key) {
  std::string s;
  for (char c : key) {
    if (c == '~')
      s += "~0";
    else if (c == '/')
      s += "~1";
    else
      s += c;
  }
  return s;
}

void diff(const json::value& a, const json::value& b, const std::string& path, json::array& ops) {
  if (a.is_object() && b.is_object()) {
    const auto& ao = a.get_object();
    const auto& bo = b.get_object();
    for (const auto& [k, v] : ao)
      if (!bo.contains(k)) ops.push_back(json::object{{"op", "remove"}, {"path", path + "/" + pointer_token(k)}});
    for (const auto& [k, v] : bo) {
      const std::string p = path + "/" + pointer_token(k);
      if (const auto* old = ao.if_contains(k))
        diff(*old, v, p, ops);
      else
        ops.push_back(json::object{{"op", "add"}, {"path", p}, {"value", v}});
    }
    return;
  }
  if (a != b) ops.push_back(json::object{{"op", "replace"}, {"path", path}, {"value", b}});
}

std::string base64(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

AdmissionAnswer bad_request(const std::string& message) {
  return {400, json::serialize(json::object{{"error", "bad AdmissionReview"}, {"reason", message}}) + "\n"};
}

const json::string* string_at(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? &v->get_string() : nullptr;
}

}  // namespace

json::array json_patch(const json::value& from, const json::value& to) {
  json::array ops;
  diff(from, to, "", ops);
  return ops;
}

AdmissionAnswer review_admission(std::string_view request_body, const Options& options) {
  boost::system::error_code ec;
  json::value review = json::parse(request_body, ec);
  if (ec) return bad_request("the body is not JSON: " + ec.message());
  if (!review.is_object()) return bad_request("the body is not a JSON object");
  const auto& ro = review.get_object();
  const auto* api = string_at(ro, "apiVersion");
  const auto* kind = string_at(ro, "kind");
  if (!api || *api != "admission.k8s.io/v1" || !kind || *kind != "AdmissionReview")
    return bad_request("expected apiVersion admission.k8s.io/v1, kind AdmissionReview");
  const auto* req = ro.if_contains("request");
  if (!req || !req->is_object()) return bad_request("no request object");
  const auto& rq = req->get_object();
  const auto* uid = string_at(rq, "uid");
  if (!uid || uid->empty()) return bad_request("request.uid is missing");

  json::object response{{"uid", *uid}, {"allowed", true}};
  auto answer = [&](json::object resp) {
    return AdmissionAnswer{
        200, json::serialize(json::object{
                 {"apiVersion", "admission.k8s.io/v1"}, {"kind", "AdmissionReview"}, {"response", std::move(resp)}}) +
                 "\n"};
  };
  // Only Pods being created are ours; the MutatingWebhookConfiguration asks for
  // nothing else, and anything else is let through untouched.
  const auto* operation = string_at(rq, "operation");
  bool pod = false;
  if (const auto* k = rq.if_contains("kind"); k && k->is_object())
    if (const auto* kk = string_at(k->get_object(), "kind")) pod = *kk == "Pod";
  if (const auto* sub = string_at(rq, "subResource"); sub && !sub->empty()) pod = false;
  if (!pod || !operation || *operation != "CREATE") return answer(std::move(response));

  const auto* object = rq.if_contains("object");
  if (!object || !object->is_object()) return bad_request("request.object is not a Pod object");
  json::value pod_value = *object;
  if (auto& po = pod_value.get_object(); !po.contains("kind")) po["kind"] = "Pod";  // some clients omit it
  try {
    if (inject_object(pod_value, options) == 0) return answer(std::move(response));
  } catch (const InjectError& e) {
    response["allowed"] = false;
    response["status"] =
        json::object{{"code", 400}, {"reason", "BadRequest"}, {"message", std::string("portcullis: ") + e.what()}};
    return answer(std::move(response));
  }
  json::value original = *object;
  if (!original.get_object().contains("kind")) original.get_object()["kind"] = "Pod";
  response["patchType"] = "JSONPatch";
  response["patch"] = base64(json::serialize(json_patch(original, pod_value)));
  return answer(std::move(response));
}

}  // namespace portcullis::inject
