#define PYSEG_VW 4
#define PYSEG_ISA sse2
#include "cpu/kernels_impl.h"

#include <cstdlib>
#include <cstring>

namespace pyseg {
namespace cpu {

const KernelSet& kernels_sse2() {
  static const KernelSet ks{"sse2", 4, &sse2::Dispatch<1>::splat, &sse2::Dispatch<1>::blur, &sse2::Dispatch<1>::update,
                            &sse2::log_pos};
  return ks;
}

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const KernelSet& best_kernels() {
  static const KernelSet* best = [] {
    const char* isa = std::getenv("PYSEG_CPU_ISA");
    if (isa && std::strcmp(isa, "sse2") == 0) return &kernels_sse2();
#if defined(PYSEG_HAVE_AVX2_KERNELS)
    if (cpu_has_avx2()) return &kernels_avx2();
#endif
    return &kernels_sse2();
  }();
  return *best;
}

const KernelSet& kernels_for_labels(int labels) {
  const KernelSet& best = best_kernels();
  const char* isa = std::getenv("PYSEG_CPU_ISA");
  if (isa && std::strcmp(isa, "avx2") == 0) return best;  // force the widest set (for timing experiments)
  // Wider vectors only when they need no more label padding (e.g. 11 labels: 12 lanes with SSE2, 16 with
  // AVX2; the extra lanes cost memory traffic and memory for nothing).
  if (best.vw > 4 && (labels + best.vw - 1) / best.vw * best.vw > (labels + 3) / 4 * 4) return kernels_sse2();
  return best;
}

}  // namespace cpu
}  // namespace pyseg
