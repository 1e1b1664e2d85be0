// Hot loops of the CPU driver, compiled once per instruction set (ops_sse2.cpp: SSE2, any x86-64;
// ops_avx2.cpp: AVX2 + FMA) and chosen at run time, so the wheel runs on any x86-64 CPU.
#pragma once

#include <cstdint>

#include "cpu/lattice_cpu.h"
#include "crf/common.h"

namespace pyseg {
namespace cpu {

// A pairwise term as the per-pixel update needs it.
struct UpdateTerm {
  const Lattice* lat;
  const float* values;  // its filtered values in local rows (L x lp), sliced
  float* acc;           // local rows (L x lp) that receive the splat of the new Q, or null (no splat)
  crf::CompatView compat;
};

struct OpsSet {
  const char* name;  // "avx2" or "sse2"
  // acc local rows of chunk c <- scatter of q (n x lp) times pre
  void (*splat)(const Lattice& lat, int c, const float* q, int lp, float* acc);
  // global rows [vb, ve) <- sum of their local rows
  void (*reduce)(const Lattice& lat, const float* acc, int lp, float* global, int64_t vb, int64_t ve);
  // dst rows [vb, ve) <- blur of src along axis j, or, where local is given, the blurred rows written to their
  // local rows instead (the last pass; dst untouched)
  void (*blur)(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve,
               float* local);
  // Pixels [pb, pe) (within one chunk): q = softmax(-U - sum_k C_k(slice_k)), then splatted into the acc of
  // every term that has one (the caller zeroes the chunk's rows first); q is written to q_out (n x lp) and
  // out_lm ((labels, n)) where given (lanes >= labels are padding: 0 in q_out). Returns false when lp has no
  // register-blocked version (the caller then uses the generic path).
  bool (*update)(int lp, int nk, const UpdateTerm* ks, const float* neg_u, int64_t pb, int64_t pe, float* q_out,
                 float* out_lm, int labels, int64_t n);
  // acc rows += the splat of rows (nb x lp: points p0 .. p0 + nb - 1 of one chunk), in point order
  void (*splat_rows)(const Lattice& lat, int64_t p0, int nb, const float* rows, int lp, float* acc);
  // Pixels [b, e) of the unary from probabilities prob (labels, n): neg_u (n x lp) = log(clip(p)) (padding
  // lanes crf::kPadEnergy) and, where given, q0 ((e - b) x lp: row p - b for pixel p) = clip(p) / sum clip(p),
  // clip(p) = min(max(p, clip), 1). Returns false when a probability is negative or not finite or a pixel's
  // sum is off 1 by more than sum_tol.
  bool (*unary)(int lp, const float* prob, int64_t n, int labels, int64_t b, int64_t e, float clip, float sum_tol,
                float* neg_u, float* q0);
};

const OpsSet& ops_sse2();
const OpsSet& ops_avx2();  // only valid where cpu_has_avx2()
bool cpu_has_avx2();
// The set for this CPU (AVX2 + FMA when present), unless PYSEG_CPU_ISA=sse2 asks for the baseline.
const OpsSet& best_ops();
// Rows of a pixel's or vertex's labels are padded to a multiple of this many floats (both sets handle it).
constexpr int kLabelPad = 4;

}  // namespace cpu
}  // namespace pyseg
