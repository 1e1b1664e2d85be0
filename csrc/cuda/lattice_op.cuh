// The CRF layer's filter on the GPU: both pairwise terms' normalised lattice filters of a batch of images as
// linear maps on (B, N, c) float32 rows, and their adjoints (pyseg/crf/layer.py). The CUDA counterpart of
// cpu/lattice_op.h, written over an executor like pipeline.cuh and built from the same kernels as dense_crf.
//
// Rows are pixel-major, (B, N, c) with a row stride: the kernels keep a pixel's labels together in float4
// groups (a splat gathers one row per entry, a slice writes one row per pixel), so this layout is theirs.
//
// Memory comes from the caller in five buffers, each sized from the real lattice where it can be:
//   work     the first build step's arrays (sized by the entry count: the vertex count is not known yet)
//   scratch  the arrays both build steps use (sized by the entry count)
//   fixed    per entry: its vertex and slice weight, per sorted position its pixel and splat weight; counts
//   vertex   per vertex: blur neighbours, first piece; per piece: first sorted position (sized by M, pieces)
//   tmp      the vertex values of one filter (build: the ones pass; apply: c labels, in passes of as many
//            float4 groups as fit vals_budget: each (vertex, group) is computed alone, so the same bits)
// Build: build_vertices (work can go after it), read the counts back (one small read-back), build_finish
// (scratch and the build's tmp can go after it). fixed and vertex are the lattice, kept for every apply (forward and backward).
#pragma once

#include <math.h>
#include <stdint.h>

#include <stdexcept>
#include <string>

#include "cuda/pipeline.cuh"

namespace pyseg {
namespace cuda {

// Hands out 256-byte aligned arrays from a buffer; with a null base it only adds up their sizes.
struct Carve {
  char* base;
  size_t used = 0;
  template <class T>
  T* take(int64_t n) {
    T* p = base ? (T*)(base + used) : nullptr;
    const size_t bytes = (size_t)n * sizeof(T);
    used += align256(bytes > 0 ? bytes : 1);
    return p;
  }
};

struct CopyI32 {
  const int32_t* in;
  int32_t* out;
  PYSEG_HD void operator()(int64_t i) const { out[i] = in[i]; }
};

// Per (pixel, float4 group): c values of row p (stride ld) -> G float4 groups, zeros past c.
struct PackRows {
  const float* in;
  F4* out;
  int64_t ld;
  int c, G;
  PYSEG_HD void operator()(int64_t i) const {
    const int64_t p = i / G;
    const int l0 = 4 * (int)(i - p * G);
    float v[4];
    for (int t = 0; t < 4; ++t) v[t] = l0 + t < c ? in[p * ld + l0 + t] : 0.0f;
    out[i] = F4{v[0], v[1], v[2], v[3]};
  }
};

// Per (pixel, group): each lattice's slice, alpha * sum_r w_r vals[v_r] (the CPU's slice_pixel order), with
// w the normalised splat weights (splat and slice are each other's transpose); c values, stride ld. With
// out1 == out0 the two slices' sum (the layer's adjoint: the gradient of an input both terms filtered).
struct SliceRows {
  const int32_t* ev;
  const float* swe;
  const F4* vals_l0;
  const F4* vals_l1;
  float* out0;
  float* out1;
  int64_t ld, E0;
  int c, G;
  float alpha0, alpha1;

  template <int D>
  PYSEG_HD PYSEG_INLINE void one(int g, int64_t e0, const F4* vals, float alpha, float* a) const {
    int32_t v[D + 1];
    float w[D + 1];
    load_entries<D + 1>(ev, swe, e0, v, w);
    F4 acc = f4_zero();
    for (int r = 0; r <= D; ++r) f4_fma(acc, w[r], vals[(int64_t)v[r] * G + g]);
    a[0] = acc.x * alpha;
    a[1] = acc.y * alpha;
    a[2] = acc.z * alpha;
    a[3] = acc.w * alpha;
  }
  PYSEG_HD void operator()(int64_t i) const {
    const int64_t p = i / G;
    const int g = (int)(i - p * G);
    float a0[4], a1[4];
    one<kDim0>(g, p * (kDim0 + 1), vals_l0, alpha0, a0);
    one<kDim1>(g, E0 + p * (kDim1 + 1), vals_l1, alpha1, a1);
    float* o0 = out0 + p * ld + 4 * g;
    float* o1 = out1 + p * ld + 4 * g;
    for (int t = 0; t < 4 && 4 * g + t < c; ++t) {
      if (out1 == out0) {
        o0[t] = a0[t] + a1[t];
      } else {
        o0[t] = a0[t];
        o1[t] = a1[t];
      }
    }
  }
};

constexpr size_t kApplyValsBudget = size_t(256) << 20;

// Everything one batch's lattice pair needs on the host: sizes, parameters, counts, device pointers.
struct LatticeOpState {
  Sizes s;  // with L = 1 (the label count comes with each apply)
  crf::ImageParams prm;
  int32_t m = -1, m0 = -1, pieces = -1;  // read back after build_vertices
  size_t cub_bytes = 0;
  size_t vals_budget = kApplyValsBudget;  // bytes of vertex values per apply pass (at least one group)
  Buffers bf{};
  const int32_t* vpiece_a = nullptr;  // build_vertices' piece arrays (sized by entries), copied into `vertex`
  const int32_t* pstart_a = nullptr;
};

inline void check_sigma(const char* name, float v) {
  if (!(v > 0.0f) || !isfinite(v))
    throw std::invalid_argument(std::string("CUDA lattice filter: ") + name + " must be finite and > 0, got " +
                                std::to_string(v));
}

inline LatticeOpState make_lattice_op(int64_t b, int64_t h, int64_t w, float gaussian_sxy, float bilateral_sxy,
                                      float bilateral_srgb) {
  check_sigma("gaussian_sxy", gaussian_sxy);
  check_sigma("bilateral_sxy", bilateral_sxy);
  check_sigma("bilateral_srgb", bilateral_srgb);
  LatticeOpState st;
  st.s = make_sizes(b, h, w, 1);
  // compat weights 1: NormWeights' slice weights are not used (SliceRows applies alpha to the splat weights)
  st.prm = crf::ImageParams{gaussian_sxy, 1.0f, bilateral_sxy, bilateral_srgb, 1.0f};
  check_lattice_range(st.s, st.prm);
  return st;
}

// Each carve_* returns its buffer's size and, with a base, points the state's arrays into it.
inline size_t carve_work(LatticeOpState& st, void* base) {
  const int64_t E = st.s.E;
  Carve cv{(char*)base};
  Buffers& bf = st.bf;
  bf.entry_slot = cv.take<int32_t>(E);
  bf.entry_key = cv.take<int32_t>(E);
  bf.entry_idx = cv.take<int32_t>(E);
  bf.sorted_key = cv.take<int32_t>(E);
  bf.flags = cv.take<int32_t>(E);
  bf.vid = cv.take<int32_t>(E);
  bf.vstart = cv.take<int32_t>(E + 1);
  bf.cub_temp = cv.take<char>((int64_t)st.cub_bytes);
  return cv.used;
}

inline size_t carve_scratch(LatticeOpState& st, void* base) {
  const int64_t P = st.s.P, E = st.s.E;
  Carve cv{(char*)base};
  Buffers& bf = st.bf;
  bf.pdat = cv.take<int32_t>(P * (kDim0 + 1 + kDim1 + 1));
  bf.bary = cv.take<float>(E);
  bf.sorted_entry = cv.take<int32_t>(E);
  bf.table = cv.take<int32_t>(st.s.C);
  bf.vowner = cv.take<int32_t>(E);
  bf.vpiece = cv.take<int32_t>(E + 1);
  bf.pstart = cv.take<int32_t>(E + 1);
  st.vpiece_a = bf.vpiece;
  st.pstart_a = bf.pstart;
  return cv.used;
}

inline size_t carve_fixed(LatticeOpState& st, void* base) {
  const int64_t E = st.s.E;
  Carve cv{(char*)base};
  st.bf.ev = cv.take<int32_t>(E);
  st.bf.swe = cv.take<float>(E);
  st.bf.spix = cv.take<int32_t>(E);
  st.bf.sws = cv.take<float>(E);
  st.bf.lw = st.bf.sws;  // NormWeights' slice weights, unused here: written before SortedWeights fills sws
  st.bf.counts = cv.take<int32_t>(4);
  return cv.used;
}

// The buffer sizes, without touching the state's pointers.
inline size_t work_bytes(const LatticeOpState& st) {
  LatticeOpState t = st;
  return carve_work(t, nullptr);
}
inline size_t scratch_bytes(const LatticeOpState& st) {
  LatticeOpState t = st;
  return carve_scratch(t, nullptr);
}
inline size_t fixed_bytes(const LatticeOpState& st) {
  LatticeOpState t = st;
  return carve_fixed(t, nullptr);
}

inline void set_counts(LatticeOpState& st, const int32_t counts[3]) {
  if (counts[0] < 1 || counts[1] < 1 || counts[1] >= counts[0] || counts[2] < counts[0] || counts[0] > st.s.E)
    throw std::logic_error("CUDA lattice filter: implausible vertex counts read back (M=" + std::to_string(counts[0]) +
                           " M0=" + std::to_string(counts[1]) + " pieces=" + std::to_string(counts[2]) + ")");
  st.m = counts[0];
  st.m0 = counts[1];
  st.pieces = counts[2];
}

inline void require_counts(const LatticeOpState& st) {
  if (st.m < 0) throw std::logic_error("CUDA lattice filter: the vertex counts are not read back yet");
}

inline size_t carve_vertex(LatticeOpState& st, void* base) {
  require_counts(st);
  Carve cv{(char*)base};
  st.bf.nbr = cv.take<int32_t>((int64_t)st.m * kNbrAxes * 2);
  st.bf.vpiece = cv.take<int32_t>((int64_t)st.m + 1);
  st.bf.pstart = cv.take<int32_t>((int64_t)st.pieces + 1);
  return cv.used;
}
inline size_t vertex_bytes(const LatticeOpState& st) {
  LatticeOpState t = st;
  return carve_vertex(t, nullptr);
}

// The vertex values of one filter of G float4 groups: vals0 (M rows), vals1 (the splat's piece sums, then
// the blur's other buffer).
inline size_t carve_vals(const LatticeOpState& st, Buffers& bf, Carve& cv, int G) {
  require_counts(st);
  bf.vals0 = cv.take<float>((int64_t)st.m * 4 * G);
  bf.vals1 = cv.take<float>((int64_t)(st.pieces > st.m ? st.pieces : st.m) * 4 * G);
  return cv.used;
}

inline size_t build_tmp_bytes(const LatticeOpState& st) {
  Buffers bf{};
  Carve cv{nullptr};
  return carve_vals(st, bf, cv, 1);
}

// Float4 groups per apply pass: all of c's where their vertex values fit vals_budget, else fewer (at least 1).
inline int apply_groups(const LatticeOpState& st, int c) {
  require_counts(st);
  const int G = (c + 3) / 4;
  const size_t per_group = (size_t)(st.m + (st.pieces > st.m ? st.pieces : st.m)) * sizeof(F4);
  const size_t fit = st.vals_budget / per_group;
  return fit >= (size_t)G ? G : (fit < 1 ? 1 : (int)fit);
}

// Bytes of an apply's tmp: one pass's packed inputs (one, or two for different inputs per lattice) and values.
inline size_t apply_tmp_bytes(const LatticeOpState& st, int c, bool two_inputs) {
  const int G = apply_groups(st, c);
  Carve cv{nullptr};
  cv.take<F4>(st.s.P * G * (two_inputs ? 2 : 1));
  Buffers bf{};
  return carve_vals(st, bf, cv, G);
}

template <class Exec>
void lattice_op_build_vertices(Exec& ex, const LatticeOpState& st, const uint8_t* rgb) {
  build_vertices(ex, st.s, st.prm, st.bf, rgb);
}

// After set_counts and carve_vertex (scratch still alive); tmp holds build_tmp_bytes.
template <class Exec>
void lattice_op_build_finish(Exec& ex, LatticeOpState& st, void* tmp) {
  ex.for_n("copy_vpiece", CopyI32{st.vpiece_a, st.bf.vpiece}, (int64_t)st.m + 1);
  ex.for_n("copy_pstart", CopyI32{st.pstart_a, st.bf.pstart}, (int64_t)st.pieces + 1);
  Buffers bf = st.bf;
  bf.entry_slot = bf.entry_key = bf.entry_idx = bf.sorted_key = bf.flags = bf.vid = bf.vstart = nullptr;  // work
  bf.cub_temp = nullptr;
  Carve cv{(char*)tmp};
  carve_vals(st, bf, cv, 1);
  build_normalisation(ex, st.s, st.prm, bf);
  // Only fixed and vertex stay valid: forget the scratch and tmp arrays.
  Buffers kept{};
  kept.ev = st.bf.ev;
  kept.swe = st.bf.swe;
  kept.spix = st.bf.spix;
  kept.sws = st.bf.sws;
  kept.counts = st.bf.counts;
  kept.nbr = st.bf.nbr;
  kept.vpiece = st.bf.vpiece;
  kept.pstart = st.bf.pstart;
  st.bf = kept;
}

// out0 (B, N, c) <- the Gaussian filter of in0, out1 <- the bilateral filter of in1 (rows of stride ld_in and
// ld_out); adjoint: their transposes. in1 may equal in0 (then tmp needs apply_tmp_bytes(c, false)); out1 may
// equal out0 (the sum of both).
template <class Exec>
void lattice_op_apply(Exec& ex, const LatticeOpState& st, const float* in0, const float* in1, int64_t ld_in,
                      float* out0, float* out1, int64_t ld_out, int c, bool adjoint, void* tmp) {
  const int G = (c + 3) / 4, per_pass = apply_groups(st, c);
  const int64_t P = st.s.P;
  for (int g0 = 0; g0 < G; g0 += per_pass) {  // labels 4 g0 .. 4 g0 + cc of every row
    const int gn = G - g0 < per_pass ? G - g0 : per_pass;
    const int cc = c - 4 * g0 < 4 * gn ? c - 4 * g0 : 4 * gn;
    Carve cv{(char*)tmp};
    F4* q0 = cv.take<F4>(P * gn);
    F4* q1 = in1 == in0 ? q0 : cv.take<F4>(P * gn);
    Buffers bf = st.bf;
    carve_vals(st, bf, cv, gn);
    ex.for_n("pack_rows", PackRows{in0 + 4 * g0, q0, ld_in, cc, gn}, P * gn);
    if (q1 != q0) ex.for_n("pack_rows", PackRows{in1 + 4 * g0, q1, ld_in, cc, gn}, P * gn);
    const Filtered f = filter<Exec, false>(ex, st.s, bf, q0, q1, gn, adjoint);
    SliceRows sl{bf.ev, bf.swe, f.l0, f.l1, out0 + 4 * g0, out1 + 4 * g0, ld_out, st.s.E0, cc, gn,
                 crf::lattice_alpha(kDim0), crf::lattice_alpha(kDim1)};
    ex.for_n("slice_rows", sl, P * gn);
  }
}

}  // namespace cuda
}  // namespace pyseg
