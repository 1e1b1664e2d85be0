// What a CPU lattice build reads (lattice_cpu.cpp only): the point features of each input kind (a (d, n) array,
// Gaussian and bilateral image features through exact lookup tables), the range error, and the key-grid plan
// of the Gaussian image lattice.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/key_grid.h"
#include "cpu/lattice_cpu.h"
#include "crf/lattice.h"
#include "switches.h"

namespace pyseg {
namespace cpu {
namespace build_inputs {

struct ArrayFeat {
  const float* f;
  int64_t n;
  int d;
  int64_t width() const { return n; }
  void operator()(int64_t p, int64_t, int64_t, float* out) const {
    for (int i = 0; i < d; ++i) out[i] = f[(int64_t)i * n + p];
  }
};
// Image features through lookup tables of the exact quotients (x / sx, y / sy, value / s): the same floats as
// crf::gaussian_features / bilateral_features without a division per pixel.
struct ImageTables {
  std::vector<float> fx, fy, fc[3];
  ImageTables(int64_t n, int width, float sx, float sy, const float* sc) {
    const int height = (int)((n + width - 1) / width);
    fx.resize(width);
    fy.resize(height);
    for (int x = 0; x < width; ++x) fx[x] = (float)x / sx;
    for (int y = 0; y < height; ++y) fy[y] = (float)y / sy;
    if (sc)
      for (int c = 0; c < 3; ++c) {
        fc[c].resize(256);
        for (int v = 0; v < 256; ++v) fc[c][v] = (float)v / sc[c];
      }
  }
};
// Called with x = p % width, y = p / width (the build walks the pixels in order: no division per pixel).
struct GaussFeat {
  const ImageTables* t;
  int w;
  int64_t width() const { return w; }
  void operator()(int64_t, int64_t x, int64_t y, float* out) const {
    out[0] = t->fx[x];
    out[1] = t->fy[y];
  }
};
struct BilatFeat {
  const ImageTables* t;
  int w;
  const uint8_t* rgb;
  int64_t width() const { return w; }
  void operator()(int64_t p, int64_t x, int64_t y, float* out) const {
    out[0] = t->fx[x];
    out[1] = t->fy[y];
    const uint8_t* c = rgb + 3 * p;
    out[2] = t->fc[0][c[0]];
    out[3] = t->fc[1][c[1]];
    out[4] = t->fc[2][c[2]];
  }
};

inline std::string overflow_message(int d, int64_t p, const float* f) {
  std::ostringstream os;
  os << "lattice coordinates out of range at point " << p << " (features divided by sigma: [";
  for (int i = 0; i < d; ++i) os << (i ? ", " : "") << f[i];
  os << "]): expected finite features whose magnitude times sqrt(2/3)(d+1) stays below 2^24; "
        "use larger sigmas or smaller feature values";
  return os.str();
}

// Whether the Gaussian image lattice may number its vertices through a KeyGrid (PYSEG_LATTICE_GRID=0 turns
// it off: the hash tables then build the same lattice, which the tests compare).
inline bool grid_keys_enabled() { return switches::lattice_grid_allowed(); }

// Key boxes of a d = 2 lattice whose keys are bounded in advance (KeyGrid): one per chunk, and one for all.
struct GridPlan {
  struct Box {
    int32_t lo0, n0, lo2, n2;
    KeyGrid grid() const { return KeyGrid(lo0, n0, lo2, n2); }
  };
  std::vector<Box> chunk;
  Box all;
};

// The box of the keys, and of their blur neighbours, of points whose features lie in [fx0, fx1] x [fy0, fy1].
// crf::lattice_point elevates (f0, f1) to e0 = f0 s0 + f1 s1, e1 = f1 s1 - f0 s0, e2 = -2 f1 s1: linear, so
// the extremes are at the corners (s0, s1 > 0). A vertex key lies within 1.5 (rounding to a multiple of 3)
// + 3 (the rank shift) + 2 (the vertex offset) of e, a neighbour key 2 further, and e itself carries the float
// rounding of the elevation (a few ulps of |e| < 2^24: at most 8): a margin of 16 covers them all.
inline GridPlan::Box gaussian_key_box(const crf::LatticeScales& sc, double fx0, double fx1, double fy0, double fy1) {
  const double s0 = sc.s[0], s1 = sc.s[1], margin = 16.0;
  const double lo0 = std::floor(fx0 * s0 + fy0 * s1 - margin), hi0 = std::ceil(fx1 * s0 + fy1 * s1 + margin);
  const double lo2 = std::floor(-2.0 * fy1 * s1 - margin), hi2 = std::ceil(-2.0 * fy0 * s1 + margin);
  return GridPlan::Box{(int32_t)lo0, (int32_t)(hi0 - lo0 + 1), (int32_t)lo2, (int32_t)(hi2 - lo2 + 1)};
}

// A grid plan for the Gaussian lattice of an image of n points (features t.fx[x], t.fy[y], the build's chunks of
// rows), or none (false) when the grids are off or a box would be large next to its points (tiny sigmas, very
// thin images): the hash table is then the better table. Features out of the lattice's range are left to the
// build, which reports them.
inline bool plan_gaussian_grid(const ImageTables& t, int64_t n, GridPlan& plan) {
  if (!grid_keys_enabled()) return false;
  const std::vector<float>&fx = t.fx, &fy = t.fy;
  const int64_t w = (int64_t)fx.size(), chunk = lattice_chunk_size(n);
  const crf::LatticeScales sc = crf::make_lattice_scales(2);
  auto fits = [](const GridPlan::Box& b, int64_t points) {
    const int64_t cells = KeyGrid::cells_for(b.n0, b.n2);
    return b.n0 > 0 && b.n2 > 0 && cells <= 4 * points + 65536 && cells < ((int64_t)1 << 31);
  };
  for (float v : {fx.front(), fx.back(), fy.front(), fy.back()})
    if (!(std::fabs(v) * 4.0f < crf::kMaxLatticeCoord)) return false;
  plan.all = gaussian_key_box(sc, fx.front(), fx.back(), fy.front(), fy[(n - 1) / w]);
  if (!fits(plan.all, n)) return false;
  plan.chunk.clear();
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t e = std::min(n, b + chunk);
    plan.chunk.push_back(gaussian_key_box(sc, fx.front(), fx.back(), fy[b / w], fy[(e - 1) / w]));
    if (!fits(plan.chunk.back(), e - b)) return false;
  }
  return true;
}

}  // namespace build_inputs
}  // namespace cpu
}  // namespace pyseg
