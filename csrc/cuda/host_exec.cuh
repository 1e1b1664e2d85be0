// Host emulation of the CUDA pipeline: the executor of pipeline.cuh that runs every functor in a plain loop
// (one "thread" at a time), std::stable_sort for the radix sort and a loop for the scan. Compiled by g++ in
// the CPU tests (tests/test_crf_cuda.py) so that the GPU algorithm's logic is checked without a GPU.
// Not part of the extension modules.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "cuda/layout.cuh"
#include "cuda/pipeline.cuh"

namespace pyseg {
namespace cuda {

struct HostExec {
  int64_t launches = 0;

  template <class F>
  void for_n(const char*, const F& f, int64_t n) {
    ++launches;
    for (int64_t i = 0; i < n; ++i) f(i);
  }
  template <class F>
  void for_dev(const char* name, const F& f, int64_t n_max) {
    ++launches;
    const int64_t n = f.bound();
    if (n > n_max) throw std::logic_error(std::string(name) + ": device bound exceeds the launch's upper bound");
    for (int64_t i = 0; i < n; ++i) f(i);
  }
  void fill_neg1(const char*, int32_t* p, int64_t n) {
    ++launches;
    std::memset(p, 0xFF, (size_t)n * sizeof(int32_t));
  }
  void sort_pairs(const int32_t* kin, int32_t* kout, const int32_t* vin, int32_t* vout, int64_t n, int end_bit) {
    ++launches;
    std::vector<int64_t> order((size_t)n);
    std::iota(order.begin(), order.end(), int64_t(0));
    const uint32_t mask = end_bit >= 32 ? 0xFFFFFFFFu : ((1u << end_bit) - 1u);
    for (int64_t i = 0; i < n; ++i)
      if (((uint32_t)kin[i] & ~mask) != 0) throw std::logic_error("sort key outside [0, 2^end_bit)");
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return kin[a] < kin[b]; });
    for (int64_t i = 0; i < n; ++i) {
      kout[i] = kin[order[(size_t)i]];
      vout[i] = vin[order[(size_t)i]];
    }
  }
  void inclusive_sum(const int32_t* in, int32_t* out, int64_t n) {
    ++launches;
    int32_t s = 0;
    for (int64_t i = 0; i < n; ++i) {
      s += in[i];
      out[i] = s;
    }
  }
};

// The emulation's workspace: each array of Buffers in a heap block of its exact size (the GPU carves them out
// of one buffer), so that AddressSanitizer reports an index past the end of any array. Poisoned: anything read
// before it is written shows up as NaN / garbage in the results.
struct HostWorkspace {
  size_t bytes[kNumBuffers];
  std::vector<std::unique_ptr<unsigned char[]>> blocks;
  Buffers bf;

  explicit HostWorkspace(const Sizes& s) {
    buffer_bytes(s, 0, bytes);
    void* p[kNumBuffers];
    for (int i = 0; i < kNumBuffers; ++i) {
      blocks.emplace_back(new unsigned char[bytes[i]]);
      std::memset(blocks.back().get(), 0x7F, bytes[i]);
      p[i] = blocks.back().get();
    }
    bf = bind_pointers(p);
  }
};

// Runs the whole pipeline on the host; `counts` receives M, M0 and the piece count.
inline void run_dense_crf_host(int64_t B, int64_t L, int64_t H, int64_t W, const float* probs, const uint8_t* rgb,
                               const crf::ImageParams& prm, int iterations, float* out, int32_t counts[3],
                               int64_t* launches) {
  const Sizes s = make_sizes(B, H, W, L);
  check_lattice_range(s, prm);
  const HostWorkspace ws(s);
  const Buffers& bf = ws.bf;
  HostExec ex;
  run_dense_crf(ex, s, prm, iterations, bf, probs, rgb, out);
  if (iterations > 0)
    for (int i = 0; i < 3; ++i) counts[i] = bf.counts[i];
  else
    counts[0] = counts[1] = counts[2] = 0;
  *launches = ex.launches;
}

}  // namespace cuda
}  // namespace pyseg
