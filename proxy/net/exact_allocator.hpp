#pragma once
// Memory for an operation that waits long: the idle wait of a connection, its deadline timer.
// asio hands an operation the first block of its per-thread cache that is large enough, often
// one sized for a larger operation (~340 bytes, an accept's); an operation bound to this
// allocator takes exactly what it needs from malloc instead.
#include <cstddef>
#include <memory>

namespace portcullis::net {

template <class T>
struct ExactAllocator {
  using value_type = T;
  ExactAllocator() = default;
  template <class U>
  ExactAllocator(const ExactAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n) noexcept { std::allocator<T>().deallocate(p, n); }
  template <class U>
  bool operator==(const ExactAllocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace portcullis::net
