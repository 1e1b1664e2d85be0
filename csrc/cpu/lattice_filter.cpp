// Generic filter steps on a lattice's rows (any lp; cpu/lattice_cpu.h): the lattice build's normalisation and
// the label counts the register-blocked ops (cpu/fast_ops.h) do not compile use them; the CRF layer's filter
// (cpu/lattice_op.cpp) runs them on float or double rows.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/lattice_cpu.h"

namespace pyseg {
namespace cpu {

template <typename T>
void clear_chunk_rows(const Lattice& lat, int c, int lp, T* acc) {
  std::fill(acc + lat.local_begin[c] * lp, acc + lat.local_begin[c + 1] * lp, T(0));
}

template <typename T>
void splat_pixel(const Lattice& lat, int64_t p, const T* q, int lp, T* acc) {
  const int d1 = lat.d + 1;
  const float pre = lat.pre_of(p);
  for (int r = 0; r < d1; ++r) {
    T* row = acc + (int64_t)lat.offsets[p * d1 + r] * lp;
    const float w = lat.bary[p * d1 + r];
    for (int l = 0; l < lp; ++l) row[l] += w * (q[l] * pre);
  }
}

template <typename T>
void splat_chunk(const Lattice& lat, int c, const T* q, int lp, T* acc) {
  clear_chunk_rows(lat, c, lp, acc);
  for (int64_t p = lat.chunk_begin[c]; p < lat.chunk_begin[c + 1]; ++p) splat_pixel(lat, p, q + p * lp, lp, acc);
}

template <typename T>
void reduce_rows(const Lattice& lat, const T* acc, int lp, T* global, int64_t vb, int64_t ve) {
  const int32_t* gs = lat.gather_start.data();
  const int32_t* gr = lat.gather_rows.data();
  for (int64_t v = vb; v < ve; ++v) {
    T* out = global + v * lp;
    const T* first = acc + (int64_t)gr[gs[v]] * lp;
    for (int l = 0; l < lp; ++l) out[l] = first[l];
    for (int32_t k = gs[v] + 1; k < gs[v + 1]; ++k) {
      const T* src = acc + (int64_t)gr[k] * lp;
      for (int l = 0; l < lp; ++l) out[l] += src[l];
    }
  }
}

template <typename T>
void distribute_rows(const Lattice& lat, const T* global, int lp, T* local, int64_t kb, int64_t ke) {
  const int32_t* tg = lat.to_global.data();
  for (int64_t k = kb; k < ke; ++k) std::memcpy(local + k * lp, global + (int64_t)tg[k] * lp, sizeof(T) * lp);
}

template <typename T>
void blur_rows(const Lattice& lat, int j, const T* src, T* dst, int lp, int64_t vb, int64_t ve, T* local) {
  const int32_t* nb = lat.nbr.data() + (size_t)j * lat.m * 2;
  for (int64_t v = vb; v < ve; ++v) {
    const T* a = src + (int64_t)nb[2 * v] * lp;
    const T* b = src + (int64_t)nb[2 * v + 1] * lp;
    const T* o = src + v * lp;
    T* out = local ? local + (int64_t)lat.gather_rows[lat.gather_start[v]] * lp : dst + v * lp;
    for (int l = 0; l < lp; ++l) out[l] = o[l] + T(0.5) * (a[l] + b[l]);
    if (local)
      for (int32_t q = lat.gather_start[v] + 1; q < lat.gather_start[v + 1]; ++q)
        std::memcpy(local + (int64_t)lat.gather_rows[q] * lp, out, sizeof(T) * lp);
  }
}

template <typename T>
void slice_pixel(const Lattice& lat, int64_t p, const T* local, int lp, T* out) {
  const int d1 = lat.d + 1;
  const int32_t* off = lat.offsets.data() + p * d1;
  const float* w = lat.bary.data() + p * d1;
  for (int l = 0; l < lp; ++l) out[l] = T(0);
  for (int r = 0; r < d1; ++r) {
    const T* src = local + (int64_t)off[r] * lp;
    const float wr = w[r];
    for (int l = 0; l < lp; ++l) out[l] += wr * src[l];
  }
  const float s = lat.post_of(p);
  for (int l = 0; l < lp; ++l) out[l] *= s;
}

#define PYSEG_FILTER_STEPS(T)                                                                              \
  template void clear_chunk_rows<T>(const Lattice&, int, int, T*);                                         \
  template void splat_pixel<T>(const Lattice&, int64_t, const T*, int, T*);                                \
  template void splat_chunk<T>(const Lattice&, int, const T*, int, T*);                                    \
  template void reduce_rows<T>(const Lattice&, const T*, int, T*, int64_t, int64_t);                       \
  template void distribute_rows<T>(const Lattice&, const T*, int, T*, int64_t, int64_t);                   \
  template void blur_rows<T>(const Lattice&, int, const T*, T*, int, int64_t, int64_t, T*);                \
  template void slice_pixel<T>(const Lattice&, int64_t, const T*, int, T*);
PYSEG_FILTER_STEPS(float)
PYSEG_FILTER_STEPS(double)
#undef PYSEG_FILTER_STEPS

}  // namespace cpu
}  // namespace pyseg
