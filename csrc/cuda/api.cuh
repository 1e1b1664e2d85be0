// Host API of the CUDA dense CRF (plain C++: included by the pybind11 binding, which needs no CUDA headers).
// Mirrors the CPU driver's pyseg::cpu::dense_crf_images; pointers are device pointers, passed as integers
// from Python, and the work is queued on `stream` (a cudaStream_t) without any host synchronisation.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <memory>

#include "crf/params.h"

namespace pyseg {
namespace cuda {

// Bytes of device scratch one call needs on `device` (validates the shapes: std::invalid_argument on bad
// ones). Sized for the worst case (every entry its own lattice vertex): about 1.2 KB + 80 B per padded
// label per pixel (2.1 KB at 11 labels: 0.55 GB for one 512x512 image).
size_t dense_crf_workspace_bytes(int64_t b, int64_t labels, int64_t h, int64_t w, int device);

// Batch of b images: probs (b, labels, h, w) float32 probabilities, rgb (b, h, w, 3) uint8 -> out
// (b, labels, h, w) float32, all on CUDA device `device`; `workspace` holds at least
// dense_crf_workspace_bytes(...) bytes (256-byte aligned). Throws std::invalid_argument for bad sizes,
// parameters or pointers and std::runtime_error naming the CUDA call that failed.
void dense_crf_images(int64_t b, int64_t labels, int64_t h, int64_t w, const float* probs, const uint8_t* rgb,
                      const crf::ImageParams& prm, int iterations, float* out, void* workspace,
                      size_t workspace_bytes, void* stream, int device);

// The CRF layer's lattice filter of a batch (cuda/lattice_op.cuh): the Gaussian and bilateral lattices of b
// (h, w, 3) uint8 images, then both terms' normalised filters and their adjoints on (b, h * w, c) float32 rows.
// The caller owns the device memory (sizes below) and calls, in order: build_vertices (queues the first half of
// the build on `stream` and waits for the vertex counts: one small read-back; work may be freed after it),
// build_finish (scratch and the build's tmp may be freed after it, in stream order), then apply any number of
// times (fixed and vertex kept until the last). Throws
// std::invalid_argument on bad sizes, parameters, pointers or order of calls.
class LatticeOpCuda {
 public:
  LatticeOpCuda(int64_t b, int64_t h, int64_t w, float gaussian_sxy, float bilateral_sxy, float bilateral_srgb,
                int device);
  ~LatticeOpCuda();
  size_t work_bytes() const;
  size_t scratch_bytes() const;
  size_t fixed_bytes() const;
  void build_vertices(const uint8_t* rgb, void* work, void* scratch, void* fixed, void* stream);
  size_t vertex_bytes() const;
  size_t build_tmp_bytes() const;
  void build_finish(void* vertex, void* tmp, void* stream);
  size_t apply_bytes(int c, bool two_inputs) const;
  // out0 <- the Gaussian filter of in0, out1 <- the bilateral filter of in1 (adjoint: their transposes); rows
  // of c values at strides ld_in and ld_out; in1 == in0 shares one input (tmp then apply_bytes(c, false));
  // out1 == out0 writes the two terms' sum.
  void apply(const float* in0, const float* in1, int64_t ld_in, float* out0, float* out1, int64_t ld_out, int c,
             bool adjoint, void* tmp, size_t tmp_bytes, void* stream);
  int64_t vertices() const;           // both lattices, all images
  int64_t gaussian_vertices() const;  // lattice 0's
  int64_t pieces() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Multiprocessor count and name of a device (for diagnostics); throws on a CUDA error.
int device_sm_count(int device);

}  // namespace cuda
}  // namespace pyseg
