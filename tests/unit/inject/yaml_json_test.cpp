#include "proxy/inject/yaml_json.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

using namespace portcullis::inject;
namespace json = boost::json;

namespace {
json::value load(const std::string& yaml) { return yaml_to_json(YAML::Load(yaml)); }
}  // namespace

TEST_CASE("scalars resolve as kubectl reads them") {
  auto v = load(R"(a: 8080
b: "8080"
c: true
d: "true"
e: yes
f: 0644
g: 0x1F
h: 1.5
i: ~
j: 'on'
k: 1e3
l: 12abc
m: ""
)");
  CHECK(v == json::parse(
                 R"({"a":8080,"b":"8080","c":true,"d":"true","e":true,"f":420,"g":31,"h":1.5,"i":null,
                             "j":"on","k":1E3,"l":"12abc","m":""})"));
}

TEST_CASE("emitting quotes every string that would read back as another type") {
  auto v = json::parse(
      R"({"port":"8080","flag":"true","mode":"on","empty":"","n":null,"x":1.0,"big":18446744073709551615,
                           "neg":-3,"text":"plain words","multi":"line one\nline two\n","yes":"no","list":[],"map":{}})");
  const std::string y = json_to_yaml(v);
  CHECK(load(y) == v);
  CHECK(y.find("port: \"8080\"") != std::string::npos);
  CHECK(y.find("multi: |") != std::string::npos);
}
