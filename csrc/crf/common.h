// Shared definitions of the dense-CRF core. Compiles with g++ (host only) and nvcc (host + device).
// Nothing here uses std containers, exceptions or virtual functions.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define PYSEG_HD __host__ __device__
#define PYSEG_INLINE __forceinline__
#else
#define PYSEG_HD
#define PYSEG_INLINE inline __attribute__((always_inline))
#endif

namespace pyseg {
namespace crf {

// Largest feature dimension the lattice accepts (DenseCRF::addPairwiseEnergy with any d in 1..kMaxDim).
constexpr int kMaxDim = 32;

// Elevated lattice coordinates must stay below this magnitude: floats hold every integer up to 2^24 exactly,
// so rounding to the lattice stays exact and int32 keys (plus the +-d of blur neighbours) cannot overflow.
constexpr float kMaxLatticeCoord = 16777216.0f;

// Normalisation of a pairwise term (values as in pydensecrf).
enum Normalization : int {
  NO_NORMALIZATION = 0,
  NORMALIZE_BEFORE = 1,
  NORMALIZE_AFTER = 2,
  NORMALIZE_SYMMETRIC = 3,
};

// Label compatibility forms, as they enter Q = softmax(-U - sum_k C_k(K_k Q)).
enum CompatType : int {
  COMPAT_POTTS = 0,     // C(x) = -w x
  COMPAT_DIAGONAL = 1,  // C(x) = diag(v) x
  COMPAT_MATRIX = 2,    // C(x) = S x, S = (m + m^T) / 2 (symmetrised by the caller)
};

// A compatibility as plain data. `data` points to `ld` floats (diagonal) or an ld x ld row-major matrix
// (already symmetrised); entries beyond the real label count must be 0.
struct CompatView {
  int type;
  float w;
  const float* data;
};

}  // namespace crf
}  // namespace pyseg
