#pragma once
// Hot reload of a TLS bundle: the current SSL_CTX for new handshakes, rebuilt when the files
// change. Connections already open keep the SSL_CTX they were made with (an SSL holds a
// reference to its SSL_CTX), so a rotation never touches them; session tickets survive it
// because every server context shares TicketKeyStore::process_wide().
//
// Usage (the proxy core):
//   auto workload = certs::ContextReloader::for_server(bundle, certs::ClientCertMode::required,
//                                                      {"http/1.1"});  // throws TlsError at startup
//   SSL* ssl = SSL_new(workload->get().get());                        // per handshake, any thread
//   certs::ReloadOnChange watch({workload});                          // own thread, see below
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "certs/file_watcher.hpp"
#include "certs/tls.hpp"

namespace portcullis::certs {

class ContextReloader {
 public:
  using Builder = std::function<SslCtxPtr(const BundleSpec&)>;

  // Build the first context now and throw TlsError if that fails: a broken bundle at startup
  // must stop the proxy, not leave a listener without TLS.
  static std::shared_ptr<ContextReloader> for_server(BundleSpec bundle, ClientCertMode mode,
                                                     std::vector<std::string> alpn);
  static std::shared_ptr<ContextReloader> for_client(BundleSpec bundle, std::vector<std::string> alpn);
  ContextReloader(BundleSpec bundle, Builder build);

  // The context for the next handshake. Lock-free for readers in practice (one atomic load).
  SslCtxPtr get() const noexcept { return current_.load(std::memory_order_acquire); }

  // Rebuilds from the files. On success swaps the new context in (logging the new serial) and
  // returns true; on any failure (missing file, bad PEM, key not matching the cert...) logs an
  // error naming the bundle and the file, keeps the current context, and returns false.
  bool reload() noexcept;

  const BundleSpec& bundle() const noexcept { return bundle_; }

  // The files this bundle is built from (cert, key, ca, crl; those that are set).
  std::vector<std::filesystem::path> files() const;

  // Seconds left on each certificate the current context presents (leaf first).
  std::vector<CertificateExpiry> expiry(std::time_t now = std::time(nullptr)) const;

  // Logs a warning for each certificate with less than bundle.expiry_warning_days left (an
  // error once expired) and returns how many it warned about. Called after every load; the
  // proxy should also call it on a timer (e.g. hourly) so a long-running process warns.
  int warn_if_expiring(std::time_t now = std::time(nullptr)) const;

  std::uint64_t reloads_succeeded() const noexcept { return reloads_succeeded_.load(); }
  std::uint64_t reloads_failed() const noexcept { return reloads_failed_.load(); }

 private:
  BundleSpec bundle_;
  Builder build_;
  std::atomic<SslCtxPtr> current_;
  std::atomic<std::uint64_t> reloads_succeeded_{0};
  std::atomic<std::uint64_t> reloads_failed_{0};
};

// Watches the files of several bundles and reloads a bundle when one of its files changes.
// Runs on its own small thread (WatchThread): reload() only builds an SSL_CTX and swaps a
// pointer, so no worker io_context is involved. Destroying it stops the thread.
class ReloadOnChange {
 public:
  // Throws std::system_error if inotify cannot be set up.
  explicit ReloadOnChange(std::vector<std::shared_ptr<ContextReloader>> reloaders,
                          std::chrono::milliseconds settle = WatchThread::default_settle);

 private:
  std::vector<std::shared_ptr<ContextReloader>> reloaders_;
  WatchThread thread_;
};

}  // namespace portcullis::certs
