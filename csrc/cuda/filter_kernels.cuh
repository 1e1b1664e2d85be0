// Per-thread bodies of the filter (splat, blur), normalisation and mean-field update of the CUDA dense CRF,
// as functors (see kernels.cuh for the conventions). Run once per iteration, all batch-wide.
#pragma once

#include <math.h>
#include <stdint.h>

#include "crf/meanfield.h"
#include "cuda/kernels.cuh"

namespace pyseg {
namespace cuda {

// ------------------------------------------------------------------------------------------------- filter
// Splat, first pass: per (piece, float4 group) the weighted sum of the piece's entries, in a fixed order:
// four sums of up to kSubLen consecutive entries each (ascending), then (s0 + s1) + (s2 + s3). The order
// depends only on an entry's place in its vertex's run, so results are bitwise the same run to run. The
// four independent sums keep four rows' loads in flight per thread (against one running sum:
// benchmarks/NOTES_cuda.md). ONES splats a vector of ones with
// the barycentric weights (the normalisation pass, G = 1). Lattice 0's entries hold sorted positions
// [0, E0), lattice 1's the rest: lattice 1 splats q1 (the same as q except in the layer's adjoint).
template <bool ONES>
struct SplatPieces {
  const int32_t* pstart;
  const int32_t* counts;
  const int32_t* spix;
  const float* sws;
  const int32_t* sorted_entry;
  const float* bary;
  const F4* q;   // P * G, lattice 0's values
  const F4* q1;  // P * G, lattice 1's values
  F4* partial;   // pieces * G
  int G;
  int64_t E0;
  PYSEG_HD int64_t bound() const { return (int64_t)counts[2] * G; }
  // Sum of sub-range `sub` (entries k0 + sub * kSubLen ... , before k1) for group g.
  PYSEG_HD PYSEG_INLINE F4 sub_sum(const F4* qv, int32_t k0, int32_t k1, int sub, int g) const {
    F4 acc = f4_zero();
    const int32_t a = k0 + sub * kSubLen, b = a + kSubLen < k1 ? a + kSubLen : k1;
PYSEG_UNROLL4
    for (int32_t k = a; k < b; ++k) {
      if (ONES) {
        acc.x += bary[sorted_entry[k]];
      } else {
        f4_fma(acc, sws[k], qv[(int64_t)spix[k] * G + g]);
      }
    }
    return acc;
  }
  PYSEG_HD void operator()(int64_t i) const {
    const int64_t piece = i / G;
    const int g = (int)(i - piece * G);
    const int32_t k0 = pstart[piece], k1 = pstart[piece + 1];
    const F4* qv = k0 < E0 ? q : q1;
    F4 s[kSubs];
PYSEG_UNROLL
    for (int sub = 0; sub < kSubs; ++sub) s[sub] = sub_sum(qv, k0, k1, sub, g);
    f4_add(s[0], s[1]);
    f4_add(s[2], s[3]);
    f4_add(s[0], s[2]);
    partial[i] = s[0];
  }
};

// Splat, second pass: per (vertex, group) the sum of its pieces, in order.
struct SplatReduce {
  const int32_t* vpiece;
  const int32_t* counts;
  const F4* partial;
  F4* vals;
  int G;
  PYSEG_HD int64_t bound() const { return (int64_t)counts[0] * G; }
  PYSEG_HD void operator()(int64_t i) const {
    const int64_t v = i / G;
    const int g = (int)(i - v * G);
    const int32_t q0 = vpiece[v], q1 = vpiece[v + 1];
    F4 acc = f4_zero();
PYSEG_UNROLL4
    for (int32_t q = q0; q < q1; ++q) f4_add(acc, partial[(int64_t)q * G + g]);
    vals[i] = acc;
  }
};

// Blur along axis j (lattice 1's vertices) and j0 (lattice 0's): out = in + 0.5 (in[n1] + in[n2]). The
// first 3 steps run over both lattices' vertices, the last 3 over lattice 1's only (from_m0); the forward
// filter has j0 = j, the adjoint runs each lattice's axes in reverse order.
struct Blur {
  const int32_t* nbr;
  const int32_t* counts;
  const F4* in;
  F4* out;
  int G, j, j0;
  bool from_m0;
  PYSEG_HD int64_t bound() const { return (int64_t)(counts[0] - (from_m0 ? counts[1] : 0)) * G; }
  PYSEG_HD void operator()(int64_t i) const {
    const int64_t v0 = from_m0 ? counts[1] : 0;
    const int64_t v = v0 + i / G;
    const int g = (int)(i % G);
    const int ax = j0 == j || from_m0 || v >= counts[1] ? j : j0;
    const int32_t a = nbr[(v * kNbrAxes + ax) * 2 + 0];
    const int32_t b = nbr[(v * kNbrAxes + ax) * 2 + 1];
    F4 s = f4_zero();
    if (a >= 0) f4_add(s, in[(int64_t)a * G + g]);
    if (b >= 0) f4_add(s, in[(int64_t)b * G + g]);
    F4 o = in[v * G + g];
    f4_fma(o, 0.5f, s);
    out[v * G + g] = o;
  }
};

// The n entries from e0 on: their vertices and a per-entry weight, loaded before anything else is done with
// them (independent loads in flight together; callers store nothing in between).
template <int n>
PYSEG_HD PYSEG_INLINE void load_entries(const int32_t* ev, const float* weight, int64_t e0, int32_t* v, float* w) {
PYSEG_UNROLL
  for (int r = 0; r < n; ++r) {
    v[r] = ev[e0 + r];
    w[r] = weight[e0 + r];
  }
}

// Per pixel, after the ones pass: symmetric normalisation s = 1 / sqrt(K 1 + 1e-20) folded into the splat
// weights (s * bary) and slice weights (compat * alpha * s * bary).
struct NormWeights {
  const int32_t* ev;
  const float* bary;
  const F4* vals_l0;  // lattice 0's filtered ones (G = 1)
  const F4* vals_l1;
  float* swe;
  float* lw;
  int64_t E0;
  float alpha0, alpha1, w0, w1;
  // All loads before any store (the compiler cannot tell that the outputs do not alias the inputs).
  template <int n>
  PYSEG_HD PYSEG_INLINE void one(int64_t e0, const F4* vals, float alpha, float w) const {
    float b[n], k[n];
    int32_t v[n];
    load_entries<n>(ev, bary, e0, v, b);
PYSEG_UNROLL
    for (int r = 0; r < n; ++r) k[r] = vals[v[r]].x;
    float norm = 0.0f;
PYSEG_UNROLL
    for (int r = 0; r < n; ++r) norm += b[r] * k[r];
    norm *= alpha;
    const float s = 1.0f / sqrtf(norm + 1e-20f);
PYSEG_UNROLL
    for (int r = 0; r < n; ++r) {
      swe[e0 + r] = s * b[r];
      lw[e0 + r] = w * alpha * s * b[r];
    }
  }

  PYSEG_HD void operator()(int64_t p) const {
    one<kDim0 + 1>(p * (kDim0 + 1), vals_l0, alpha0, w0);
    one<kDim1 + 1>(E0 + p * (kDim1 + 1), vals_l1, alpha1, w1);
  }
};

// Per sorted position: the pixel and splat weight of its entry (so that the splat reads them in order).
struct SortedWeights {
  const int32_t* sorted_entry;
  const float* swe;
  int32_t* spix;
  float* sws;
  int64_t E0;
  PYSEG_HD void operator()(int64_t k) const {
    const int64_t e = sorted_entry[k];
    spix[k] = (int32_t)(e < E0 ? e / (kDim0 + 1) : (e - E0) / (kDim1 + 1));
    sws[k] = swe[e];
  }
};

// ------------------------------------------------------------------------------------------------- update
// Per pixel: slice both lattices (weights already hold compat, alpha and normalisation), add -U, softmax;
// writes Q (pixel-major) and, on the last iteration, the output (B, L, H, W). GT = G known at compile
// time keeps the row in registers; GT = 0 works on the Q row in memory (any label count).
template <int GT>
struct Update {
  const int32_t* ev;
  const float* lw;
  const F4* vals_l0;  // lattice 0's filtered Q
  const F4* vals_l1;
  const F4* neg_u;
  F4* q;
  float* out;  // nullptr except on the last iteration
  int64_t N, E0;
  int G, L;

  // Adds lattice D's message to the row: first every entry's vertex and weight, then the vertex rows (all
  // loads independent, so they are in flight together).
  template <int D, class Row>
  PYSEG_HD PYSEG_INLINE void slice_lattice(int64_t e0, const F4* vals, Row& row) const {
    constexpr int n = D + 1;
    int32_t v[n];
    float w[n];
    load_entries<n>(ev, lw, e0, v, w);
PYSEG_UNROLL
    for (int r = 0; r < n; ++r) {
      const F4* vr = vals + (int64_t)v[r] * G;
      if (GT > 0) {
PYSEG_UNROLL
        for (int g = 0; g < (GT > 0 ? GT : 1); ++g) f4_fma(row[g], w[r], vr[g]);
      } else {
        for (int g = 0; g < G; ++g) f4_fma(row[g], w[r], vr[g]);
      }
    }
  }

  template <class Row>
  PYSEG_HD PYSEG_INLINE void slice(int64_t p, Row& row) const {
    slice_lattice<kDim0>(p * (kDim0 + 1), vals_l0, row);
    slice_lattice<kDim1>(E0 + p * (kDim1 + 1), vals_l1, row);
  }

  PYSEG_HD void operator()(int64_t p) const {
    if (GT > 0) {
      F4 row[GT > 0 ? GT : 1];
PYSEG_UNROLL
      for (int g = 0; g < (GT > 0 ? GT : 1); ++g) row[g] = neg_u[p * G + g];
      slice(p, row);
      crf::softmax_inplace(4 * (GT > 0 ? GT : 1), &row[0].x);
PYSEG_UNROLL
      for (int g = 0; g < (GT > 0 ? GT : 1); ++g) q[p * G + g] = row[g];
      if (out) {
        const int64_t b = p / N, i = p - b * N;
        PYSEG_UNROLL
        for (int g = 0; g < (GT > 0 ? GT : 1); ++g) {
          const F4 r4 = row[g];
          const float c[4] = {r4.x, r4.y, r4.z, r4.w};
          PYSEG_UNROLL
          for (int t = 0; t < 4; ++t)
            if (4 * g + t < L) out[(b * L + 4 * g + t) * N + i] = c[t];
        }
      }
    } else {
      F4* row = q + p * G;
      for (int g = 0; g < G; ++g) row[g] = neg_u[p * G + g];
      slice(p, row);
      crf::softmax_inplace(4 * G, &row[0].x);
      if (out) write_out(p, &row[0].x);
    }
  }

  PYSEG_HD PYSEG_INLINE void write_out(int64_t p, const float* row) const {
    const int64_t b = p / N, i = p - b * N;
    for (int l = 0; l < L; ++l) out[(b * L + l) * N + i] = row[l];
  }
};

}  // namespace cuda
}  // namespace pyseg
