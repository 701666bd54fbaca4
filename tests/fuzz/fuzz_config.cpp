// The config loader on arbitrary text: it must either return a Config or throw ConfigError with
// at least one FILE:LINE:COL diagnostic. Any other exception would escape `portcullis check`.
#include <cstdint>
#include <string>

#include "proxy/config.hpp"
#include "tests/fuzz/fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  try {
    auto cfg = portcullis::config::load_string(text, "fuzz.yaml");
    for (const auto& l : cfg.listeners) FUZZ_CHECK(!l.name.empty());
  } catch (const portcullis::config::ConfigError& e) {
    FUZZ_CHECK(!e.diagnostics.empty());
    for (const auto& d : e.diagnostics) FUZZ_CHECK(d.str().rfind("fuzz.yaml:", 0) == 0);
  }
  return 0;
}
