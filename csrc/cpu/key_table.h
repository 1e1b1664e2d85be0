// Open-addressing hash table of lattice keys (d int32 coordinates each) -> dense vertex index.
// Each slot holds the index and the key itself, so a probe touches one cache line instead of two.
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
  explicit KeyTable(int d = D, int64_t expected = 64) : d_(D > 0 ? D : d), stride_(d_ + 1) {
    rehash(capacity_for(expected));
  }

  int size() const { return size_; }
  // Key of vertex i (d ints).
  const int32_t* key(int i) const { return slots_.data() + (size_t)where_[i] * stride_ + 1; }

  // Index of `key`, inserting it when new.
  int find_or_insert(const int32_t* key) {
    if ((int64_t)(size_ + 1) * 2 > (int64_t)cap_) rehash(cap_ * 2);
    const uint32_t mask = (uint32_t)cap_ - 1;
    uint32_t h = crf::hash_key<D>(d_, key) & mask;
    for (;;) {
      int32_t* s = slots_.data() + (size_t)h * stride_;
      if (s[0] < 0) {
        s[0] = size_;
        for (int i = 0; i < d_; ++i) s[1 + i] = key[i];
        where_.push_back((int32_t)h);
        return size_++;
      }
      if (crf::keys_equal<D>(d_, s + 1, key)) return s[0];
      h = (h + 1) & mask;
    }
  }

  // Index of `key`, or -1.
  int find(const int32_t* key) const {
    const uint32_t mask = (uint32_t)cap_ - 1;
    uint32_t h = crf::hash_key<D>(d_, key) & mask;
    for (;;) {
      const int32_t* s = slots_.data() + (size_t)h * stride_;
      if (s[0] < 0) return -1;
      if (crf::keys_equal<D>(d_, s + 1, key)) return s[0];
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
    wvec<int32_t> old;
    old.swap(slots_);
    const size_t old_cap = cap_;
    cap_ = cap;
    slots_.assign(cap * stride_, -1);
    const uint32_t mask = (uint32_t)cap - 1;
    for (size_t j = 0; j < old_cap; ++j) {
      const int32_t* s = old.data() + j * stride_;
      if (s[0] < 0) continue;
      uint32_t h = crf::hash_key<D>(d_, s + 1) & mask;
      while (slots_[(size_t)h * stride_] >= 0) h = (h + 1) & mask;
      std::memcpy(slots_.data() + (size_t)h * stride_, s, sizeof(int32_t) * stride_);
      where_[s[0]] = (int32_t)h;
    }
  }
  int d_;
  int stride_;
  int size_ = 0;
  size_t cap_ = 0;
  wvec<int32_t> slots_;   // cap * (1 + d): index (-1 = empty), key
  wvec<int32_t> where_;   // vertex -> slot
};

}  // namespace cpu
}  // namespace pyseg
