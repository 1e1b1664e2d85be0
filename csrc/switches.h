// Every environment switch of the compiled CRF, read here and nowhere else (csrc/README.md lists them).
// Plain host C++: included by the CPU driver and the CUDA driver's host code. A switch read "once" keeps its
// first value for the life of the process; one read "per call" follows changes (the tests flip those).
#pragma once

#include <cstdlib>
#include <cstring>

namespace pyseg {
namespace switches {

inline bool is_zero(const char* v) { return v != nullptr && std::strcmp(v, "0") == 0; }

// PYSEG_CPU_ISA=sse2 forces the SSE2 ops; otherwise AVX2 + FMA where the CPU has them. Read once.
inline bool cpu_isa_sse2() {
  static const bool on = [] {
    const char* v = std::getenv("PYSEG_CPU_ISA");
    return v != nullptr && std::strcmp(v, "sse2") == 0;
  }();
  return on;
}

// PYSEG_LATTICE_SIMD=0 turns off the 8-wide lattice build (AVX2 only; bitwise the same). Read once.
inline bool lattice_simd_allowed() {
  static const bool on = !is_zero(std::getenv("PYSEG_LATTICE_SIMD"));
  return on;
}

// PYSEG_LATTICE_GRID=0 numbers the Gaussian image lattice's vertices with hash tables instead of dense key
// grids (the same lattice). Read per lattice build.
inline bool lattice_grid_allowed() { return !is_zero(std::getenv("PYSEG_LATTICE_GRID")); }

// PYSEG_CRF_CACHE_MB: MiB of CPU work buffers kept between calls (default 1024). Read once.
inline size_t crf_cache_bytes() {
  static const size_t lim = [] {
    const char* s = std::getenv("PYSEG_CRF_CACHE_MB");
    if (s) return (size_t)std::strtoull(s, nullptr, 10) << 20;
    return size_t(1024) << 20;
  }();
  return lim;
}

// PYSEG_CUDA_GRAPHS=0 launches the CUDA pipeline kernel by kernel instead of through cached CUDA graphs.
// Read per call.
inline bool cuda_graphs_allowed() { return !is_zero(std::getenv("PYSEG_CUDA_GRAPHS")); }

}  // namespace switches
}  // namespace pyseg
