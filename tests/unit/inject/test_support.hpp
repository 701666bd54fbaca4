#pragma once
// Shared by the inject tests: golden files live in tests/unit/inject/golden
// (ctest runs from the source root). PORTCULLIS_UPDATE_GOLDEN=1 rewrites the
// expected outputs instead of comparing.
#include <fstream>
#include <sstream>
#include <string>

namespace portcullis::inject::test {

inline const std::string kGoldenDir = "tests/unit/inject/golden/";

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace portcullis::inject::test
