// The Gaussian lattice cache (cpu/lattice_cpu.h: gaussian_lattice): the last few position-only lattices, kept
// read-only and shared, least recently used dropped first.
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/lattice_cpu.h"

namespace pyseg {
namespace cpu {

namespace {

template <class V>
size_t bytes_of(const V& v) {
  return v.capacity() * sizeof(typename V::value_type);
}
size_t lattice_bytes(const Lattice& l) {
  return bytes_of(l.chunk_begin) + bytes_of(l.local_begin) + bytes_of(l.offsets) + bytes_of(l.bary) +
         bytes_of(l.to_global) + bytes_of(l.gather_start) + bytes_of(l.gather_rows) + bytes_of(l.nbr) +
         bytes_of(l.pre) + bytes_of(l.post);
}

struct GaussianKey {
  int64_t n;
  int width;
  float sx, sy;
  int normalization;
  bool operator==(const GaussianKey& o) const {
    // Sigmas compared bit for bit (the build uses them exactly).
    return n == o.n && width == o.width && std::memcmp(&sx, &o.sx, sizeof sx) == 0 &&
           std::memcmp(&sy, &o.sy, sizeof sy) == 0 && normalization == o.normalization;
  }
};
struct CachedLattice {
  GaussianKey key;
  std::shared_ptr<const Lattice> lat;
  size_t bytes;
};
std::mutex g_lat_mu;
std::vector<CachedLattice>* g_lat_cache = nullptr;  // most recently used last; leaked on purpose (exit order)
int g_lat_entries = 4;
size_t g_lat_max_bytes = size_t(256) << 20;  // a 4096x4096 Gaussian lattice (~620 MB) is not kept

}  // namespace

// Drops the least recently used lattices until the limits hold (g_lat_mu held).
static void trim_lattice_cache() {
  if (!g_lat_cache) return;
  auto& cache = *g_lat_cache;
  size_t total = 0;
  for (const auto& c : cache) total += c.bytes;
  while (!cache.empty() && ((int)cache.size() > g_lat_entries || total > g_lat_max_bytes)) {
    total -= cache.front().bytes;
    cache.erase(cache.begin());
  }
}

std::shared_ptr<const Lattice> gaussian_lattice(int64_t n, const GaussianImageFeatures& feat, int normalization,
                                                Executor& ex) {
  const GaussianKey key{n, feat.width, feat.sx, feat.sy, normalization};
  std::lock_guard<std::mutex> lk(g_lat_mu);  // held while building: a concurrent caller waits and then reuses it
  if (!g_lat_cache) g_lat_cache = new std::vector<CachedLattice>();
  auto& cache = *g_lat_cache;
  for (size_t i = 0; i < cache.size(); ++i) {
    if (cache[i].key == key) {
      CachedLattice hit = cache[i];
      cache.erase(cache.begin() + (std::ptrdiff_t)i);
      cache.push_back(hit);
      return hit.lat;
    }
  }
  auto lat = std::make_shared<Lattice>();
  build_lattice(*lat, n, feat, normalization, ex);
  const size_t bytes = lattice_bytes(*lat);
  if (g_lat_entries > 0 && bytes <= g_lat_max_bytes) {
    cache.push_back(CachedLattice{key, lat, bytes});
    trim_lattice_cache();
  }
  return lat;
}

void set_lattice_cache_limits(int entries, size_t max_bytes) {
  std::lock_guard<std::mutex> lk(g_lat_mu);
  g_lat_entries = entries < 0 ? 0 : entries;
  g_lat_max_bytes = max_bytes;
  trim_lattice_cache();
}

int lattice_cache_entries() {
  std::lock_guard<std::mutex> lk(g_lat_mu);
  return g_lat_entries;
}

size_t release_lattice_cache() {
  std::vector<CachedLattice> drop;
  {
    std::lock_guard<std::mutex> lk(g_lat_mu);
    if (g_lat_cache) drop.swap(*g_lat_cache);
  }
  size_t total = 0;
  for (const auto& c : drop) total += c.bytes;
  return total;  // the lattices' memory goes back when the last user (if any) lets go of them
}

size_t lattice_cache_bytes() {
  std::lock_guard<std::mutex> lk(g_lat_mu);
  size_t total = 0;
  if (g_lat_cache)
    for (const auto& c : *g_lat_cache) total += c.bytes;
  return total;
}

}  // namespace cpu
}  // namespace pyseg
