// Open-addressing hash table of lattice keys (d int32 coordinates each) -> dense vertex index.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/workspace.h"
#include "crf/lattice.h"

namespace pyseg {
namespace cpu {

template <int D>
class KeyTable {
 public:
  explicit KeyTable(int d = D, int64_t expected = 64) : d_(D > 0 ? D : d) { rehash(capacity_for(expected)); }

  int size() const { return size_; }
  const int32_t* key(int i) const { return keys_.data() + (int64_t)i * d_; }
  const wvec<int32_t>& keys() const { return keys_; }

  // Index of `key`, inserting it when new.
  int find_or_insert(const int32_t* key) {
    if ((int64_t)(size_ + 1) * 2 > (int64_t)slots_.size()) rehash(slots_.size() * 2);
    const uint32_t mask = (uint32_t)slots_.size() - 1;
    uint32_t h = crf::hash_key<D>(d_, key) & mask;
    for (;;) {
      const int32_t s = slots_[h];
      if (s < 0) {
        slots_[h] = size_;
        keys_.insert(keys_.end(), key, key + d_);
        return size_++;
      }
      if (crf::keys_equal<D>(d_, keys_.data() + (int64_t)s * d_, key)) return s;
      h = (h + 1) & mask;
    }
  }

  // Slot of `key`'s hash; prefetch() it before find_at() to overlap the cache misses of several lookups.
  uint32_t slot_of(const int32_t* key) const { return crf::hash_key<D>(d_, key) & ((uint32_t)slots_.size() - 1); }
  void prefetch(uint32_t h) const { __builtin_prefetch(slots_.data() + h); }

  // Index of `key`, or -1.
  int find(const int32_t* key) const { return find_at(key, slot_of(key)); }
  int find_at(const int32_t* key, uint32_t h) const {
    const uint32_t mask = (uint32_t)slots_.size() - 1;
    for (;;) {
      const int32_t s = slots_[h];
      if (s < 0) return -1;
      if (crf::keys_equal<D>(d_, keys_.data() + (int64_t)s * d_, key)) return s;
      h = (h + 1) & mask;
    }
  }

 private:
  static size_t capacity_for(int64_t n) {
    size_t c = 64;
    while ((int64_t)c < 2 * n) c *= 2;
    return c;
  }
  void rehash(size_t cap) {
    slots_.assign(cap, -1);
    const uint32_t mask = (uint32_t)cap - 1;
    for (int i = 0; i < size_; ++i) {
      uint32_t h = crf::hash_key<D>(d_, key(i)) & mask;
      while (slots_[h] >= 0) h = (h + 1) & mask;
      slots_[h] = i;
    }
  }
  int d_;
  int size_ = 0;
  wvec<int32_t> slots_;
  wvec<int32_t> keys_;
};

}  // namespace cpu
}  // namespace pyseg
