#include "certs/file_watcher.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <system_error>

namespace portcullis::certs {

namespace {

namespace fs = std::filesystem;

// Certificates, keys and CRLs are small; a bigger file is not one of ours and is not read.
constexpr std::uintmax_t max_watched_file_bytes = 16 * 1024 * 1024;

// Directory events that can mean a watched name now points at different bytes. IN_MODIFY is
// left out on purpose: IN_CLOSE_WRITE covers an in-place rewrite once the writer is done.
constexpr uint32_t directory_events = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB |
                                      IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;

// A SHA-256 of the file's bytes: enough to tell a change, and no copy of a private key is kept.
std::optional<std::string> content_digest(const fs::path& path) noexcept {
  try {
    std::error_code error;
    const auto size = fs::file_size(path, error);  // follows symlinks
    if (error || size > max_watched_file_bytes) {
      return std::nullopt;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      return std::nullopt;
    }
    std::string bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>{});
    std::string digest(EVP_MAX_MD_SIZE, '\0');
    unsigned int length = 0;
    const bool hashed = EVP_Digest(bytes.data(), bytes.size(), reinterpret_cast<unsigned char*>(digest.data()), &length,
                                   EVP_sha256(), nullptr) == 1;
    OPENSSL_cleanse(bytes.data(), bytes.size());
    if (!hashed) {
      return std::nullopt;
    }
    digest.resize(length);
    return digest;
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace

FileWatcher::FileWatcher(std::vector<fs::path> files) {
  inotify_fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    throw std::system_error(errno, std::generic_category(), "inotify_init1");
  }
  try {
    for (fs::path& file : files) {
      file = fs::absolute(file);
      const fs::path directory = file.parent_path();
      if (inotify_add_watch(inotify_fd_, directory.c_str(), directory_events) < 0) {
        throw std::system_error(errno, std::generic_category(), "cannot watch " + directory.string());
      }
      watch_directories_of(file);
      files_.push_back({file, content_digest(file)});
    }
  } catch (...) {
    ::close(inotify_fd_);
    throw;
  }
}

FileWatcher::~FileWatcher() {
  if (inotify_fd_ >= 0) {
    ::close(inotify_fd_);
  }
}

// Also watch the directory the file resolves to, for a symlink into another directory whose
// target is rewritten in place. For the Kubernetes layout that is the timestamped directory;
// its watch disappears with it (IN_IGNORED), which is fine. Adding an existing watch is a no-op.
void FileWatcher::watch_directories_of(const fs::path& file) {
  std::error_code error;
  const fs::path resolved = fs::canonical(file, error);
  if (!error && resolved.parent_path() != file.parent_path()) {
    inotify_add_watch(inotify_fd_, resolved.parent_path().c_str(), directory_events);
  }
}

bool FileWatcher::drain_events() noexcept {
  alignas(inotify_event) std::array<char, 4096> buffer;
  bool any = false;
  for (;;) {
    const ssize_t n = ::read(inotify_fd_, buffer.data(), buffer.size());
    if (n > 0) {
      any = true;
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    return any;  // EAGAIN: drained
  }
}

std::vector<fs::path> FileWatcher::poll_changes() {
  drain_events();
  std::vector<fs::path> changed;
  for (Watched& file : files_) {
    watch_directories_of(file.path);
    std::optional<std::string> digest = content_digest(file.path);
    if (digest != file.digest) {
      file.digest = std::move(digest);
      changed.push_back(file.path);
    }
  }
  return changed;
}

WatchThread::WatchThread(std::vector<fs::path> files, Callback on_change, std::chrono::milliseconds settle)
    : watcher_(std::move(files)), on_change_(std::move(on_change)), settle_(settle) {
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) {
    throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  thread_ = std::thread([this] { run(); });
}

WatchThread::~WatchThread() {
  const uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(stop_fd_, &one, sizeof one);
  thread_.join();
  ::close(stop_fd_);
}

void WatchThread::run() {
  std::array<pollfd, 2> fds{{{watcher_.native_handle(), POLLIN, 0}, {stop_fd_, POLLIN, 0}}};
  bool pending = false;  // events seen, waiting for them to settle
  for (;;) {
    const int timeout = pending ? static_cast<int>(settle_.count()) : -1;
    const int ready = ::poll(fds.data(), fds.size(), timeout);
    if (ready < 0) {
      if (errno == EINTR) {
        continue;
      }
      spdlog::error("certificate file watcher stopped: poll failed: {}", std::strerror(errno));
      return;
    }
    if (fds[1].revents != 0) {
      return;
    }
    if (ready > 0) {
      pending = watcher_.drain_events() || pending;
      continue;
    }
    // Quiet for `settle` after the last event: look at what changed.
    pending = false;
    const std::vector<fs::path> changed = watcher_.poll_changes();
    if (!changed.empty()) {
      try {
        on_change_(changed);
      } catch (const std::exception& error) {
        spdlog::error("certificate reload failed: {}", error.what());
      }
    }
  }
}

}  // namespace portcullis::certs
