// Body of ops_sse2.cpp / ops_avx2.cpp: define PYSEG_VW and PYSEG_ISA (namespace name) first.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/fast_paths.h"
#include "cpu/ops.h"
#include "cpu/lattice_cpu.h"
#include "crf/common.h"
#include "crf/meanfield.h"

namespace pyseg {
namespace cpu {
namespace PYSEG_ISA {

#include "cpu/simd.h"
#include "cpu/fast_ops.h"

constexpr int kMaxLP = 32;  // register-blocked up to 32 labels; more take the generic path

// Finds the compiled LP for a run-time lp (a multiple of kLabelPad).
template <int LP>
struct Dispatch {
  static void splat(const Lattice& lat, int c, const float* q, int lp, float* acc) {
    if (lp == LP)
      splat_chunk_v<LP>(lat, c, q, acc);
    else
      Dispatch<LP + kLabelPad>::splat(lat, c, q, lp, acc);
  }
  static void reduce(const Lattice& lat, const float* acc, int lp, float* global, int64_t vb, int64_t ve) {
    if (lp == LP)
      reduce_rows_v<LP>(lat, acc, global, vb, ve);
    else
      Dispatch<LP + kLabelPad>::reduce(lat, acc, lp, global, vb, ve);
  }
  static void blur(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve,
                   float* local) {
    if (lp == LP)
      blur_rows_v<LP>(lat, j, src, dst, vb, ve, local);
    else
      Dispatch<LP + kLabelPad>::blur(lat, j, src, dst, lp, vb, ve, local);
  }
  static bool update(int lp, int nk, const UpdateTerm* ks, const float* neg_u, int64_t pb, int64_t pe, float* q_out,
                     float* out_lm, int labels, int64_t n) {
    if (lp == LP) {
      update_pixels_v<LP>(nk, ks, neg_u, pb, pe, q_out, out_lm, labels, n);
      fast_path_counts().update_pixels[PYSEG_VW == 8].fetch_add(pe - pb, std::memory_order_relaxed);
      return true;
    }
    return Dispatch<LP + kLabelPad>::update(lp, nk, ks, neg_u, pb, pe, q_out, out_lm, labels, n);
  }
  static void splat_rows(const Lattice& lat, int64_t p0, int nb, const float* rows, int lp, float* acc) {
    if (lp == LP)
      splat_rows_of<LP>(UpdateTerm{&lat, nullptr, acc, crf::CompatView{}}, p0, nb, rows);
    else
      Dispatch<LP + kLabelPad>::splat_rows(lat, p0, nb, rows, lp, acc);
  }
  static bool unary(int lp, const float* prob, int64_t n, int labels, int64_t b, int64_t e, float clip, float sum_tol,
                    float* neg_u, float* q0) {
    if (lp == LP) return unary_rows_v<LP>(prob, n, labels, b, e, clip, sum_tol, neg_u, q0);
    return Dispatch<LP + kLabelPad>::unary(lp, prob, n, labels, b, e, clip, sum_tol, neg_u, q0);
  }
};

template <>
struct Dispatch<kMaxLP + kLabelPad> {
  static void splat(const Lattice& lat, int c, const float* q, int lp, float* acc) { splat_chunk(lat, c, q, lp, acc); }
  static void reduce(const Lattice& lat, const float* acc, int lp, float* global, int64_t vb, int64_t ve) {
    reduce_rows(lat, acc, lp, global, vb, ve);
  }
  static void blur(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve,
                   float* local) {
    blur_rows(lat, j, src, dst, lp, vb, ve, local);
  }
  static bool update(int, int, const UpdateTerm*, const float*, int64_t, int64_t, float*, float*, int, int64_t) {
    return false;
  }
  static void splat_rows(const Lattice& lat, int64_t p0, int nb, const float* rows, int lp, float* acc) {
    for (int i = 0; i < nb; ++i) splat_pixel(lat, p0 + i, rows + (int64_t)i * lp, lp, acc);
  }
  static bool unary(int lp, const float* prob, int64_t n, int labels, int64_t b, int64_t e, float clip, float sum_tol,
                    float* neg_u, float* q0) {
    return unary_rows_any(lp, prob, n, labels, b, e, clip, sum_tol, neg_u, q0);
  }
};

// The ops of this ISA.
static const OpsSet kSet{PYSEG_ISA_NAME,
                            &Dispatch<kLabelPad>::splat,
                            &Dispatch<kLabelPad>::reduce,
                            &Dispatch<kLabelPad>::blur,
                            &Dispatch<kLabelPad>::update,
                            &Dispatch<kLabelPad>::splat_rows,
                            &Dispatch<kLabelPad>::unary};

}  // namespace PYSEG_ISA
}  // namespace cpu
}  // namespace pyseg
