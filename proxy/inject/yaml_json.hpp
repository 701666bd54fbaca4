#pragma once
// YAML <-> JSON for Kubernetes manifests. Scalars are resolved the way kubectl
// resolves them (sigs.k8s.io/yaml on go-yaml v2, YAML 1.1): plain
// `true`/`yes`/`on` are booleans, `0644` is octal, quoted scalars are strings.
// The emitter quotes every string that would read back as something else, so a
// round trip keeps each value's type. Comments are not kept.
#include <yaml-cpp/yaml.h>

#include <boost/json/value.hpp>
#include <string>
#include <variant>
#include <vector>

namespace portcullis::inject {

// A location inside a document: object keys and array indices, outermost first.
using JsonPath = std::vector<std::variant<std::string, std::size_t>>;

// Throws YAML::Exception (with its mark) on a duplicate key or an unsupported
// node (alias cycles are impossible after yaml-cpp resolves anchors).
boost::json::value yaml_to_json(const YAML::Node& node);

// Block-style YAML for one document (no leading `---`), ending with a newline.
std::string json_to_yaml(const boost::json::value& value);

// The node at `path` inside `root` (or the deepest existing ancestor), for
// error positions.
YAML::Mark mark_at(const YAML::Node& root, const JsonPath& path);

// "spec.template.spec.containers[0].ports" for messages.
std::string path_text(const JsonPath& path);

}  // namespace portcullis::inject
