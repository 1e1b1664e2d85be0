// CUDA driver of the dense CRF: runs the pipeline of pipeline.cuh as grid-stride kernels on a stream.
// Every CUDA call and launch is checked; errors name the call.
#include <cuda_runtime.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <stdexcept>
#include <string>

#include "cuda/api.cuh"
#include "cuda/lattice_op.cuh"
#include "cuda/layout.cuh"
#include "cuda/pipeline.cuh"
#include "switches.h"

namespace pyseg {
namespace cuda {
namespace {

constexpr int kBlock = 256;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("pyseg CUDA CRF: ") + what + " failed: " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
}

template <class F>
__global__ void __launch_bounds__(kBlock) k_for(F f, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

template <class F>
__global__ void __launch_bounds__(kBlock) k_for_dev(F f) {
  const int64_t n = f.bound();
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}

struct CudaExec {
  cudaStream_t stream;
  int sms;
  void* cub_temp;
  size_t cub_bytes;

  int64_t blocks_for(int64_t n, int64_t per_sm) const {
    int64_t b = (n + kBlock - 1) / kBlock;
    const int64_t cap = (int64_t)sms * per_sm;
    return b < 1 ? 1 : (b > cap ? cap : b);
  }
  void launched(const char* name) const {
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) check(err, (std::string("kernel launch '") + name + "'").c_str());
  }
  template <class F>
  void for_n(const char* name, const F& f, int64_t n) {
    if (n <= 0) return;
    k_for<F><<<(unsigned)blocks_for(n, 32), kBlock, 0, stream>>>(f, n);
    launched(name);
  }
  template <class F>
  void for_dev(const char* name, const F& f, int64_t n_max) {
    if (n_max <= 0) return;
    k_for_dev<F><<<(unsigned)blocks_for(n_max, 8), kBlock, 0, stream>>>(f);
    launched(name);
  }
  void fill_neg1(const char* name, int32_t* p, int64_t n) {
    check(cudaMemsetAsync(p, 0xFF, (size_t)n * sizeof(int32_t), stream),
          (std::string("cudaMemsetAsync(") + name + ")").c_str());
  }
  void sort_pairs(const int32_t* kin, int32_t* kout, const int32_t* vin, int32_t* vout, int64_t n, int end_bit) {
    size_t bytes = cub_bytes;
    // Slots are non-negative: sort them as unsigned keys (no sign-bit twiddling).
    check(cub::DeviceRadixSort::SortPairs(cub_temp, bytes, (const uint32_t*)kin, (uint32_t*)kout, vin, vout, (int)n, 0,
                                          end_bit, stream),
          "cub::DeviceRadixSort::SortPairs");
    launched("cub::DeviceRadixSort::SortPairs");
  }
  void inclusive_sum(const int32_t* in, int32_t* out, int64_t n) {
    size_t bytes = cub_bytes;
    check(cub::DeviceScan::InclusiveSum(cub_temp, bytes, in, out, (int)n, stream), "cub::DeviceScan::InclusiveSum");
    launched("cub::DeviceScan::InclusiveSum");
  }
};

size_t cub_temp_bytes_uncached(const Sizes& s) {
  size_t sort_bytes = 0, scan_bytes = 0;
  check(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const uint32_t*)nullptr, (uint32_t*)nullptr,
                                        (const int32_t*)nullptr, (int32_t*)nullptr, (int)s.E, 0, s.end_bit),
        "cub::DeviceRadixSort::SortPairs (size query)");
  check(cub::DeviceScan::InclusiveSum(nullptr, scan_bytes, (const int32_t*)nullptr, (int32_t*)nullptr, (int)s.E),
        "cub::DeviceScan::InclusiveSum (size query)");
  return sort_bytes > scan_bytes ? sort_bytes : scan_bytes;
}

// cub's size queries and the multiprocessor count cost host time on every call: cache
// them (per device, entry count and key bits; the current device is set by the caller).
std::mutex g_cache_mutex;
std::map<std::tuple<int, int64_t, int>, size_t> g_cub_bytes;
std::map<int, int> g_sm_count;

size_t cub_temp_bytes(const Sizes& s, int device) {
  const auto key = std::make_tuple(device, s.E, s.end_bit);
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    const auto it = g_cub_bytes.find(key);
    if (it != g_cub_bytes.end()) return it->second;
  }
  const size_t bytes = cub_temp_bytes_uncached(s);
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  if (g_cub_bytes.size() > 256) g_cub_bytes.clear();
  g_cub_bytes[key] = bytes;
  return bytes;
}

int sm_count(int device) {
  {
    std::lock_guard<std::mutex> lock(g_cache_mutex);
    const auto it = g_sm_count.find(device);
    if (it != g_sm_count.end()) return it->second;
  }
  int n = 0;
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute(MultiProcessorCount)");
  std::lock_guard<std::mutex> lock(g_cache_mutex);
  g_sm_count[device] = n;
  return n;
}

// The pointer must be device memory of `device` (or managed memory usable there).
void check_pointer(const void* p, int device, const char* what, const char* who = "dense_crf_cuda") {
  if (p == nullptr) throw std::invalid_argument(std::string(who) + ": " + what + " is a null pointer");
  cudaPointerAttributes attr;
  const cudaError_t err = cudaPointerGetAttributes(&attr, p);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error state of this query
    throw std::invalid_argument(std::string(who) + ": " + what + " is not a CUDA pointer (" +
                                cudaGetErrorString(err) + ")");
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw std::invalid_argument(std::string(who) + ": " + what + " is not device memory");
  if (attr.type == cudaMemoryTypeDevice && attr.device != device)
    throw std::invalid_argument(std::string(who) + ": " + what + " is on cuda:" +
                                std::to_string(attr.device) + ", expected cuda:" + std::to_string(device));
}

struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceGuard() {
    int cur = -1;
    if (cudaGetDevice(&cur) == cudaSuccess && cur != prev && prev >= 0) cudaSetDevice(prev);
  }
};

void check_params(const crf::ImageParams& p, int iterations) {
  const float pos[3] = {p.gaussian_sxy, p.bilateral_sxy, p.bilateral_srgb};
  const char* pos_names[3] = {"gaussian_sxy", "bilateral_sxy", "bilateral_srgb"};
  for (int i = 0; i < 3; ++i)
    if (!(std::isfinite(pos[i]) && pos[i] > 0.0f))
      throw std::invalid_argument(std::string("dense_crf_cuda: ") + pos_names[i] + " must be finite and > 0, got " +
                                  std::to_string(pos[i]));
  if (!std::isfinite(p.gaussian_compat) || !std::isfinite(p.bilateral_compat))
    throw std::invalid_argument("dense_crf_cuda: compatibility weights must be finite");
  if (iterations < 0)
    throw std::invalid_argument("dense_crf_cuda: iterations must be >= 0, got " + std::to_string(iterations));
}

// ---------------------------------------------------------------------------------------- CUDA graphs
// A call is many short launches; launched one by one, the gaps between them add up (benchmarks/NOTES_cuda.md). The
// sequence is captured once into a CUDA graph per (device, shapes, parameters, workspace) and replayed with one
// cudaGraphLaunch. When only the input or output pointers changed, the cached executable graph is updated in place
// (cudaGraphExecUpdate, no re-instantiation). Captured on a private stream (capture is not allowed on the legacy
// default stream), launched on the caller's. Not used when the caller's stream is itself being captured (the kernels
// then go into the caller's graph) or when PYSEG_CUDA_GRAPHS=0.
struct GraphKey {
  int device, iterations;
  int64_t B, H, W, L;
  uint32_t prm[5];  // bit patterns of the float parameters
  const void* workspace;
  bool operator<(const GraphKey& o) const {
    return std::tie(device, iterations, B, H, W, L, prm[0], prm[1], prm[2], prm[3], prm[4], workspace) <
           std::tie(o.device, o.iterations, o.B, o.H, o.W, o.L, o.prm[0], o.prm[1], o.prm[2], o.prm[3], o.prm[4],
                    o.workspace);
  }
};

struct GraphEntry {
  cudaGraphExec_t exec;
  const void *probs, *rgb, *out;
  uint64_t last_use;
};

constexpr size_t kMaxGraphs = 8;
std::mutex g_graph_mutex;
std::map<GraphKey, GraphEntry> g_graphs;
std::map<int, cudaStream_t> g_capture_streams;
uint64_t g_graph_clock = 0;

bool graphs_enabled() { return switches::cuda_graphs_allowed(); }

struct GraphGuard {  // destroys a captured graph on every path
  cudaGraph_t g = nullptr;
  ~GraphGuard() {
    if (g) cudaGraphDestroy(g);
  }
};

// Runs `run(stream)` through the graph cache (the caller holds the device guard). Returns false, doing
// nothing, where a graph cannot be used (the caller's stream is capturing, graphs switched off).
template <class Run>
bool run_as_graph(const GraphKey& key, const void* probs, const void* rgb, const void* out, cudaStream_t stream,
                  const Run& run) {
  if (!graphs_enabled()) return false;
  cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream, &st), "cudaStreamIsCapturing");
  if (st != cudaStreamCaptureStatusNone) return false;

  std::lock_guard<std::mutex> lock(g_graph_mutex);
  auto it = g_graphs.find(key);
  if (it != g_graphs.end() && it->second.probs == probs && it->second.rgb == rgb && it->second.out == out) {
    it->second.last_use = ++g_graph_clock;
    check(cudaGraphLaunch(it->second.exec, stream), "cudaGraphLaunch");
    return true;
  }
  cudaStream_t& cs = g_capture_streams[key.device];
  if (cs == nullptr) check(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
  GraphGuard graph;
  check(cudaStreamBeginCapture(cs, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  try {
    run(cs);
  } catch (...) {
    cudaStreamEndCapture(cs, &graph.g);
    cudaGetLastError();
    throw;
  }
  check(cudaStreamEndCapture(cs, &graph.g), "cudaStreamEndCapture");
  if (it != g_graphs.end()) {
    cudaGraphExecUpdateResultInfo info;
    if (cudaGraphExecUpdate(it->second.exec, graph.g, &info) != cudaSuccess) {
      cudaGetLastError();  // not sticky: fall back to a fresh instantiation
      cudaGraphExecDestroy(it->second.exec);
      g_graphs.erase(it);
      it = g_graphs.end();
    }
  }
  if (it == g_graphs.end()) {
    if (g_graphs.size() >= kMaxGraphs) {  // evict the least recently used (in-flight launches complete)
      auto lru = g_graphs.begin();
      for (auto j = g_graphs.begin(); j != g_graphs.end(); ++j)
        if (j->second.last_use < lru->second.last_use) lru = j;
      cudaGraphExecDestroy(lru->second.exec);
      g_graphs.erase(lru);
    }
    cudaGraphExec_t exec = nullptr;
    check(cudaGraphInstantiate(&exec, graph.g, 0), "cudaGraphInstantiate");
    it = g_graphs.emplace(key, GraphEntry{exec, nullptr, nullptr, nullptr, 0}).first;
  }
  it->second.probs = probs;
  it->second.rgb = rgb;
  it->second.out = out;
  it->second.last_use = ++g_graph_clock;
  check(cudaGraphLaunch(it->second.exec, stream), "cudaGraphLaunch");
  return true;
}

}  // namespace

size_t dense_crf_workspace_bytes(int64_t b, int64_t labels, int64_t h, int64_t w, int device) {
  const Sizes s = make_sizes(b, h, w, labels);
  DeviceGuard guard(device);
  return make_layout(s, cub_temp_bytes(s, device)).total;
}

int device_sm_count(int device) {
  if (device < 0) throw std::invalid_argument("device index must be >= 0, got " + std::to_string(device));
  return sm_count(device);
}

void dense_crf_images(int64_t b, int64_t labels, int64_t h, int64_t w, const float* probs, const uint8_t* rgb,
                      const crf::ImageParams& prm, int iterations, float* out, void* workspace,
                      size_t workspace_bytes, void* stream, int device) {
  const Sizes s = make_sizes(b, h, w, labels);
  check_params(prm, iterations);
  check_lattice_range(s, prm);
  DeviceGuard guard(device);
  check_pointer(probs, device, "probs");
  check_pointer(rgb, device, "image");
  check_pointer(out, device, "out");
  check_pointer(workspace, device, "workspace");
  if (((uintptr_t)workspace) % 256 != 0) throw std::invalid_argument("dense_crf_cuda: workspace must be 256-byte aligned");
  const size_t cub_bytes = cub_temp_bytes(s, device);
  const Layout lay = make_layout(s, cub_bytes);
  if (workspace_bytes < lay.total)
    throw std::invalid_argument("dense_crf_cuda: workspace of " + std::to_string(workspace_bytes) +
                                " bytes, need " + std::to_string(lay.total));
  const Buffers bf = bind_buffers(lay, workspace);
  const int sms = sm_count(device);
  auto run = [&](cudaStream_t st) {
    CudaExec ex{st, sms, bf.cub_temp, cub_bytes};
    run_dense_crf(ex, s, prm, iterations, bf, probs, rgb, out);
  };
  GraphKey key{device, iterations, b, h, w, labels, {}, workspace};
  const float fp[5] = {prm.gaussian_sxy, prm.gaussian_compat, prm.bilateral_sxy, prm.bilateral_srgb,
                       prm.bilateral_compat};
  std::memcpy(key.prm, fp, sizeof(fp));
  if (!run_as_graph(key, probs, rgb, out, (cudaStream_t)stream, run)) run((cudaStream_t)stream);
}

// ------------------------------------------------------------------------------------- the layer's filter
struct LatticeOpCuda::Impl {
  LatticeOpState st;
  int device;
  int stage = 0;  // 0 new, 1 counts read back, 2 built
};

namespace {
constexpr const char* kOpName = "CUDA lattice filter";

void require_stage(int have, int want, const char* call) {
  static const char* names[3] = {"the constructor", "build_vertices", "build_finish"};
  if (have != want)
    throw std::invalid_argument(std::string("CUDA lattice filter: ") + call + " must follow " + names[want] +
                                " (and come once)");
}
void check_size(const char* what, size_t have, size_t need) {
  if (have < need)
    throw std::invalid_argument(std::string("CUDA lattice filter: ") + what + " of " + std::to_string(have) +
                                " bytes, need " + std::to_string(need));
}
}  // namespace

LatticeOpCuda::LatticeOpCuda(int64_t b, int64_t h, int64_t w, float gaussian_sxy, float bilateral_sxy,
                             float bilateral_srgb, int device)
    : impl_(new Impl{make_lattice_op(b, h, w, gaussian_sxy, bilateral_sxy, bilateral_srgb), device}) {
  if (device < 0) throw std::invalid_argument("device index must be >= 0, got " + std::to_string(device));
  DeviceGuard guard(device);
  impl_->st.cub_bytes = cub_temp_bytes(impl_->st.s, device);
}
LatticeOpCuda::~LatticeOpCuda() = default;

size_t LatticeOpCuda::work_bytes() const { return cuda::work_bytes(impl_->st); }
size_t LatticeOpCuda::scratch_bytes() const { return cuda::scratch_bytes(impl_->st); }
size_t LatticeOpCuda::fixed_bytes() const { return cuda::fixed_bytes(impl_->st); }

void LatticeOpCuda::build_vertices(const uint8_t* rgb, void* work, void* scratch, void* fixed, void* stream) {
  Impl& im = *impl_;
  require_stage(im.stage, 0, "build_vertices");
  DeviceGuard guard(im.device);
  check_pointer(rgb, im.device, "image", kOpName);
  check_pointer(work, im.device, "work", kOpName);
  check_pointer(scratch, im.device, "scratch", kOpName);
  check_pointer(fixed, im.device, "fixed", kOpName);
  cudaStream_t st = (cudaStream_t)stream;
  cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(st, &cap), "cudaStreamIsCapturing");
  if (cap != cudaStreamCaptureStatusNone)
    throw std::invalid_argument("CUDA lattice filter: the build reads the vertex count back, which a stream "
                                "being captured into a CUDA graph cannot do");
  carve_work(im.st, work);
  carve_scratch(im.st, scratch);
  carve_fixed(im.st, fixed);
  CudaExec ex{st, sm_count(im.device), im.st.bf.cub_temp, im.st.cub_bytes};
  lattice_op_build_vertices(ex, im.st, rgb);
  int32_t counts[3];
  check(cudaMemcpyAsync(counts, im.st.bf.counts, sizeof(counts), cudaMemcpyDeviceToHost, st),
        "cudaMemcpyAsync(vertex counts)");
  check(cudaStreamSynchronize(st), "cudaStreamSynchronize(vertex counts)");
  set_counts(im.st, counts);
  im.stage = 1;
}

size_t LatticeOpCuda::vertex_bytes() const {
  require_stage(impl_->stage >= 1 ? 1 : 0, 1, "vertex_bytes");
  return cuda::vertex_bytes(impl_->st);
}
size_t LatticeOpCuda::build_tmp_bytes() const {
  require_stage(impl_->stage >= 1 ? 1 : 0, 1, "build_tmp_bytes");
  return cuda::build_tmp_bytes(impl_->st);
}

void LatticeOpCuda::build_finish(void* vertex, void* tmp, void* stream) {
  Impl& im = *impl_;
  require_stage(im.stage, 1, "build_finish");
  DeviceGuard guard(im.device);
  check_pointer(vertex, im.device, "vertex", kOpName);
  check_pointer(tmp, im.device, "tmp", kOpName);
  carve_vertex(im.st, vertex);
  CudaExec ex{(cudaStream_t)stream, sm_count(im.device), nullptr, 0};
  lattice_op_build_finish(ex, im.st, tmp);
  im.stage = 2;
}

size_t LatticeOpCuda::apply_bytes(int c, bool two_inputs) const {
  if (c < 1 || c > kMaxLabels)
    throw std::invalid_argument("CUDA lattice filter: c must be in 1.." + std::to_string(kMaxLabels) + ", got " +
                                std::to_string(c));
  require_stage(impl_->stage >= 1 ? 1 : 0, 1, "apply_bytes");
  return apply_tmp_bytes(impl_->st, c, two_inputs);
}

void LatticeOpCuda::apply(const float* in0, const float* in1, int64_t ld_in, float* out0, float* out1,
                          int64_t ld_out, int c, bool adjoint, void* tmp, size_t tmp_bytes, void* stream) {
  Impl& im = *impl_;
  require_stage(im.stage, 2, "apply");
  if (ld_in < c || ld_out < c)
    throw std::invalid_argument("CUDA lattice filter: row strides must be >= c = " + std::to_string(c) + ", got " +
                                std::to_string(ld_in) + " and " + std::to_string(ld_out));
  check_size("tmp", tmp_bytes, apply_bytes(c, in1 != in0));
  DeviceGuard guard(im.device);
  check_pointer(in0, im.device, "in0", kOpName);
  check_pointer(in1, im.device, "in1", kOpName);
  check_pointer(out0, im.device, "out0", kOpName);
  check_pointer(out1, im.device, "out1", kOpName);
  check_pointer(tmp, im.device, "tmp", kOpName);
  CudaExec ex{(cudaStream_t)stream, sm_count(im.device), nullptr, 0};
  lattice_op_apply(ex, im.st, in0, in1, ld_in, out0, out1, ld_out, c, adjoint, tmp);
}

int64_t LatticeOpCuda::vertices() const { return impl_->st.m; }
int64_t LatticeOpCuda::gaussian_vertices() const { return impl_->st.m0; }
int64_t LatticeOpCuda::pieces() const { return impl_->st.pieces; }

}  // namespace cuda
}  // namespace pyseg
