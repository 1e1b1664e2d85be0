// Compiled with -mavx2 -mfma (see CMakeLists.txt); only called after a run-time CPU check.
#define PYSEG_VW 8
#define PYSEG_ISA avx2
#define PYSEG_ISA_NAME "avx2"
#include "cpu/ops_impl.h"

namespace pyseg {
namespace cpu {

const OpsSet& ops_avx2() { return avx2::kSet; }

}  // namespace cpu
}  // namespace pyseg
