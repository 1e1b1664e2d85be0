// One pairwise term's normalised lattice filter as a linear map on (n, c) rows, and its adjoint: what the
// differentiable CRF layer (pyseg/crf/layer.py) runs forward and backward. The lattice is built once and
// reused by every iteration of the forward and by the backward.
#pragma once

#include <cstdint>
#include <memory>

#include "cpu/lattice_cpu.h"
#include "cpu/thread_pool.h"

namespace pyseg {
namespace cpu {

class LatticeOp {
 public:
  // normalization: crf::NORMALIZE_SYMMETRIC or crf::NO_NORMALIZATION, the two whose filter is a symmetric
  // matrix (the map is alpha S^T B S with one splat matrix S; see csrc/README.md).
  LatticeOp(const ArrayFeatures& f, int normalization, Executor& ex);
  LatticeOp(int64_t n, const GaussianImageFeatures& f, int normalization, Executor& ex);
  LatticeOp(int64_t n, const BilateralImageFeatures& f, int normalization, Executor& ex);

  int64_t n() const { return lat_->n; }
  int d() const { return lat_->d; }
  int vertices() const { return lat_->m; }

  // out (n, c) <- the filter applied to in (n, c); adjoint: its transpose (the blur's axes in reverse order).
  // T = float, or double: the same lattice (float weights) with every sum in double, for the layer in float64.
  template <typename T>
  void apply(const T* in, T* out, int c, bool adjoint, Executor& ex) const;

 private:
  static void check_normalization(int normalization);
  std::shared_ptr<const Lattice> lat_;
};

}  // namespace cpu
}  // namespace pyseg
