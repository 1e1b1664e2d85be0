// Work done by the fast paths that have a slower twin (SSE2 vs AVX2 ops, the 8-wide lattice build), so
// that the tests which compare the two can check that the path they claim to test ran
// (_crf_cpu._fast_path_counts()). Counted once per chunk, not per pixel.
#pragma once

#include <atomic>
#include <cstdint>

namespace pyseg {
namespace cpu {

struct FastPathCounts {
  std::atomic<int64_t> update_pixels[2] = {0, 0};  // pixels through the register-blocked update: [0] SSE2, [1] AVX2
  std::atomic<int64_t> lattice_points8{0};         // lattice points computed 8 at a time (AVX2)
};

FastPathCounts& fast_path_counts();

}  // namespace cpu
}  // namespace pyseg
