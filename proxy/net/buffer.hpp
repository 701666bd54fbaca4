#pragma once
// A fixed-capacity byte buffer with a read window [begin, end). Allocated when a connection
// has bytes to read and released when it goes idle, so idle connections cost no buffer.
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace portcullis::net {

class Buffer {
 public:
  explicit Buffer(std::size_t capacity) : capacity_(capacity) {}

  bool allocated() const { return data_ != nullptr; }
  void ensure() {
    if (!data_) data_ = std::make_unique_for_overwrite<char[]>(capacity_);  // no zero-fill
  }
  // Frees the memory when no unread bytes remain.
  void release_if_empty() {
    if (size() == 0) {
      data_.reset();
      begin_ = end_ = 0;
    }
  }

  std::string_view data() const { return {data_.get() + begin_, end_ - begin_}; }
  std::size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  void consume(std::size_t n) {
    begin_ += n;
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
  void commit(std::size_t n) { end_ += n; }
  std::size_t capacity() const { return capacity_; }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t capacity_;
  std::size_t begin_ = 0, end_ = 0;
};

}  // namespace portcullis::net
