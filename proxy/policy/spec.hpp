#pragma once
// The `policies:` section of the config as plain typed values (parsed and validated by
// proxy/config.cpp, compiled by policy.cpp). See CONFIG.md.
#include <string>
#include <utility>
#include <vector>

namespace portcullis::policy {

struct FromSpec {
  bool any = false;  // `any: true`: everyone, even without a certificate
  std::vector<std::string> spiffe, users, groups;
  // All empty and any == false: any peer with a verified client certificate.
};

struct HttpSpec {
  std::vector<std::string> methods;  // empty = any
  std::vector<std::string> paths;    // `*` one segment, `**` any depth; empty = any
  std::vector<std::string> hosts;    // empty = any
  std::vector<std::pair<std::string, std::vector<std::string>>> headers;  // name lowercased
};

struct KubeSpec {
  std::vector<std::string> verbs, resources, namespaces, names, non_resource_urls;
};

struct DockerSpec {
  std::vector<std::string> actions, images, bind_sources, allow;
};

struct RuleSpec {
  std::string name;
  FromSpec from;
  bool has_http = false, has_kubernetes = false, has_docker = false;
  HttpSpec http;
  KubeSpec kubernetes;
  DockerSpec docker;
};

enum class Mode { enforce, audit };

struct PolicySpec {
  std::string name;
  Mode mode = Mode::enforce;
  std::vector<RuleSpec> rules;
};

}  // namespace portcullis::policy
