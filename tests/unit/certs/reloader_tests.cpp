#include <poll.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "certs/file_watcher.hpp"
#include "certs/reloader.hpp"
#include "tests/unit/certs/test_support.hpp"

using namespace portcullis::certs;
using namespace portcullis::certs::testing;
namespace fs = std::filesystem;

namespace {

IssueOptions server_options(int days = 365) {
  IssueOptions options;
  options.name = "tls";
  options.dns = {"server.local"};
  options.days = days;
  return options;
}

std::string serial_of(const ContextReloader& reloader) { return reloader.expiry().at(0).serial; }

// Waits (up to a generous deadline, so a slow machine does not fail it) for `done`.
template <typename Predicate>
bool eventually(Predicate done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

}  // namespace

TEST_CASE("reload swaps in a new certificate and keeps the old context when the new pair is broken", "[reload]") {
  ScratchDir scratch;
  const fs::path ca = make_ca(scratch);
  const fs::path dir = scratch.path / "tls";
  const BundleSpec bundle = issue_bundle(ca, dir, server_options());
  auto reloader = ContextReloader::for_server(bundle, ClientCertMode::required, {"http/1.1"});
  const SslCtxPtr original = reloader->get();
  const std::string original_serial = serial_of(*reloader);

  // A key from another issuance: cert and key no longer match.
  issue_bundle(ca, scratch.path / "other", server_options());
  write_file(bundle.key, read_file(scratch.path / "other" / "tls.key"));
  CHECK_FALSE(reloader->reload());
  CHECK(reloader->get() == original);
  CHECK(reloader->reloads_failed() == 1);

  write_file(bundle.cert, "-----BEGIN CERTIFICATE-----\ntruncated");
  CHECK_FALSE(reloader->reload());
  fs::remove(bundle.cert);
  CHECK_FALSE(reloader->reload());
  CHECK(reloader->get() == original);

  issue_bundle(ca, dir, server_options());
  CHECK(reloader->reload());
  CHECK(reloader->get() != original);
  CHECK(serial_of(*reloader) != original_serial);
  CHECK(reloader->reloads_succeeded() == 1);
}

TEST_CASE("a broken bundle at startup is an error, not a listener without TLS", "[reload]") {
  ScratchDir scratch;
  BundleSpec bundle;
  bundle.name = "workload";
  bundle.cert = (scratch.path / "tls.crt").string();
  bundle.key = (scratch.path / "tls.key").string();
  CHECK_THROWS_AS(ContextReloader::for_server(bundle, ClientCertMode::none, {}), TlsError);
}

TEST_CASE("expiry warnings fire under expiry_warning_days", "[reload]") {
  ScratchDir scratch;
  const fs::path ca = make_ca(scratch);
  BundleSpec bundle = issue_bundle(ca, scratch.path / "tls", server_options(5));
  bundle.expiry_warning_days = 7;
  auto soon = ContextReloader::for_server(bundle, ClientCertMode::required, {});
  CHECK(soon->warn_if_expiring() == 1);
  CHECK(soon->warn_if_expiring(std::time(nullptr) + 6 * 86400) == 1);  // expired by then
  bundle.expiry_warning_days = 3;
  auto later = ContextReloader::for_server(bundle, ClientCertMode::required, {});
  CHECK(later->warn_if_expiring() == 0);
  CHECK(later->expiry().at(0).seconds_left > 4 * 86400);
}

TEST_CASE("the watcher reports files rewritten in place or renamed over, and nothing else", "[watch]") {
  ScratchDir scratch;
  const fs::path cert = scratch.path / "tls.crt";
  const fs::path key = scratch.path / "tls.key";
  write_file(cert, "cert v1");
  write_file(key, "key v1");
  FileWatcher watcher({cert, key});
  CHECK(watcher.poll_changes().empty());

  write_file(cert, "cert v2");  // in place
  CHECK(watcher.poll_changes() == std::vector<fs::path>{cert});

  write_file(scratch.path / "new.key", "key v2");
  fs::rename(scratch.path / "new.key", key);  // atomic replace
  CHECK(watcher.poll_changes() == std::vector<fs::path>{key});

  write_file(scratch.path / "unrelated", "x");
  CHECK(watcher.poll_changes().empty());

  write_file(cert, "cert v2");  // same bytes: nothing to reload
  CHECK(watcher.poll_changes().empty());
}

TEST_CASE("the watcher follows a Kubernetes secret volume's ..data symlink swap", "[watch]") {
  ScratchDir scratch;
  const fs::path volume = scratch.path / "secret";
  fs::create_directories(volume / "..2026_01_01_v1");
  write_file(volume / "..2026_01_01_v1" / "tls.crt", "cert v1");
  fs::create_directory_symlink("..2026_01_01_v1", volume / "..data");
  fs::create_symlink("..data/tls.crt", volume / "tls.crt");
  FileWatcher watcher({volume / "tls.crt"});

  // What the kubelet does: a new timestamped dir, a new symlink renamed over ..data, old dir removed.
  fs::create_directories(volume / "..2026_01_02_v2");
  write_file(volume / "..2026_01_02_v2" / "tls.crt", "cert v2");
  fs::create_directory_symlink("..2026_01_02_v2", volume / "..data_tmp");
  fs::rename(volume / "..data_tmp", volume / "..data");
  fs::remove_all(volume / "..2026_01_01_v1");

  pollfd readable{watcher.native_handle(), POLLIN, 0};
  CHECK(::poll(&readable, 1, 0) == 1);  // the swap raised an event on the fd an event loop would wait on
  CHECK(watcher.poll_changes() == std::vector<fs::path>{volume / "tls.crt"});
  CHECK(read_file(volume / "tls.crt") == "cert v2");
}

TEST_CASE("ReloadOnChange reloads a bundle when its files are replaced", "[watch][reload]") {
  ScratchDir scratch;
  const fs::path ca = make_ca(scratch);
  const BundleSpec bundle = issue_bundle(ca, scratch.path / "tls", server_options());
  auto reloader = ContextReloader::for_server(bundle, ClientCertMode::required, {});
  const std::string before = serial_of(*reloader);
  ReloadOnChange watch({reloader}, std::chrono::milliseconds(50));
  issue_bundle(ca, scratch.path / "tls", server_options());
  REQUIRE(eventually([&] { return reloader->reloads_succeeded() >= 1; }));
  CHECK(serial_of(*reloader) != before);
  CHECK(reloader->reloads_failed() == 0);
}
