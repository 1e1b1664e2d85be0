// CPU permutohedral lattice: built once per image and kernel, then used for every mean-field iteration.
//
// Layout (all dense arrays):
//   offsets[p*(d+1)+r], bary[p*(d+1)+r]   the vertex and barycentric weight of pixel p for remainder r (slice)
//   csr_start[v]..csr_start[v+1]          the (pixel, weight) entries splatting into vertex v, ascending pixel
//                                         order (the splat is a gather: no atomics, same sums as the reference)
//   nbr[(j*M+v)*2 + 0/1]                  blur neighbours n1/n2 of vertex v along axis j (M = the zero row)
//   post[p]                               alpha times the normalisation applied after the slice
// The normalisation applied before the splat is folded into the csr weights.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/thread_pool.h"
#include "cpu/workspace.h"

namespace pyseg {
namespace cpu {

struct CsrEntry {
  int32_t pixel;
  float w;
};

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
  wvec_noinit<int32_t> offsets;
  wvec_noinit<float> bary;
  wvec<int64_t> csr_start;
  wvec_noinit<CsrEntry> csr;
  wvec<int32_t> nbr;
  wvec<float> post;
};

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

// Filter steps for lp channels per row (pixel-major rows of lp floats).
// values rows [vb, ve) <- splat of q (with the folded pre-normalisation)
void splat_rows(const Lattice& lat, const float* q, int lp, float* values, int64_t vb, int64_t ve);
// dst rows [vb, ve) <- src + 0.5 (src[n1] + src[n2]) along axis j; src/dst have m+1 rows, row m zero
void blur_rows(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve);
// out[0..lp) <- post[p] * sum_r bary * values[vertex]
void slice_pixel(const Lattice& lat, int64_t p, const float* values, int lp, float* out);

}  // namespace cpu
}  // namespace pyseg
