// Large-buffer allocator of the CPU driver. Fresh memory is expensive (a page fault per 4 KiB page, more
// than the CRF itself: benchmarks/NOTES_cpu.md), so big buffers are mmap'ed with transparent
// huge pages requested (in 2 MiB multiples where that wastes little), and freed buffers are kept for the next
// call (a small cache of at most cache_limit bytes; release_cached_memory() returns it to the OS). Small
// requests use operator new.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace pyseg {
namespace cpu {

void* ws_alloc(size_t bytes);
void ws_free(void* p, size_t bytes) noexcept;
// Unmaps every cached buffer; returns the bytes released.
size_t release_cached_memory();
size_t cached_bytes();

template <class T>
struct WsAllocator {
  using value_type = T;
  WsAllocator() noexcept = default;
  template <class U>
  WsAllocator(const WsAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(ws_alloc(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { ws_free(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const WsAllocator<U>&) const noexcept { return true; }
  template <class U>
  bool operator!=(const WsAllocator<U>&) const noexcept { return false; }
};

template <class T>
using wvec = std::vector<T, WsAllocator<T>>;

// An uninitialised array from the workspace (no zero fill).
template <class T>
class WsArray {
 public:
  WsArray() = default;
  explicit WsArray(size_t n) : p_(static_cast<T*>(ws_alloc(n * sizeof(T)))), n_(n) {}
  ~WsArray() { reset(); }
  WsArray(WsArray&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
  WsArray& operator=(WsArray&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_, n_ = o.n_;
      o.p_ = nullptr, o.n_ = 0;
    }
    return *this;
  }
  WsArray(const WsArray&) = delete;
  WsArray& operator=(const WsArray&) = delete;
  void reset() {
    if (p_) ws_free(p_, n_ * sizeof(T));
    p_ = nullptr, n_ = 0;
  }
  T* get() const { return p_; }
  T& operator[](size_t i) const { return p_[i]; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace cpu
}  // namespace pyseg
