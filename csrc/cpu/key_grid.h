// Dense table of 2-D lattice keys over a box known in advance: key (k0, k1) -> vertex index, numbered in order
// of first insertion exactly as KeyTable<2> numbers them (so a lattice built with either is the same
// lattice), with one array access per lookup instead of hashing and probing.
//
// The Gaussian (position-only) lattice of an image has d = 2 and keys that stay within a few units of the
// elevated pixel positions, so their box is known from the image size and sigmas before the build: a chunk
// of image rows covers a band whose box has about (2.45 W / sx) x (2 rows / sy) cells. Only coordinates 0 and
// 2 (k2 = -k0 - k1, a function of y alone) index the grid, and since all coordinates of a lattice point are
// congruent modulo d + 1 = 3, a column of fixed k0 holds every third k2: the grid keeps one cell per lattice
// point, not three.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "cpu/workspace.h"

namespace pyseg {
namespace cpu {

class KeyGrid {
 public:
  // Keys with k0 in [lo0, lo0 + n0) and k2 = -(k0 + k1) in [lo2, lo2 + n2).
  KeyGrid(int32_t lo0, int32_t n0, int32_t lo2, int32_t n2)
      : lo0_(lo0), n0_(n0), lo2_(lo2), n2_(n2), n2c_(n2 / 3 + 1), cells_((size_t)n0 * (size_t)(n2 / 3 + 1), -1) {}
  KeyGrid() : KeyGrid(0, 0, 0, 0) {}

  // Number of cells of the grid for a box of n0 x n2 keys.
  static int64_t cells_for(int64_t n0, int64_t n2) { return n0 * (n2 / 3 + 1); }

  int size() const { return (int)(keys_.size() / 2); }
  const int32_t* key(int i) const { return keys_.data() + (int64_t)i * 2; }

  // Index of `key`, inserting it when new. The key must lie in the box (the caller's bounds guarantee it;
  // a key outside is a bug, reported rather than written out of bounds).
  int find_or_insert(const int32_t* key) {
    const int64_t c = cell(key);
    if (c < 0) throw std::logic_error("lattice key outside the precomputed key box (a bug in the box bounds)");
    int32_t& s = cells_[c];
    if (s < 0) {
      s = size();
      keys_.push_back(key[0]);
      keys_.push_back(key[1]);
    }
    return s;
  }

  // slot_of / prefetch / find_at as KeyTable's: find_at gives the index of `key`, or -1 (also for keys outside
  // the box; a box has fewer than 2^31 cells, and kOutside stands for a key outside it).
  static constexpr uint32_t kOutside = 0xFFFFFFFFu;
  uint32_t slot_of(const int32_t* key) const {
    const int64_t c = cell(key);
    return c < 0 ? kOutside : (uint32_t)c;
  }
  void prefetch(uint32_t h) const {
    if (h != kOutside) __builtin_prefetch(cells_.data() + h);
  }
  int find_at(const int32_t*, uint32_t h) const { return h == kOutside ? -1 : cells_[h]; }

 private:
  int64_t cell(const int32_t* key) const {
    const int64_t a = (int64_t)key[0] - lo0_, b = -(int64_t)key[0] - key[1] - lo2_;
    if (a < 0 || a >= n0_ || b < 0 || b >= n2_) return -1;
    return a * n2c_ + b / 3;
  }
  int64_t lo0_, n0_, lo2_, n2_, n2c_;
  wvec<int32_t> cells_;
  wvec<int32_t> keys_;
};

}  // namespace cpu
}  // namespace pyseg
