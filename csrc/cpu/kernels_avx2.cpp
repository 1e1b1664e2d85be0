// Compiled with -mavx2 -mfma (see CMakeLists.txt); only called after a run-time CPU check.
#define PYSEG_VW 8
#define PYSEG_ISA avx2
#include "cpu/kernels_impl.h"

namespace pyseg {
namespace cpu {

const KernelSet& kernels_avx2() {
  static const KernelSet ks{"avx2", 8, &avx2::Dispatch<1>::splat, &avx2::Dispatch<1>::blur, &avx2::Dispatch<1>::update,
                            &avx2::log_pos};
  return ks;
}

}  // namespace cpu
}  // namespace pyseg
