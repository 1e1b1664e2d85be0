// Per-thread bodies of the CUDA dense CRF (preparation and lattice build; the filter and update are in
// filter_kernels.cuh), as functors: `f(i)` does work item i. The CUDA driver runs them
// as grid-stride kernels; the host emulation (host_exec.cuh, used by the CPU tests) runs them in a loop, so
// the CPU tests execute the same code as the GPU except for the atomics, the sort and the scan.
//
// The lattice geometry, keys, hash, neighbour keys, features and the softmax come from the shared
// headers crf/lattice.h and crf/meanfield.h (the CPU core uses the same functions).
#pragma once

#include <math.h>
#include <stdint.h>

#include "crf/common.h"
#include "crf/lattice.h"
#include "crf/meanfield.h"
#include "cuda/layout.cuh"

namespace pyseg {
namespace cuda {

using crf::LatticeScales;

#if defined(__CUDA_ARCH__)
#define PYSEG_UNROLL _Pragma("unroll")
#define PYSEG_UNROLL4 _Pragma("unroll 4")  // runtime trip counts: loads of 4 steps issued together
#else
#define PYSEG_UNROLL
#define PYSEG_UNROLL4
#endif

struct alignas(16) F4 {
  float x, y, z, w;
};
PYSEG_HD PYSEG_INLINE F4 f4_zero() { return F4{0.f, 0.f, 0.f, 0.f}; }
PYSEG_HD PYSEG_INLINE void f4_fma(F4& a, float s, const F4& b) {
  a.x += s * b.x;
  a.y += s * b.y;
  a.z += s * b.z;
  a.w += s * b.w;
}
PYSEG_HD PYSEG_INLINE void f4_add(F4& a, const F4& b) {
  a.x += b.x;
  a.y += b.y;
  a.z += b.z;
  a.w += b.w;
}

// atomicCAS on the device; a plain compare-and-swap in the (single-threaded) host emulation.
PYSEG_HD PYSEG_INLINE int32_t cas_i32(int32_t* a, int32_t cmp, int32_t val) {
#if defined(__CUDA_ARCH__)
  return atomicCAS((int*)a, (int)cmp, (int)val);
#else
  const int32_t old = *a;
  if (old == cmp) *a = val;
  return old;
#endif
}

// Reads a value other threads of the same launch may have written (skip the non-coherent L1).
PYSEG_HD PYSEG_INLINE int32_t load_cg(const int32_t* a) {
#if defined(__CUDA_ARCH__)
  return __ldcg(a);
#else
  return *a;
#endif
}

// ------------------------------------------------------------------------------------------ lattice keys
// Everything a kernel needs to recompute the key of any entry of lattice D (from the per-pixel data).
template <int D>
struct KeySource {
  const int32_t* pdat;  // P * (D+1): rem0[0..D) then ranks packed 4 bits each
  int64_t N;            // pixels per image (the image of pixel p is p / N)
  int64_t entry_base;   // first entry of this lattice

  // Key (first D coordinates) and image of local entry el = p * (D+1) + r.
  PYSEG_HD PYSEG_INLINE int64_t key_of(int64_t el, int* key) const {
    const int64_t p = el / (D + 1);
    const int r = (int)(el - p * (D + 1));
    const int32_t* row = pdat + p * (D + 1);
    int rem0[D], rank[D];
    const uint32_t packed = (uint32_t)row[D];
    for (int i = 0; i < D; ++i) {
      rem0[i] = row[i];
      rank[i] = (int)((packed >> (4 * i)) & 15u);
    }
    crf::vertex_key<D>(D, rem0, rank, r, key);
    return p / N;
  }
};

template <int D>
PYSEG_HD PYSEG_INLINE uint32_t hash_image_key(int64_t image, const int* key) {
  uint32_t h = crf::hash_key<D>(D, key);
  h ^= (uint32_t)image * 0x27D4EB2Fu;
  h *= 0x9E3779B1u;
  h ^= h >> 16;
  return h;
}

// ------------------------------------------------------------------------------------------------ prepare
// Per pixel: -U = log(clip(p, 1e-5, 1)) and Q0 = softmax(-U), pixel-major and padded; when there are no
// iterations, Q0 is also written to the output (B, L, H, W). GT = G known at compile time keeps the row in
// registers and stores it as float4s; GT = 0 works on the rows in memory (any label count).
template <int GT>
struct PrepareUnary {
  const float* probs;  // (B, L, H, W)
  float* neg_u;
  float* q;
  float* out;  // nullptr unless iterations == 0
  int64_t N;
  int L, LP;

  PYSEG_HD PYSEG_INLINE float neg_unary(int64_t b, int64_t i, int l) const {
    if (l >= L) return crf::kPadEnergy;
    const float pr = probs[(b * L + l) * N + i];
    const float c = pr < 1e-5f ? 1e-5f : (pr > 1.0f ? 1.0f : pr);
    // The CPU core's log (same rounding); a NaN probability stays NaN (the output shows it) rather than
    // turning into a finite number.
    return pr == pr ? crf::fast_log_pos(c) : pr;
  }

  PYSEG_HD void operator()(int64_t p) const {
    const int64_t b = p / N, i = p - b * N;
    if (GT > 0) {
      constexpr int kL = 4 * (GT > 0 ? GT : 1);
      float row[kL];
PYSEG_UNROLL
      for (int l = 0; l < kL; ++l) row[l] = neg_unary(b, i, l);
      F4* nu = (F4*)neg_u + p * GT;
PYSEG_UNROLL
      for (int g = 0; g < kL / 4; ++g) nu[g] = F4{row[4 * g], row[4 * g + 1], row[4 * g + 2], row[4 * g + 3]};
      crf::softmax_inplace(kL, row);
      F4* qr = (F4*)q + p * GT;
PYSEG_UNROLL
      for (int g = 0; g < kL / 4; ++g) qr[g] = F4{row[4 * g], row[4 * g + 1], row[4 * g + 2], row[4 * g + 3]};
      if (out) {
PYSEG_UNROLL
        for (int l = 0; l < kL; ++l)
          if (l < L) out[(b * L + l) * N + i] = row[l];
      }
    } else {
      float* nu = neg_u + p * LP;
      float* qr = q + p * LP;
      for (int l = 0; l < LP; ++l) nu[l] = qr[l] = neg_unary(b, i, l);
      crf::softmax_inplace(LP, qr);
      if (out)
        for (int l = 0; l < L; ++l) out[(b * L + l) * N + i] = qr[l];
    }
  }
};

// Per pixel: both lattices' rem0, ranks and barycentric weights.
struct Elevate {
  const uint8_t* rgb;  // (B, H, W, 3)
  int32_t* pdat0;      // P * 3
  int32_t* pdat1;      // P * 6
  float* bary0;        // E0
  float* bary1;        // E1
  int64_t N;
  int W;
  float g_sxy, b_sxy, b_srgb;
  LatticeScales sc0, sc1;

  template <int D>
  PYSEG_HD PYSEG_INLINE static void store(int64_t p, const float* f, const LatticeScales& sc, int32_t* pdat,
                                          float* bary_out) {
    int rem0[D + 1], rank[D + 1];
    float bary[D + 2];
    if (!crf::lattice_point<D>(D, f, sc, rem0, rank, bary)) {
      // Unreachable after the host's range check; keep memory safe: a zero-weight entry at key 0.
      for (int i = 0; i <= D; ++i) rem0[i] = rank[i] = 0;
      for (int i = 0; i <= D; ++i) bary[i] = 0.0f;
    }
    uint32_t packed = 0;
    for (int i = 0; i < D; ++i) {
      pdat[p * (D + 1) + i] = rem0[i];
      packed |= ((uint32_t)rank[i] & 15u) << (4 * i);
    }
    pdat[p * (D + 1) + D] = (int32_t)packed;
    for (int r = 0; r <= D; ++r) bary_out[p * (D + 1) + r] = bary[r];
  }

  PYSEG_HD void operator()(int64_t p) const {
    const int64_t i = p % N;
    const int x = (int)(i % W), y = (int)(i / W);
    float f[5];
    crf::gaussian_features(x, y, g_sxy, g_sxy, f);
    store<kDim0>(p, f, sc0, pdat0, bary0);
    crf::bilateral_features(x, y, rgb + p * 3, b_sxy, b_sxy, b_srgb, b_srgb, b_srgb, f);
    store<kDim1>(p, f, sc1, pdat1, bary1);
  }
};

// ------------------------------------------------------------------------------------------------- build
// Per entry: insert its (image, key) into the lattice's hash region (open addressing, linear probing,
// atomicCAS claims an empty slot with the entry's index); records the slot and the claiming entry. Which
// entry claims a slot depends on thread timing, but no value computed from it does: vertices are numbered
// in the order of their claiming entries (an entry of the vertex, so the numbering follows the pixels:
// image by image, near pixels on near vertices, which keeps the blur's neighbour reads local), and every
// sum is taken in an order that does not depend on the numbering, so the results are the same run to run.
struct Insert {
  KeySource<kDim0> ks0;
  KeySource<kDim1> ks1;
  int32_t* table;
  int32_t* entry_slot;
  int32_t* entry_key;
  int32_t* entry_idx;
  int64_t E0, cap0, cap1;

  template <int D>
  PYSEG_HD PYSEG_INLINE void insert(const KeySource<D>& ks, int64_t e, int64_t base, int64_t cap) const {
    int key[D], other[D];
    const int64_t img = ks.key_of(e - ks.entry_base, key);
    const uint32_t mask = (uint32_t)(cap - 1);
    uint32_t slot = hash_image_key<D>(img, key) & mask;
    int32_t owner;
    for (;;) {
      int32_t* cell = table + base + slot;
      // A cell never changes once claimed: read first, so that the many entries of a popular vertex (a
      // flat region) do not all queue atomics on one address.
      int32_t cur = load_cg(cell);
      if (cur == -1) {
        cur = cas_i32(cell, -1, (int32_t)e);
        if (cur == -1) {
          owner = (int32_t)e;
          break;
        }
      }
      // `cur` was written by an earlier launch's data (pdat): safe to read.
      if (ks.key_of(cur - ks.entry_base, other) == img && crf::keys_equal<D>(D, key, other)) {
        owner = cur;
        break;
      }
      slot = (slot + 1) & mask;
    }
    entry_slot[e] = (int32_t)(base + slot);
    entry_key[e] = owner;
    entry_idx[e] = (int32_t)e;
  }

  PYSEG_HD void operator()(int64_t e) const {
    if (e < E0)
      insert<kDim0>(ks0, e, 0, cap0);
    else
      insert<kDim1>(ks1, e, cap0, cap1);
  }
};

// After the sort by claiming entry: 1 where a vertex's run starts.
struct RunHeads {
  const int32_t* sorted_key;
  int32_t* flags;
  PYSEG_HD void operator()(int64_t k) const {
    flags[k] = (k == 0 || sorted_key[k] != sorted_key[k - 1]) ? 1 : 0;
  }
};

// Per sorted position at the head of a vertex's run: vertex start, owner entry, table slot -> vertex id,
// the counts M and M0 (first vertex of lattice 1, whose claiming entries are >= E0).
struct Vertices {
  const int32_t* sorted_key;
  const int32_t* flags;
  const int32_t* vid;
  const int32_t* entry_slot;
  int32_t* table;
  int32_t* vstart;
  int32_t* vowner;
  int32_t* counts;
  int64_t E, E0;
  PYSEG_HD void operator()(int64_t k) const {
    if (flags[k]) {
      const int32_t v = vid[k] - 1;
      const int32_t owner = sorted_key[k];
      vstart[v] = (int32_t)k;
      vowner[v] = owner;
      table[entry_slot[owner]] = v;
      if (owner >= E0 && (k == 0 || sorted_key[k - 1] < E0)) counts[1] = v;
    }
    if (k == E - 1) {
      counts[0] = vid[k];
      vstart[vid[k]] = (int32_t)E;
    }
  }
};

// Splits each vertex's run into pieces of at most kPieceLen entries (flags for the piece scan).
struct PieceHeads {
  const int32_t* vid;
  const int32_t* vstart;
  int32_t* flags;
  PYSEG_HD void operator()(int64_t k) const {
    const int64_t start = vstart[vid[k] - 1];
    flags[k] = ((k - start) % kPieceLen == 0) ? 1 : 0;
  }
};

struct Pieces {
  const int32_t* flags;
  const int32_t* pid;  // inclusive scan of flags
  const int32_t* vid;
  const int32_t* vstart;
  int32_t* pstart;
  int32_t* vpiece;
  int32_t* counts;
  int64_t E;
  PYSEG_HD void operator()(int64_t k) const {
    if (flags[k]) {
      const int32_t q = pid[k] - 1;
      pstart[q] = (int32_t)k;
      const int32_t v = vid[k] - 1;
      if (vstart[v] == k) vpiece[v] = q;
    }
    if (k == E - 1) {
      counts[2] = pid[k];
      pstart[pid[k]] = (int32_t)E;
      vpiece[vid[k]] = pid[k];
    }
  }
};

// Per entry: its vertex id (the table now maps slots to vertex ids). A gather by entry: faster than a
// scatter through the sorted order.
struct EntryVertex {
  const int32_t* entry_slot;
  const int32_t* table;
  int32_t* ev;
  PYSEG_HD void operator()(int64_t e) const { ev[e] = table[entry_slot[e]]; }
};

// Per vertex (bound M on the device): its blur neighbours along every lattice axis.
struct Neighbours {
  KeySource<kDim0> ks0;
  KeySource<kDim1> ks1;
  const int32_t* table;
  const int32_t* vowner;
  const int32_t* counts;
  int32_t* nbr;
  int64_t cap0, cap1;

  PYSEG_HD int64_t bound() const { return counts[0]; }

  template <int D>
  PYSEG_HD PYSEG_INLINE int32_t lookup(const KeySource<D>& ks, int64_t base, int64_t cap, int64_t img,
                                       const int* key) const {
    int other[D];
    const uint32_t mask = (uint32_t)(cap - 1);
    uint32_t slot = hash_image_key<D>(img, key) & mask;
    for (;;) {
      const int32_t u = table[base + slot];
      if (u < 0) return -1;
      if (ks.key_of(vowner[u] - ks.entry_base, other) == img && crf::keys_equal<D>(D, key, other)) return u;
      slot = (slot + 1) & mask;
    }
  }

  template <int D>
  PYSEG_HD PYSEG_INLINE void run(const KeySource<D>& ks, int64_t base, int64_t cap, int64_t v) const {
    int key[D], n1[D], n2[D];
    const int64_t img = ks.key_of(vowner[v] - ks.entry_base, key);
    for (int j = 0; j <= D; ++j) {
      crf::neighbour_keys<D>(D, key, j, n1, n2);
      nbr[(v * kNbrAxes + j) * 2 + 0] = lookup<D>(ks, base, cap, img, n1);
      nbr[(v * kNbrAxes + j) * 2 + 1] = lookup<D>(ks, base, cap, img, n2);
    }
  }

  PYSEG_HD void operator()(int64_t v) const {
    if (v < counts[1])
      run<kDim0>(ks0, 0, cap0, v);
    else
      run<kDim1>(ks1, cap0, cap1, v);
  }
};

}  // namespace cuda
}  // namespace pyseg
