#include "cpu/workspace.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <new>

#include "switches.h"

namespace pyseg {
namespace cpu {
namespace {

constexpr size_t kBig = size_t(1) << 20;    // requests from 1 MiB go to mmap
constexpr size_t kHuge = size_t(2) << 20;   // a huge page
constexpr size_t kPage = size_t(4) << 10;   // a base page
constexpr size_t kMaxCached = 48;           // blocks

struct Block {
  void* p;
  size_t size;
};

std::mutex g_mu;
std::vector<Block>* g_cache = nullptr;  // leaked on purpose (no destruction-order issues at exit)
size_t g_cached = 0;

size_t cache_limit() { return switches::crf_cache_bytes(); }

// Whole 2 MiB huge pages where that wastes at most an eighth, else whole 4 KiB pages: a huge page counts in full
// in the resident set once touched, so a 2.2 MiB buffer rounded to 4 MiB would add 1.8 MiB to the peak memory
// (at 256x256 most buffers are a few MiB). The huge pages inside an unrounded buffer are still used.
size_t rounded(size_t bytes) {
  const size_t huge = (bytes + kHuge - 1) / kHuge * kHuge;
  if (huge - bytes <= bytes / 8) return huge;
  return (bytes + kPage - 1) / kPage * kPage;
}

}  // namespace

void* ws_alloc(size_t bytes) {
  if (bytes < kBig) {
    return ::operator new(bytes == 0 ? 1 : bytes);
  }
  const size_t need = rounded(bytes);
  {
    std::lock_guard<std::mutex> lk(g_mu);
    if (g_cache) {
      size_t best = SIZE_MAX;
      for (size_t i = 0; i < g_cache->size(); ++i) {
        const size_t s = (*g_cache)[i].size;
        if (s >= need && s <= need + need / 2 + kHuge && (best == SIZE_MAX || s < (*g_cache)[best].size)) best = i;
      }
      if (best != SIZE_MAX) {
        void* p = (*g_cache)[best].p;
        g_cached -= (*g_cache)[best].size;
        (*g_cache)[best] = g_cache->back();
        g_cache->pop_back();
        return p;
      }
    }
  }
  void* p = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  madvise(p, need, MADV_HUGEPAGE);
#endif
  return p;
}

void ws_free(void* p, size_t bytes) noexcept {
  if (!p) return;
  if (bytes < kBig) {
    ::operator delete(p);
    return;
  }
  const size_t size = rounded(bytes);
  std::vector<Block> drop;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    try {
      if (!g_cache) g_cache = new std::vector<Block>();
      if (size <= cache_limit()) {
        g_cache->push_back(Block{p, size});
        g_cached += size;
        p = nullptr;
      }
      // Over the limit: drop the largest blocks first.
      while (g_cached > cache_limit() || g_cache->size() > kMaxCached) {
        size_t big = 0;
        for (size_t i = 1; i < g_cache->size(); ++i)
          if ((*g_cache)[i].size > (*g_cache)[big].size) big = i;
        drop.push_back((*g_cache)[big]);
        g_cached -= (*g_cache)[big].size;
        (*g_cache)[big] = g_cache->back();
        g_cache->pop_back();
      }
    } catch (...) {
    }
  }
  if (p) munmap(p, size);
  for (const Block& b : drop) munmap(b.p, b.size);
}

size_t release_cached_memory() {
  std::vector<Block> drop;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    if (g_cache) drop.swap(*g_cache);
    g_cached = 0;
  }
  size_t total = 0;
  for (const Block& b : drop) {
    munmap(b.p, b.size);
    total += b.size;
  }
  return total;
}

size_t cached_bytes() {
  std::lock_guard<std::mutex> lk(g_mu);
  return g_cached;
}

}  // namespace cpu
}  // namespace pyseg
