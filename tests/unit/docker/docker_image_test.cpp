// Image references normalised as Docker does, and `images:` patterns.
#include <catch2/catch.hpp>

#include "proxy/policy/docker.hpp"

using namespace portcullis::policy;

namespace {
std::string norm(std::string_view ref) {
  ImageReference r = parse_image_reference(ref);
  return r.ok ? r.str() : "error: " + r.error;
}
bool matches(std::string_view pattern, std::string_view ref, bool default_latest = true) {
  return image_pattern_matches(pattern, parse_image_reference(ref, default_latest));
}
const std::string kDigest = "sha256:" + std::string(64, 'a');
}  // namespace

TEST_CASE("image names are normalised as distribution/reference does") {
  CHECK(norm("nginx") == "docker.io/library/nginx:latest");
  CHECK(norm("nginx:1.25") == "docker.io/library/nginx:1.25");
  CHECK(norm("user/app") == "docker.io/user/app:latest");
  CHECK(norm("docker.io/nginx") == "docker.io/library/nginx:latest");
  CHECK(norm("index.docker.io/library/nginx") == "docker.io/library/nginx:latest");
  CHECK(norm("localhost:5000/x") == "localhost:5000/x:latest");
  CHECK(norm("localhost/x:1") == "localhost/x:1");
  CHECK(norm("ghcr.io/org/team/app:v1") == "ghcr.io/org/team/app:v1");
  CHECK(norm("[::1]:5000/app") == "[::1]:5000/app:latest");
  CHECK(norm("nginx@" + kDigest) == "docker.io/library/nginx@" + kDigest);
  CHECK(norm("nginx:1.25@" + kDigest) == "docker.io/library/nginx:1.25@" + kDigest);
  CHECK(norm("my_app/a__b/c--d.e") == "docker.io/my_app/a__b/c--d.e:latest");
  // An uppercase first component is a registry (as in ParseNormalizedNamed).
  CHECK(norm("Registry/app") == "Registry/app:latest");
}

TEST_CASE("invalid references are errors") {
  for (const char* bad : {"", "Nginx", "user/App", "nginx:", "nginx:-x", "nginx@sha256:abc", "nginx@md5:" /*no hex*/,
                          "a//b", "nginx/", "-x", "x_", "nginx:a b", "re gistry.io/x", "nginx@@" }) {
    INFO(bad);
    CHECK_FALSE(parse_image_reference(bad).ok);
  }
  CHECK_FALSE(parse_image_reference(std::string(256, 'a') + "x").ok);
}

TEST_CASE("image IDs and hex prefixes are IDs") {
  CHECK(parse_image_reference(std::string(64, 'f')).is_id);
  CHECK(parse_image_reference(kDigest).is_id);
  CHECK(parse_image_reference("sha256:abc").is_id);
  CHECK(parse_image_reference("abc123").is_id);
  CHECK(parse_image_reference("cafe").is_id);  // dockerd may resolve it as an ID prefix
  CHECK_FALSE(parse_image_reference("cafe:1").is_id);
  CHECK_FALSE(parse_image_reference("docker.io/library/cafe").is_id);
  CHECK_FALSE(image_pattern_matches("*", parse_image_reference("abc123")));
}

TEST_CASE("image patterns: segments, tags and digests") {
  CHECK(matches("docker.io/library/*", "nginx"));
  CHECK(matches("docker.io/library/*", "nginx:1.25"));
  CHECK(matches("docker.io/library/*", "nginx@" + kDigest));
  CHECK(matches("docker.io/library/*", "nginx:1.25@" + kDigest));
  CHECK_FALSE(matches("docker.io/library/*", "evil/x"));
  CHECK_FALSE(matches("docker.io/library/*", "docker.io/library/a/b"));
  CHECK(matches("docker.io/**", "docker.io/library/a/b"));
  CHECK_FALSE(matches("docker.io/**", "ghcr.io/library/nginx"));
  CHECK(matches("ghcr.io/org/app-*", "ghcr.io/org/app-web:2"));
  CHECK(matches("docker.io/library/nginx:1.*", "nginx:1.25"));
  CHECK_FALSE(matches("docker.io/library/nginx:1.*", "nginx:2"));
  CHECK_FALSE(matches("docker.io/library/nginx:1.25", "nginx@" + kDigest));
  CHECK(matches("docker.io/library/nginx@" + kDigest, "nginx@" + kDigest));
  CHECK_FALSE(matches("docker.io/library/nginx@" + kDigest, "nginx:latest"));
  CHECK(matches("localhost:5000/*", "localhost:5000/x"));
  CHECK(matches("*", "ghcr.io/a/b"));
  // A pull of every tag matches only tagless patterns.
  CHECK(matches("docker.io/library/nginx", "nginx", false));
  CHECK_FALSE(matches("docker.io/library/nginx:latest", "nginx", false));
  CHECK_FALSE(matches("docker.io/library/*", "Nginx"));
}
