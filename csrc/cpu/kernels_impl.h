// Body of kernels_sse.cpp / kernels_avx2.cpp: define PYSEG_VW and PYSEG_ISA (namespace name) first.
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "cpu/kernels.h"
#include "cpu/lattice_cpu.h"
#include "crf/common.h"
#include "crf/meanfield.h"

namespace pyseg {
namespace cpu {
namespace PYSEG_ISA {

#include "cpu/simd.h"
#include "cpu/fast_kernels.h"

constexpr int kMaxNV = 32 / VW;  // register-blocked up to 32 labels

template <int NV>
struct Dispatch {
  static void splat(const Lattice& lat, const float* q, int lp, float* values, int64_t vb, int64_t ve) {
    if (lp == NV * VW)
      splat_rows_v<NV>(lat, q, values, vb, ve);
    else
      Dispatch<NV + 1>::splat(lat, q, lp, values, vb, ve);
  }
  static void blur(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve) {
    if (lp == NV * VW)
      blur_rows_v<NV>(lat, j, src, dst, vb, ve);
    else
      Dispatch<NV + 1>::blur(lat, j, src, dst, lp, vb, ve);
  }
  static bool update(int lp, int nk, const UpdateKernel* ks, const float* neg_u, float* q, int64_t pb, int64_t pe,
                     float* out_lm, int labels, int64_t n) {
    if (lp == NV * VW) {
      update_pixels_v<NV>(nk, ks, neg_u, q, pb, pe, out_lm, labels, n);
      return true;
    }
    return Dispatch<NV + 1>::update(lp, nk, ks, neg_u, q, pb, pe, out_lm, labels, n);
  }
};

template <>
struct Dispatch<kMaxNV + 1> {
  static void splat(const Lattice& lat, const float* q, int lp, float* values, int64_t vb, int64_t ve) {
    splat_rows(lat, q, lp, values, vb, ve);
  }
  static void blur(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve) {
    blur_rows(lat, j, src, dst, lp, vb, ve);
  }
  static bool update(int, int, const UpdateKernel*, const float*, float*, int64_t, int64_t, float*, int, int64_t) {
    return false;
  }
};

static void log_pos(const float* in, float* out, int64_t count) {
  int64_t i = 0;
  for (; i + VW <= count; i += VW) v4_store(out + i, v4_log_pos(v4_load(in + i)));
  for (; i < count; ++i) out[i] = crf::fast_log_pos(in[i]);
}

}  // namespace PYSEG_ISA
}  // namespace cpu
}  // namespace pyseg
