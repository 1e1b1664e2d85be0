// Lattice points of 8 points at once (AVX2), bitwise the same as crf::lattice_point: the same float
// operations in the same order, lane by lane (compiled without FMA contraction). Used by the lattice build
// where the CPU has AVX2 (unless PYSEG_LATTICE_SIMD=0); the scalar code handles the rest.
#pragma once

#include <cstdint>

#include "crf/lattice.h"

namespace pyseg {
namespace cpu {

// Whether lattice_points8 may be used (AVX2 compiled in, present on this CPU, not disabled by
// PYSEG_LATTICE_SIMD=0).
bool lattice_simd_enabled();

// f: D rows of 8 floats (feature i of point lane in f[i * 8 + lane]). Writes, for lane l, rem0[l * (D + 1) + i],
// rank[l * (D + 1) + i] and bary[l * (D + 2) + r] as crf::lattice_point<D> does for that point. Returns false
// when some lane is out of range (outputs then unspecified; the caller redoes the points one by one).
// D is 2, 3 or 5.
template <int D>
bool lattice_points8(const float* f, const crf::LatticeScales& sc, int* rem0, int* rank, float* bary);

// The symmetric normalisation of `count` points from their filtered ones s (alpha not applied): k =
// (float)(1 / sqrt((double)(s alpha) + 1e-20)), as crf::symmetric_factor computes it (4 at a time; the
// division and square root of doubles are correctly rounded either way: bitwise the same).
void symmetric_factors(const float* s, int64_t count, float alpha, float* k);

}  // namespace cpu
}  // namespace pyseg
