// Permutohedral lattice, per point: the semantics of Kraehenbuehl's DenseCRF v2.2 (see
// docs/crf.md), written once for the CPU driver and the CUDA kernels.
//
// Template parameter D: the feature dimension when known at compile time (2 and 5 for images), or 0 for a
// run-time dimension `d` (1..kMaxDim). Arrays passed in must hold at least d+1 (or d+2 for `bary`) entries.
#pragma once

#include <math.h>

#include "crf/common.h"

namespace pyseg {
namespace crf {

// Per-axis scale of the elevation (inv_std_dev / sqrt((i+1)(i+2)), inv_std_dev = sqrt(2/3) (d+1)),
// computed the way the reference does (double, rounded to float). Host or device; call once per lattice.
struct LatticeScales {
  float s[kMaxDim];
};

PYSEG_HD inline LatticeScales make_lattice_scales(int d) {
  LatticeScales sc;
  const float inv_std_dev = (float)(sqrt(2.0 / 3.0) * (d + 1));
  for (int i = 0; i < kMaxDim; ++i)
    sc.s[i] = i < d ? (float)(1.0 / sqrt((double)((i + 2) * (i + 1))) * inv_std_dev) : 0.0f;
  return sc;
}

// The slice's magic constant alpha = 1 / (1 + 2^-d).
PYSEG_HD inline float lattice_alpha(int d) { return 1.0f / (1.0f + powf(2.0f, (float)(-d))); }

// NORMALIZE_SYMMETRIC's factor of a point whose filtered ones (alpha not applied) are s, as the reference
// computes it in double: 1 / sqrt(s alpha + 1e-20).
PYSEG_HD inline float symmetric_factor(float s, float alpha) {
  return (float)(1.0 / sqrt((double)(s * alpha) + 1e-20));
}

// Locates one feature vector f[0..d) in the lattice: the remainder-0 point rem0[0..d], the rank of each
// coordinate rank[0..d] and the barycentric weights bary[0..d] (bary needs d+2 slots; bary[r] weighs the
// vertex of remainder r). Returns false (outputs unspecified) when a coordinate is not finite or its
// elevated magnitude exceeds kMaxLatticeCoord (sigma too small for the feature range).
template <int D>
PYSEG_HD PYSEG_INLINE bool lattice_point(int d_runtime, const float* f, const LatticeScales& sc, int* rem0,
                                         int* rank, float* bary) {
  const int d = D > 0 ? D : d_runtime;
  float elevated[(D > 0 ? D : kMaxDim) + 1];
  // Elevation: walk j = d..1.
  float sm = 0.0f;
  for (int j = d; j > 0; --j) {
    const float cf = f[j - 1] * sc.s[j - 1];
    elevated[j] = sm - (float)j * cf;
    sm += cf;
  }
  elevated[0] = sm;
  bool ok = true;
  const float down_factor = 1.0f / (float)(d + 1);
  const float up_factor = (float)(d + 1);
  int sum = 0;
  for (int i = 0; i <= d; ++i) {
    const float e = elevated[i];
    // `!(x <= lim)` is also true for NaN.
    if (!(fabsf(e) <= kMaxLatticeCoord)) {
      ok = false;
      rem0[i] = 0;
      continue;
    }
    const float v = down_factor * e;
    // floor/ceil without libm calls (|v| < 2^24, so the int conversion is exact); same values as floorf/ceilf.
    float fl = (float)(int)v;
    fl = fl > v ? fl - 1.0f : fl;
    const float cl = fl < v ? fl + 1.0f : fl;
    const float up = cl * up_factor;
    const float down = fl * up_factor;
    const float nearest = (up - e < e - down) ? up : down;  // ties go down, as in the reference
    const int r0 = (int)nearest;
    rem0[i] = r0;
    sum += r0;
  }
  if (!ok) return false;
  sum /= (d + 1);  // exact: every rem0 is a multiple of d+1
  // Rank of each residual (branch-free: the comparisons are data dependent and mispredict).
  float resid[(D > 0 ? D : kMaxDim) + 1];
  for (int i = 0; i <= d; ++i) {
    resid[i] = elevated[i] - (float)rem0[i];
    rank[i] = 0;
  }
  for (int i = 0; i < d; ++i) {
    const float di = resid[i];
    for (int j = i + 1; j <= d; ++j) {
      const int lt = di < resid[j] ? 1 : 0;
      rank[i] += lt;
      rank[j] += 1 - lt;
    }
  }
  for (int i = 0; i <= d; ++i) {
    const int rk = rank[i] + sum;
    const int shift = rk < 0 ? (d + 1) : (rk > d ? -(d + 1) : 0);
    rank[i] = rk + shift;
    rem0[i] += shift;
  }
  for (int i = 0; i <= d + 1; ++i) bary[i] = 0.0f;
  for (int i = 0; i <= d; ++i) {
    const float v = (elevated[i] - (float)rem0[i]) * down_factor;
    bary[d - rank[i]] += v;
    bary[d - rank[i] + 1] -= v;
  }
  bary[0] += 1.0f + bary[d + 1];
  return true;
}

// Key (first d coordinates; the last is minus their sum) of the vertex of remainder r (0..d) of the simplex
// found by lattice_point: key[i] = rem0[i] + canonical[r][rank[i]], canonical[r][j] = r if j <= d-r,
// else r-(d+1).
template <int D>
PYSEG_HD PYSEG_INLINE void vertex_key(int d_runtime, const int* rem0, const int* rank, int r, int* key) {
  const int d = D > 0 ? D : d_runtime;
  for (int i = 0; i < d; ++i) key[i] = rem0[i] + (rank[i] <= d - r ? r : r - (d + 1));
}

// Blur neighbours of a vertex along lattice axis j (0..d): n1 = key - 1 except coordinate j which gets +d,
// n2 = key + 1 except coordinate j which gets -d (for j == d only the implicit last coordinate differs).
template <int D>
PYSEG_HD PYSEG_INLINE void neighbour_keys(int d_runtime, const int* key, int j, int* n1, int* n2) {
  const int d = D > 0 ? D : d_runtime;
  for (int i = 0; i < d; ++i) {
    n1[i] = key[i] - 1;
    n2[i] = key[i] + 1;
  }
  if (j < d) {
    n1[j] = key[j] + d;
    n2[j] = key[j] - d;
  }
}

// Hash of a key of d int32 coordinates (well mixed in all bits; use the low bits for a power-of-2 table).
template <int D>
PYSEG_HD PYSEG_INLINE uint32_t hash_key(int d_runtime, const int* key) {
  const int d = D > 0 ? D : d_runtime;
  uint32_t h = 2166136261u;
  for (int i = 0; i < d; ++i) {
    h ^= (uint32_t)key[i];
    h *= 0x9E3779B1u;
    h ^= h >> 15;
  }
  h *= 0x85EBCA77u;
  h ^= h >> 13;
  return h;
}

template <int D>
PYSEG_HD PYSEG_INLINE bool keys_equal(int d_runtime, const int* a, const int* b) {
  const int d = D > 0 ? D : d_runtime;
  for (int i = 0; i < d; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

// Image features, as DenseCRF2D builds them (float division, x is the column).
PYSEG_HD PYSEG_INLINE void gaussian_features(int x, int y, float sx, float sy, float* f) {
  f[0] = (float)x / sx;
  f[1] = (float)y / sy;
}

PYSEG_HD PYSEG_INLINE void bilateral_features(int x, int y, const uint8_t* rgb, float sx, float sy, float sr,
                                              float sg, float sb, float* f) {
  f[0] = (float)x / sx;
  f[1] = (float)y / sy;
  f[2] = (float)rgb[0] / sr;
  f[3] = (float)rgb[1] / sg;
  f[4] = (float)rgb[2] / sb;
}

}  // namespace crf
}  // namespace pyseg
