#pragma once
// Notices when files change on disk, the ways certificates really get replaced:
//  - rewritten in place (cp, an editor), or written to a temporary file and renamed over;
//  - the Kubernetes secret/configMap volume: DIR/tls.crt -> DIR/..data/tls.crt, where ..data is a
//    symlink to a timestamped directory that the kubelet swaps atomically (rename of a new
//    symlink over ..data). Nothing happens to "tls.crt" itself, so watching the file would miss
//    it: we watch the directories (the one named in the path and the one the path resolves to)
//    and, on any event there, compare the files' contents with what we saw last.
//
// Two ways to drive it:
//  - FileWatcher: no thread. Put native_handle() into an event loop (e.g. an asio
//    posix::stream_descriptor with async_wait(wait_read)) and call poll_changes() when it is
//    readable. Not thread-safe: use it from one thread.
//  - WatchThread: a small thread of its own that waits for events, lets a burst of writes
//    settle, and calls a callback with the files that changed.
#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace portcullis::certs {

class FileWatcher {
 public:
  // Throws std::system_error when inotify is unavailable or a directory cannot be watched
  // (a missing file is fine as long as its directory exists: it may appear later).
  explicit FileWatcher(std::vector<std::filesystem::path> files);
  ~FileWatcher();
  FileWatcher(const FileWatcher&) = delete;
  FileWatcher& operator=(const FileWatcher&) = delete;

  // The inotify descriptor (non-blocking, close-on-exec); readable when something may have changed.
  int native_handle() const noexcept { return inotify_fd_; }

  // Reads the pending events (if any) and returns the watched files whose content differs from
  // the last time it was reported (or from construction), in the order they were given. An
  // event that changed nothing we watch returns an empty list. Never throws on I/O errors: a
  // file that cannot be read counts as "missing".
  std::vector<std::filesystem::path> poll_changes();

  // Only consumes pending events; true if there were any. For callers that debounce.
  bool drain_events() noexcept;

 private:
  struct Watched {
    std::filesystem::path path;
    std::optional<std::string> digest;  // SHA-256 of the content; nullopt = missing or unreadable
  };
  void watch_directories_of(const std::filesystem::path& file);
  int inotify_fd_ = -1;
  std::vector<Watched> files_;
};

class WatchThread {
 public:
  static constexpr std::chrono::milliseconds default_settle{200};
  using Callback = std::function<void(const std::vector<std::filesystem::path>& changed)>;

  // Starts the thread. `on_change` runs on that thread, once the files have been quiet for
  // `settle` after an event (a cert and its key are usually written one after the other;
  // reloading between the two would log a spurious mismatch).
  WatchThread(std::vector<std::filesystem::path> files, Callback on_change,
              std::chrono::milliseconds settle = default_settle);
  ~WatchThread();  // stops and joins
  WatchThread(const WatchThread&) = delete;
  WatchThread& operator=(const WatchThread&) = delete;

 private:
  void run();
  FileWatcher watcher_;
  Callback on_change_;
  std::chrono::milliseconds settle_;
  int stop_fd_ = -1;  // eventfd written by the destructor
  std::thread thread_;
};

}  // namespace portcullis::certs
