// Host API of the CUDA dense CRF (plain C++: included by the pybind11 binding, which needs no CUDA headers).
// Mirrors the CPU driver's pyseg::cpu::dense_crf_images; pointers are device pointers, passed as integers
// from Python, and the work is queued on `stream` (a cudaStream_t) without any host synchronisation.
#pragma once

#include <stddef.h>
#include <stdint.h>

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

// Multiprocessor count and name of a device (for diagnostics); throws on a CUDA error.
int device_sm_count(int device);

}  // namespace cuda
}  // namespace pyseg
