// Generic filter steps on a lattice's rows (any lp; cpu/lattice_cpu.h): the lattice build's normalisation and
// the label counts the register-blocked ops (cpu/fast_ops.h) do not compile use them.
#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/lattice_cpu.h"

namespace pyseg {
namespace cpu {

void clear_chunk_rows(const Lattice& lat, int c, int lp, float* acc) {
  std::fill(acc + lat.local_begin[c] * lp, acc + lat.local_begin[c + 1] * lp, 0.0f);
}

void splat_pixel(const Lattice& lat, int64_t p, const float* q, int lp, float* acc) {
  const int d1 = lat.d + 1;
  const float pre = lat.pre_of(p);
  for (int r = 0; r < d1; ++r) {
    float* row = acc + (int64_t)lat.offsets[p * d1 + r] * lp;
    const float w = lat.bary[p * d1 + r];
    for (int l = 0; l < lp; ++l) row[l] += w * (q[l] * pre);
  }
}

void splat_chunk(const Lattice& lat, int c, const float* q, int lp, float* acc) {
  clear_chunk_rows(lat, c, lp, acc);
  for (int64_t p = lat.chunk_begin[c]; p < lat.chunk_begin[c + 1]; ++p) splat_pixel(lat, p, q + p * lp, lp, acc);
}

void reduce_rows(const Lattice& lat, const float* acc, int lp, float* global, int64_t vb, int64_t ve) {
  const int32_t* gs = lat.gather_start.data();
  const int32_t* gr = lat.gather_rows.data();
  for (int64_t v = vb; v < ve; ++v) {
    float* out = global + v * lp;
    const float* first = acc + (int64_t)gr[gs[v]] * lp;
    for (int l = 0; l < lp; ++l) out[l] = first[l];
    for (int32_t k = gs[v] + 1; k < gs[v + 1]; ++k) {
      const float* src = acc + (int64_t)gr[k] * lp;
      for (int l = 0; l < lp; ++l) out[l] += src[l];
    }
  }
}

void distribute_rows(const Lattice& lat, const float* global, int lp, float* local, int64_t kb, int64_t ke) {
  const int32_t* tg = lat.to_global.data();
  for (int64_t k = kb; k < ke; ++k) std::memcpy(local + k * lp, global + (int64_t)tg[k] * lp, sizeof(float) * lp);
}

void blur_rows(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve,
               float* local) {
  const int32_t* nb = lat.nbr.data() + (size_t)j * lat.m * 2;
  for (int64_t v = vb; v < ve; ++v) {
    const float* a = src + (int64_t)nb[2 * v] * lp;
    const float* b = src + (int64_t)nb[2 * v + 1] * lp;
    const float* o = src + v * lp;
    float* out = local ? local + (int64_t)lat.gather_rows[lat.gather_start[v]] * lp : dst + v * lp;
    for (int l = 0; l < lp; ++l) out[l] = o[l] + 0.5f * (a[l] + b[l]);
    if (local)
      for (int32_t q = lat.gather_start[v] + 1; q < lat.gather_start[v + 1]; ++q)
        std::memcpy(local + (int64_t)lat.gather_rows[q] * lp, out, sizeof(float) * lp);
  }
}

void slice_pixel(const Lattice& lat, int64_t p, const float* local, int lp, float* out) {
  const int d1 = lat.d + 1;
  const int32_t* off = lat.offsets.data() + p * d1;
  const float* w = lat.bary.data() + p * d1;
  for (int l = 0; l < lp; ++l) out[l] = 0.0f;
  for (int r = 0; r < d1; ++r) {
    const float* src = local + (int64_t)off[r] * lp;
    const float wr = w[r];
    for (int l = 0; l < lp; ++l) out[l] += wr * src[l];
  }
  const float s = lat.post_of(p);
  for (int l = 0; l < lp; ++l) out[l] *= s;
}

}  // namespace cpu
}  // namespace pyseg
