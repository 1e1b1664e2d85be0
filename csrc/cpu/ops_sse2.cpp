#define PYSEG_VW 4
#define PYSEG_ISA sse2
#define PYSEG_ISA_NAME "sse2"
#include "cpu/ops_impl.h"

#include "switches.h"

namespace pyseg {
namespace cpu {

const OpsSet& ops_sse2() { return sse2::kSet; }

FastPathCounts& fast_path_counts() {
  static FastPathCounts counts;
  return counts;
}

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

const OpsSet& best_ops() {
  static const OpsSet* best = [] {
    if (switches::cpu_isa_sse2()) return &ops_sse2();
#if defined(PYSEG_HAVE_AVX2_OPS)
    if (cpu_has_avx2()) return &ops_avx2();
#endif
    return &ops_sse2();
  }();
  return *best;
}

}  // namespace cpu
}  // namespace pyseg
