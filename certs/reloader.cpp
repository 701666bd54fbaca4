#include "certs/reloader.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "certs/tls.hpp"

namespace portcullis::certs {

namespace {

constexpr std::int64_t seconds_per_day = 86400;

}  // namespace

std::shared_ptr<ContextReloader> ContextReloader::for_server(BundleSpec bundle, ClientCertMode mode,
                                                             std::vector<std::string> alpn) {
  return std::make_shared<ContextReloader>(std::move(bundle), [mode, alpn = std::move(alpn)](const BundleSpec& spec) {
    return make_server_context(spec, mode, alpn);
  });
}

std::shared_ptr<ContextReloader> ContextReloader::for_client(BundleSpec bundle, std::vector<std::string> alpn) {
  return std::make_shared<ContextReloader>(
      std::move(bundle), [alpn = std::move(alpn)](const BundleSpec& spec) { return make_client_context(spec, alpn); });
}

ContextReloader::ContextReloader(BundleSpec bundle, Builder build)
    : bundle_(std::move(bundle)), build_(std::move(build)), current_(build_(bundle_)) {
  warn_if_expiring();
}

bool ContextReloader::reload() noexcept {
  try {
    SslCtxPtr fresh = build_(bundle_);
    const std::vector<CertificateExpiry> presented = certificate_expiry(fresh.get(), std::time(nullptr));
    current_.store(std::move(fresh), std::memory_order_release);
    ++reloads_succeeded_;
    if (!presented.empty()) {
      spdlog::info("tls bundle '{}': reloaded {} (serial {}, {} days left)", bundle_.name, presented.front().subject,
                   presented.front().serial, presented.front().seconds_left / seconds_per_day);
    } else {
      spdlog::info("tls bundle '{}': reloaded", bundle_.name);
    }
    warn_if_expiring();
    return true;
  } catch (const std::exception& error) {
    ++reloads_failed_;
    spdlog::error("{}; keeping the previous certificate", error.what());
  } catch (...) {
    ++reloads_failed_;
    spdlog::error("tls bundle '{}': reload failed; keeping the previous certificate", bundle_.name);
  }
  return false;
}

std::vector<std::filesystem::path> ContextReloader::files() const {
  std::vector<std::filesystem::path> files;
  for (const std::string* file : {&bundle_.cert, &bundle_.key, &bundle_.ca, &bundle_.crl}) {
    if (!file->empty() && std::find(files.begin(), files.end(), *file) == files.end()) {
      files.emplace_back(*file);
    }
  }
  return files;
}

std::vector<CertificateExpiry> ContextReloader::expiry(std::time_t now) const {
  return certificate_expiry(get().get(), now);
}

int ContextReloader::warn_if_expiring(std::time_t now) const {
  return certs::warn_if_expiring(bundle_.name, get().get(), bundle_.expiry_warning_days, now);
}

namespace {

std::vector<std::filesystem::path> all_files(const std::vector<std::shared_ptr<ContextReloader>>& reloaders) {
  std::vector<std::filesystem::path> files;
  for (const auto& reloader : reloaders) {
    for (auto& file : reloader->files()) {
      files.push_back(std::filesystem::absolute(file));
    }
  }
  return files;
}

}  // namespace

ReloadOnChange::ReloadOnChange(std::vector<std::shared_ptr<ContextReloader>> reloaders,
                               std::chrono::milliseconds settle)
    : reloaders_(std::move(reloaders)),
      thread_(
          all_files(reloaders_),
          [this](const std::vector<std::filesystem::path>& changed) {
            for (const auto& reloader : reloaders_) {
              const auto files = reloader->files();
              const bool affected = std::any_of(files.begin(), files.end(), [&](const std::filesystem::path& file) {
                return std::find(changed.begin(), changed.end(), std::filesystem::absolute(file)) != changed.end();
              });
              if (affected) {
                reloader->reload();
              }
            }
          },
          settle) {}

}  // namespace portcullis::certs
