#pragma once
// A fixed-capacity byte buffer with a read window [begin, end). Allocated when a connection
// has bytes to read and released when it goes idle, so idle connections cost no buffer.
//
// Released memory goes to a small per-thread cache, not back to malloc: a keep-alive connection
// takes and releases its buffers on every request, and glibc's free() of a chunk of 64 KiB or
// more also consolidates every small free chunk of the arena (malloc_consolidate), each time.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace portcullis::net {

namespace detail {
class BufferCache {
 public:
  static constexpr std::size_t max_cached = 32;  // per thread: 2 MiB of 64 KiB buffers at most
  std::unique_ptr<char[]> take(std::size_t capacity) {
    for (std::size_t i = free_.size(); i-- > 0;) {
      if (free_[i].first != capacity) continue;
      auto p = std::move(free_[i].second);
      free_[i] = std::move(free_.back());
      free_.pop_back();
      return p;
    }
    return std::make_unique_for_overwrite<char[]>(capacity);  // no zero-fill
  }
  void give(std::size_t capacity, std::unique_ptr<char[]> p) {
    if (p && free_.size() < max_cached) free_.emplace_back(capacity, std::move(p));
  }

 private:
  std::vector<std::pair<std::size_t, std::unique_ptr<char[]>>> free_;
};
inline thread_local BufferCache buffer_cache;
}  // namespace detail

class Buffer {
 public:
  // capacity is at most header_bytes + 1 (16 MiB + 1) or the relay chunk: offsets fit 32 bits,
  // which keeps the buffer at 24 bytes in every connection instead of 32.
  explicit Buffer(std::size_t capacity) : capacity_(static_cast<std::uint32_t>(capacity)) {
    if (capacity > UINT32_MAX) throw std::length_error("net::Buffer capacity over 4 GiB");
  }
  ~Buffer() { detail::buffer_cache.give(capacity_, std::move(data_)); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  bool allocated() const { return data_ != nullptr; }
  void ensure() {
    if (!data_) data_ = detail::buffer_cache.take(capacity_);
  }
  // Gives the memory back when no unread bytes remain.
  void release_if_empty() {
    if (size() == 0) {
      detail::buffer_cache.give(capacity_, std::move(data_));
      data_.reset();
      begin_ = end_ = 0;
    }
  }

  std::string_view data() const { return {data_.get() + begin_, end_ - begin_}; }
  std::size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  void consume(std::size_t n) {
    begin_ += static_cast<std::uint32_t>(n);
    if (begin_ == end_) begin_ = end_ = 0;
  }
  // Space to read into, after moving unread bytes to the front.
  char* space() {
    ensure();
    if (begin_ > 0) {
      std::memmove(data_.get(), data_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    return data_.get() + end_;
  }
  std::size_t space_size() const { return capacity_ - end_ + begin_; }
  void commit(std::size_t n) { end_ += static_cast<std::uint32_t>(n); }
  std::size_t capacity() const { return capacity_; }

 private:
  std::unique_ptr<char[]> data_;
  std::uint32_t capacity_;
  std::uint32_t begin_ = 0, end_ = 0;
};

}  // namespace portcullis::net
