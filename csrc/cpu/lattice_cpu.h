// CPU permutohedral lattice: built once per image and pairwise term, then used for every mean-field iteration.
//
// The points are cut into chunks fixed by n alone (never by the thread count, so results are bitwise the same
// for any number of threads). Each chunk has its own compact numbering of the vertices its points touch, its
// "local rows"; all chunks' local rows are concatenated (L rows in all). The splat is a scatter in pixel order
// into the chunk's local rows (no atomics: a chunk is one task), the chunks' partial sums are added per
// vertex in chunk order ("reduce"), the blur runs on the m global vertices, and the blurred values are copied
// back to every local row ("distribute") for the slice. Per-pixel work thus touches only the compact rows of
// its own chunk, which stay in cache.
//
// Layout (all dense arrays):
//   chunk_begin[c]..chunk_begin[c+1]      the points of chunk c
//   local_begin[c]..local_begin[c+1]      the local rows of chunk c
//   offsets[p*(d+1)+r], bary[p*(d+1)+r]   the local row and weight of point p's vertex of remainder r: the
//                                         barycentric weight, times pre[p] where folded (below)
//   to_global[k]                          the global vertex of local row k
//   gather_start[v]..gather_start[v+1]    the local rows of global vertex v (gather_rows), in chunk order
//   nbr[(j*M+v)*2 + 0/1]                  blur neighbours n1/n2 of vertex v along axis j (m = the zero row)
//   pre[p], post[p]                       the normalisation before the splat and (times alpha) after the slice,
//                                         for NORMALIZE_BEFORE / NORMALIZE_AFTER. The symmetric normalisation (the
//                                         default) and none are "folded": pre is in bary, post = alpha pre, so the
//                                         splat weighs by bary alone and the slice by bary times slice_scale
//                                         (alpha), pre and post are empty, and the update reads no factor per point.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/thread_pool.h"
#include "cpu/workspace.h"

namespace pyseg {
namespace cpu {

// A workspace vector whose resize() leaves new elements uninitialised (for arrays the build overwrites
// completely: no zero-fill pass over memory that is written again right after).
template <class T>
struct WsAllocatorNoInit : WsAllocator<T> {
  template <class U>
  struct rebind {
    using other = WsAllocatorNoInit<U>;
  };
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(static_cast<A&&>(a)...);
  }
};
template <class T>
using wvec_noinit = std::vector<T, WsAllocatorNoInit<T>>;

struct Lattice {
  int d = 0;
  int64_t n = 0;
  int m = 0;  // vertices
  int nchunks = 0;
  std::vector<int64_t> chunk_begin;  // nchunks + 1
  std::vector<int64_t> local_begin;  // nchunks + 1
  wvec_noinit<int32_t> offsets;
  wvec_noinit<float> bary;
  wvec_noinit<int32_t> to_global;
  wvec<int32_t> gather_start;
  wvec_noinit<int32_t> gather_rows;
  wvec<int32_t> nbr;
  wvec<float> pre;
  wvec<float> post;
  bool folded = false;
  float slice_scale = 1.0f;  // alpha, where folded

  float pre_of(int64_t p) const { return folded ? 1.0f : pre[p]; }
  float post_of(int64_t p) const { return folded ? slice_scale : post[p]; }
  int64_t rows() const { return local_begin.empty() ? 0 : local_begin.back(); }  // L
};

// Points per chunk for n points: 32768 (about 1 MiB of a 12-label Q), more for huge inputs so that there are at
// most 64 chunks (the local rows, L <= n (d+1), grow with the number of chunks).
int64_t lattice_chunk_size(int64_t n);

// Feature sources.
struct ArrayFeatures {  // (d, n) row-major float32, as pydensecrf's addPairwiseEnergy takes them
  const float* f;
  int d;
  int64_t n;
};
struct GaussianImageFeatures {  // (x / sx, y / sy), pixel p = y * width + x
  int width;
  float sx, sy;
};
struct BilateralImageFeatures {  // (x / sx, y / sy, r / sr, g / sg, b / sb), rgb (h, w, 3) uint8
  int width;
  float sx, sy, sr, sg, sb;
  const uint8_t* rgb;
};

// Builds the lattice of n points (throws std::invalid_argument when a lattice coordinate would overflow)
// and its normalisation (crf::Normalization).
void build_lattice(Lattice& lat, const ArrayFeatures& feat, int normalization, Executor& ex);
void build_lattice(Lattice& lat, int64_t n, const GaussianImageFeatures& feat, int normalization, Executor& ex);
void build_lattice(Lattice& lat, int64_t n, const BilateralImageFeatures& feat, int normalization, Executor& ex);
// Whether build_lattice numbers the vertices of this Gaussian image lattice through dense key grids rather than
// hash tables (the same lattice either way; grids are faster but need key boxes that are small next to the
// image: not for tiny sigmas or very thin images; PYSEG_LATTICE_GRID=0 turns them off).
bool gaussian_lattice_uses_grid(int64_t n, const GaussianImageFeatures& feat);

// The Gaussian (position-only) lattice of an image depends on its size, sigmas and normalisation alone, not on
// its pixels: the last few are kept (read-only, shared) and a call on another image of the same size reuses
// one instead of building it again: at most `entries` lattices (default 4) of at most max_bytes in all (default
// 256 MiB; a bigger lattice is not kept), least recently used dropped first. entries 0 turns the cache off
// (and empties it); release_lattice_cache() empties it and returns the bytes its lattices held.
std::shared_ptr<const Lattice> gaussian_lattice(int64_t n, const GaussianImageFeatures& feat, int normalization,
                                                Executor& ex);
void set_lattice_cache_limits(int entries, size_t max_bytes);
int lattice_cache_entries();
size_t release_lattice_cache();
size_t lattice_cache_bytes();

// Generic filter steps for lp channels per row (rows of lp values, T = float or double; cpu/lattice_filter.cpp
// instantiates both); the per-ISA ops (cpu/ops.h) have faster float versions.
// acc local rows of chunk c <- 0
template <typename T>
void clear_chunk_rows(const Lattice& lat, int c, int lp, T* acc);
// acc rows of point p's vertices += bary * pre[p] * q (q: the point's row of lp values)
template <typename T>
void splat_pixel(const Lattice& lat, int64_t p, const T* q, int lp, T* acc);
// acc local rows of chunk c <- scatter of q (n x lp) times pre
template <typename T>
void splat_chunk(const Lattice& lat, int c, const T* q, int lp, T* acc);
// global rows [vb, ve) <- sum of their local rows in acc (chunk order)
template <typename T>
void reduce_rows(const Lattice& lat, const T* acc, int lp, T* global, int64_t vb, int64_t ve);
// dst rows [vb, ve) <- src + 0.5 (src[n1] + src[n2]) along axis j; src/dst have m+1 rows, row m zero. Where
// local is given, each blurred row goes to the vertex's local rows instead (dst untouched).
template <typename T>
void blur_rows(const Lattice& lat, int j, const T* src, T* dst, int lp, int64_t vb, int64_t ve, T* local = nullptr);
// local rows [kb, ke) <- their global rows
template <typename T>
void distribute_rows(const Lattice& lat, const T* global, int lp, T* local, int64_t kb, int64_t ke);
// out[0..lp) <- post[p] * sum_r bary * local[offsets]
template <typename T>
void slice_pixel(const Lattice& lat, int64_t p, const T* local, int lp, T* out);

}  // namespace cpu
}  // namespace pyseg
