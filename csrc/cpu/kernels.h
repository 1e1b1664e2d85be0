// Hot loops of the CPU driver, compiled once per instruction set (kernels_sse.cpp: SSE2, any x86-64;
// kernels_avx2.cpp: AVX2 + FMA) and chosen at run time, so the wheel runs on any x86-64 CPU.
#pragma once

#include <cstdint>

#include "cpu/lattice_cpu.h"
#include "crf/common.h"

namespace pyseg {
namespace cpu {

// A kernel as the per-pixel update needs it.
struct UpdateKernel {
  const Lattice* lat;
  const float* values;  // filtered values, (m+1) x lp
  crf::CompatView compat;
};

struct KernelSet {
  const char* name;  // "avx2" or "sse2"
  int vw;            // vector width: padded label counts are multiples of it
  // values rows [vb, ve) <- splat of q (n x lp)
  void (*splat)(const Lattice& lat, const float* q, int lp, float* values, int64_t vb, int64_t ve);
  // dst rows [vb, ve) <- blur of src along axis j
  void (*blur)(const Lattice& lat, int j, const float* src, float* dst, int lp, int64_t vb, int64_t ve);
  // q rows [pb, pe) <- softmax(-U - sum_k C_k(slice_k)); with out_lm, written there as (labels, n) instead.
  // Returns false when lp has no register-blocked version (the caller then uses the generic path).
  bool (*update)(int lp, int nk, const UpdateKernel* ks, const float* neg_u, float* q, int64_t pb, int64_t pe,
                 float* out_lm, int labels, int64_t n);
  // out[i] = log(in[i]) for positive normal floats
  void (*log_pos)(const float* in, float* out, int64_t count);
};

const KernelSet& kernels_sse2();
const KernelSet& kernels_avx2();  // only valid where cpu_has_avx2()
bool cpu_has_avx2();
// The set for this CPU (AVX2 + FMA when present), unless PYSEG_CPU_ISA=sse2 asks for the baseline.
const KernelSet& best_kernels();
// The set used for `labels` labels: best_kernels(), unless its wider vectors would need more padding
// (PYSEG_CPU_ISA=avx2 forces AVX2 anyway, PYSEG_CPU_ISA=sse2 forces the baseline; for timing experiments).
const KernelSet& kernels_for_labels(int labels);

}  // namespace cpu
}  // namespace pyseg
