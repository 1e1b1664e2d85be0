// The sequence of steps of one CUDA dense-CRF call, written once over an executor `Exec` that either
// launches kernels on a stream (crf_cuda.cu) or runs the same functors in a host loop (host_exec.cuh, for
// the CPU tests). Exec provides:
//   for_n(name, f, n)          f(i) for i in [0, n)
//   for_dev(name, f, n_max)    f(i) for i in [0, f.bound()), the bound read from device memory, <= n_max
//   fill_neg1(name, ptr, n)    ptr[0..n) = -1 (int32)
//   sort_pairs(keys_in, keys_out, vals_in, vals_out, n, end_bit)   stable radix sort by key
//   inclusive_sum(in, out, n)
//   sm_count()                 multiprocessors (grid sizes)
//
// Launches per call: ~30 to build both lattices and their normalisation, then 9 per iteration (2 splat,
// 6 blur, 1 fused slice + compatibility + unary + softmax), whatever the batch size.
#pragma once

#include <math.h>

#include <type_traits>

#include "crf/lattice.h"
#include "crf/params.h"
#include "cuda/filter_kernels.cuh"
#include "cuda/kernels.cuh"
#include "cuda/layout.cuh"

namespace pyseg {
namespace cuda {

// Throws std::invalid_argument when a lattice coordinate could exceed the exact-integer range of a float
// (sigma too small for the image size), the condition under which crf::lattice_point would fail.
inline void check_lattice_range(const Sizes& s, const crf::ImageParams& prm) {
  struct K {
    int d;
    float fmax[5];
    const char* name;
  };
  const float xm = (float)(s.W - 1), ym = (float)(s.H - 1);
  const K ks[2] = {{kDim0, {xm / prm.gaussian_sxy, ym / prm.gaussian_sxy, 0, 0, 0}, "gaussian_sxy"},
                   {kDim1,
                    {xm / prm.bilateral_sxy, ym / prm.bilateral_sxy, 255.0f / prm.bilateral_srgb,
                     255.0f / prm.bilateral_srgb, 255.0f / prm.bilateral_srgb},
                    "bilateral_sxy / bilateral_srgb"}};
  for (const K& k : ks) {
    const crf::LatticeScales sc = crf::make_lattice_scales(k.d);
    double sum = 0.0, mx = 0.0;
    for (int i = 0; i < k.d; ++i) {
      const double c = (double)k.fmax[i] * sc.s[i];
      sum += c;
      mx = c > mx ? c : mx;
    }
    const double bound = sum + k.d * mx + 2.0 * (k.d + 1);
    if (!(bound < (double)crf::kMaxLatticeCoord))
      throw std::invalid_argument(std::string("dense_crf_cuda: ") + k.name +
                                  " too small for a " + std::to_string(s.H) + "x" + std::to_string(s.W) +
                                  " image (lattice coordinates would reach " + std::to_string(bound) +
                                  ", more than 2^24)");
  }
}

// Where a filter leaves its results: lattice 0's (Gaussian) and lattice 1's (bilateral) filtered values.
struct Filtered {
  const F4* l0;
  const F4* l1;
};

// Filters the values through both lattices: splat (pieces, then their sum per vertex), blur along the
// 3 + 6 axes (each lattice's axes in reverse order for the adjoint). Lattice 0 splats q, lattice 1 q1.
template <class Exec, bool ONES>
Filtered filter(Exec& ex, const Sizes& s, const Buffers& bf, const F4* q, const F4* q1, int G, bool adjoint = false) {
  const int64_t E = s.E;
  SplatPieces<ONES> sp{bf.pstart, bf.counts, bf.spix, bf.sws, bf.sorted_entry, bf.bary, q, q1, (F4*)bf.vals1, G, s.E0};
  ex.for_dev("splat_pieces", sp, E * G);
  SplatReduce sr{bf.vpiece, bf.counts, (const F4*)bf.vals1, (F4*)bf.vals0, G};
  ex.for_dev("splat_reduce", sr, E * G);
  F4* bufs[2] = {(F4*)bf.vals0, (F4*)bf.vals1};  // step t reads bufs[t % 2], writes bufs[(t + 1) % 2]
  for (int t = 0; t <= kDim1; ++t) {
    const int j = adjoint ? kDim1 - t : t, j0 = adjoint ? kDim0 - t : t;
    Blur bl{bf.nbr, bf.counts, bufs[t % 2], bufs[(t + 1) % 2], G, j, j0, t > kDim0};
    ex.for_dev("blur", bl, E * G);
  }
  // Steps 3.. touch lattice 1's vertices only: lattice 0 keeps the result of step kDim0.
  return Filtered{bufs[(kDim0 + 1) % 2], bufs[(kDim1 + 1) % 2]};
}

// Builds both lattices' vertices: keys, hash, vertex numbering, splat pieces, each entry's vertex. Leaves
// the counts M, M0 and pieces in bf.counts.
template <class Exec>
void build_vertices(Exec& ex, const Sizes& s, const crf::ImageParams& prm, const Buffers& bf, const uint8_t* rgb) {
  const int64_t P = s.P, E = s.E;
  Elevate el{rgb,
             bf.pdat,
             bf.pdat + P * (kDim0 + 1),
             bf.bary,
             bf.bary + s.E0,
             s.N,
             s.W,
             prm.gaussian_sxy,
             prm.bilateral_sxy,
             prm.bilateral_srgb,
             crf::make_lattice_scales(kDim0),
             crf::make_lattice_scales(kDim1)};
  ex.for_n("elevate", el, P);

  const KeySource<kDim0> ks0{bf.pdat, s.N, 0};
  const KeySource<kDim1> ks1{bf.pdat + P * (kDim0 + 1), s.N, s.E0};
  ex.fill_neg1("hash table", bf.table, s.C);
  Insert ins{ks0, ks1, bf.table, bf.entry_slot, bf.entry_key, bf.entry_idx, s.E0, s.cap0, s.cap1};
  ex.for_n("insert", ins, E);
  ex.sort_pairs(bf.entry_key, bf.sorted_key, bf.entry_idx, bf.sorted_entry, E, s.end_bit);

  ex.for_n("run_heads", RunHeads{bf.sorted_key, bf.flags}, E);
  ex.inclusive_sum(bf.flags, bf.vid, E);
  ex.for_n("vertices",
           Vertices{bf.sorted_key, bf.flags, bf.vid, bf.entry_slot, bf.table, bf.vstart, bf.vowner, bf.counts, E, s.E0},
           E);
  // The piece scan reuses entry_idx (dead after the sort) for its output.
  int32_t* pid = bf.entry_idx;
  ex.for_n("piece_heads", PieceHeads{bf.vid, bf.vstart, bf.flags}, E);
  ex.inclusive_sum(bf.flags, pid, E);
  ex.for_n("pieces", Pieces{bf.flags, pid, bf.vid, bf.vstart, bf.pstart, bf.vpiece, bf.counts, E}, E);
  ex.for_n("entry_vertex", EntryVertex{bf.entry_slot, bf.table, bf.ev}, E);
}

// After build_vertices: the blur neighbours and the normalisation (filter a vector of ones, G = 1, then
// fold it into the splat and slice weights).
template <class Exec>
void build_normalisation(Exec& ex, const Sizes& s, const crf::ImageParams& prm, const Buffers& bf) {
  const KeySource<kDim0> ks0{bf.pdat, s.N, 0};
  const KeySource<kDim1> ks1{bf.pdat + s.P * (kDim0 + 1), s.N, s.E0};
  Neighbours nb{ks0, ks1, bf.table, bf.vowner, bf.counts, bf.nbr, s.cap0, s.cap1};
  ex.for_dev("neighbours", nb, s.E);
  const Filtered ones = filter<Exec, true>(ex, s, bf, nullptr, nullptr, 1);
  NormWeights nw{bf.ev,
                 bf.bary,
                 ones.l0,
                 ones.l1,
                 bf.swe,
                 bf.lw,
                 s.E0,
                 crf::lattice_alpha(kDim0),
                 crf::lattice_alpha(kDim1),
                 prm.gaussian_compat,
                 prm.bilateral_compat};
  ex.for_n("norm_weights", nw, s.P);
  ex.for_n("sorted_weights", SortedWeights{bf.sorted_entry, bf.swe, bf.spix, bf.sws, s.E0}, s.E);
}

// Builds both lattices of the batch: keys, hash, vertices, splat pieces, neighbours, normalisation.
template <class Exec>
void build_lattices(Exec& ex, const Sizes& s, const crf::ImageParams& prm, const Buffers& bf, const uint8_t* rgb) {
  build_vertices(ex, s, prm, bf, rgb);
  build_normalisation(ex, s, prm, bf);
}

// Calls f(std::integral_constant<int, GT>) with GT = G for G <= 8 (rows kept in registers), else GT = 0.
template <class F>
void dispatch_groups(int G, const F& f) {
  switch (G) {
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    case 3: f(std::integral_constant<int, 3>()); break;
    case 4: f(std::integral_constant<int, 4>()); break;
    case 5: f(std::integral_constant<int, 5>()); break;
    case 6: f(std::integral_constant<int, 6>()); break;
    case 7: f(std::integral_constant<int, 7>()); break;
    case 8: f(std::integral_constant<int, 8>()); break;
    default: f(std::integral_constant<int, 0>()); break;
  }
}

template <class Exec>
void update(Exec& ex, const Sizes& s, const Buffers& bf, const Filtered& msg, float* out) {
  dispatch_groups(s.G, [&](auto gt) {
    Update<decltype(gt)::value> up{bf.ev, bf.lw, msg.l0, msg.l1, (const F4*)bf.neg_u, (F4*)bf.q, out, s.N, s.E0, s.G,
                                   s.L};
    ex.for_n("update", up, s.P);
  });
}

// The whole call: probs (B, L, H, W) float32 probabilities, rgb (B, H, W, 3) uint8 -> out (B, L, H, W).
template <class Exec>
void run_dense_crf(Exec& ex, const Sizes& s, const crf::ImageParams& prm, int iterations, const Buffers& bf,
                   const float* probs, const uint8_t* rgb, float* out) {
  dispatch_groups(s.G, [&](auto gt) {
    PrepareUnary<decltype(gt)::value> pu{probs, bf.neg_u, bf.q, iterations == 0 ? out : nullptr, s.N, s.L, s.LP};
    ex.for_n("prepare_unary", pu, s.P);
  });
  if (iterations == 0) return;
  build_lattices(ex, s, prm, bf, rgb);
  for (int it = 0; it < iterations; ++it) {
    const Filtered msg = filter<Exec, false>(ex, s, bf, (const F4*)bf.q, (const F4*)bf.q, s.G);
    update(ex, s, bf, msg, it + 1 == iterations ? out : nullptr);
  }
}

}  // namespace cuda
}  // namespace pyseg
