// LatticeOp: splat, blur and slice of the generic filter steps (cpu/lattice_filter.cpp) over any row width,
// in float or double.
#include "cpu/lattice_op.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/workspace.h"
#include "crf/common.h"

namespace pyseg {
namespace cpu {

void LatticeOp::check_normalization(int normalization) {
  if (normalization != crf::NORMALIZE_SYMMETRIC && normalization != crf::NO_NORMALIZATION)
    throw std::invalid_argument("the lattice filter's adjoint needs NORMALIZE_SYMMETRIC or NO_NORMALIZATION, got " +
                                std::to_string(normalization));
}

LatticeOp::LatticeOp(const ArrayFeatures& f, int normalization, Executor& ex) {
  check_normalization(normalization);
  auto lat = std::make_shared<Lattice>();
  build_lattice(*lat, f, normalization, ex);
  lat_ = lat;
}

LatticeOp::LatticeOp(int64_t n, const GaussianImageFeatures& f, int normalization, Executor& ex) {
  check_normalization(normalization);
  lat_ = gaussian_lattice(n, f, normalization, ex);  // the same cached lattice dense_crf uses
}

LatticeOp::LatticeOp(int64_t n, const BilateralImageFeatures& f, int normalization, Executor& ex) {
  check_normalization(normalization);
  auto lat = std::make_shared<Lattice>();
  build_lattice(*lat, n, f, normalization, ex);
  lat_ = lat;
}

template <typename T>
void LatticeOp::apply(const T* in, T* out, int c, bool adjoint, Executor& ex) const {
  const Lattice& lat = *lat_;
  const int64_t m = lat.m;
  // Workspace arrays (cached, not zero-filled): every row is written before it is read, except row m of the
  // two global tables, the zero "missing neighbour" the blur reads.
  WsArray<T> acc((size_t)lat.rows() * c), local((size_t)lat.rows() * c);
  WsArray<T> g[2] = {WsArray<T>((size_t)(m + 1) * c), WsArray<T>((size_t)(m + 1) * c)};
  for (auto& t : g) std::fill(t.get() + m * c, t.get() + (m + 1) * c, T(0));
  ex.run(lat.nchunks, [&](int k) { splat_chunk(lat, k, in, c, acc.get()); });
  ex.parallel_for(m, [&](int64_t b, int64_t e) { reduce_rows(lat, acc.get(), c, g[0].get(), b, e); }, 256);
  int cur = 0;
  for (int pass = 0; pass <= lat.d; ++pass) {
    const int j = adjoint ? lat.d - pass : pass;
    const T* src = g[cur].get();
    T* dst = g[1 - cur].get();
    ex.parallel_for(m, [&](int64_t b, int64_t e) { blur_rows<T>(lat, j, src, dst, c, b, e); }, 256);
    cur = 1 - cur;
  }
  const T* blurred = g[cur].get();
  ex.parallel_for(lat.rows(), [&](int64_t b, int64_t e) { distribute_rows(lat, blurred, c, local.get(), b, e); },
                  1024);
  ex.run(lat.nchunks, [&](int k) {
    for (int64_t p = lat.chunk_begin[k]; p < lat.chunk_begin[k + 1]; ++p)
      slice_pixel(lat, p, local.get(), c, out + p * c);
  });
}

template void LatticeOp::apply<float>(const float*, float*, int, bool, Executor&) const;
template void LatticeOp::apply<double>(const double*, double*, int, bool, Executor&) const;

}  // namespace cpu
}  // namespace pyseg
