// Stand-alone check of the CUDA dense CRF, without Python or torch (so compute-sanitizer runs it quickly):
//   check [--small | --bench]
// Runs small batches through pyseg::cuda::dense_crf_images and through the host emulation of the same
// pipeline (host_exec.cuh), compares them, checks that two runs are bitwise identical and that every output
// was written (the output is poisoned with NaN first); --small runs only the first three cases.
// --bench times, with CUDA events after warm-up,
// 512x512 x 11 labels x 10 iterations (one image, lattice build included) and a batch of 64 at 256x256:
// launched as a cached CUDA graph (the default), as a graph whose output pointer changes every call (the
// cached graph is updated), and launched kernel by kernel (PYSEG_CUDA_GRAPHS=0).
// --profile runs each bench case twice, kernel by kernel, with a `marker` kernel after each call, for
// ncu's per-kernel table (benchmarks/gpu_profile.sh).
// Build: nvcc -std=c++17 -O3 -arch=sm_90 -Icsrc csrc/cuda/standalone_check.cu csrc/cuda/crf_cuda.cu -o check
// Not part of the Python package; benchmarks/gpu_check.sh builds and runs it.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/api.cuh"
#include "cuda/host_exec.cuh"

namespace {

#define CK(call)                                                                                   \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(e_));                      \
      std::exit(2);                                                                                \
    }                                                                                              \
  } while (0)

struct Case {
  int B, L, H, W;
  pyseg::crf::ImageParams prm;
  int iterations;
  bool noise;  // random RGB noise instead of a smooth synthetic image
};

void make_inputs(const Case& c, unsigned seed, std::vector<float>& probs, std::vector<uint8_t>& rgb) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.f, 2.f);
  std::uniform_int_distribution<int> ud(0, 255), jitter(-6, 6);
  const size_t N = (size_t)c.H * c.W;
  probs.assign((size_t)c.B * c.L * N, 0.f);
  rgb.assign((size_t)c.B * N * 3, 0);
  for (int b = 0; b < c.B; ++b) {
    for (size_t i = 0; i < N; ++i) {
      float mx = -1e30f;
      std::vector<float> lg(c.L);
      for (int l = 0; l < c.L; ++l) mx = std::max(mx, lg[l] = nd(gen));
      float s = 0.f;
      for (int l = 0; l < c.L; ++l) s += (lg[l] = std::exp(lg[l] - mx));
      for (int l = 0; l < c.L; ++l) probs[((size_t)b * c.L + l) * N + i] = lg[l] / s;
      const int x = (int)(i % c.W), y = (int)(i / c.W);
      int v[3] = {x * 255 / std::max(c.W - 1, 1), y * 255 / std::max(c.H - 1, 1), ((x / 7 + y / 5 + b) % 2) ? 40 : 200};
      for (int k = 0; k < 3; ++k)
        rgb[((size_t)b * N + i) * 3 + k] = (uint8_t)(c.noise ? ud(gen) : std::min(255, std::max(0, v[k] + jitter(gen))));
    }
  }
}

__global__ void marker() {}

struct DeviceRun {
  float *probs = nullptr, *out = nullptr, *out2 = nullptr;
  bool flip = false;
  uint8_t* rgb = nullptr;
  void* ws = nullptr;
  size_t ws_bytes = 0;
  cudaStream_t stream = nullptr;
  const Case& c;
  DeviceRun(const Case& cs, const std::vector<float>& p, const std::vector<uint8_t>& im) : c(cs) {
    ws_bytes = pyseg::cuda::dense_crf_workspace_bytes(c.B, c.L, c.H, c.W, 0);
    CK(cudaMalloc(&probs, p.size() * 4));
    CK(cudaMalloc(&out, p.size() * 4));
    CK(cudaMalloc(&out2, p.size() * 4));
    CK(cudaMalloc(&rgb, im.size()));
    CK(cudaMalloc(&ws, ws_bytes));
    CK(cudaMemcpy(probs, p.data(), p.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(rgb, im.data(), im.size(), cudaMemcpyHostToDevice));
    CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~DeviceRun() {
    cudaFree(probs);
    cudaFree(out);
    cudaFree(out2);
    cudaFree(rgb);
    cudaFree(ws);
    cudaStreamDestroy(stream);
  }
  void launch() {
    pyseg::cuda::dense_crf_images(c.B, c.L, c.H, c.W, probs, rgb, c.prm, c.iterations, out, ws, ws_bytes, stream, 0);
  }
  void launch_flip() {  // alternates the output buffer: the cached graph must be updated every call
    flip = !flip;
    pyseg::cuda::dense_crf_images(c.B, c.L, c.H, c.W, probs, rgb, c.prm, c.iterations, flip ? out2 : out, ws,
                                  ws_bytes, stream, 0);
  }
  std::vector<float> run(size_t n) {
    CK(cudaMemsetAsync(out, 0xFF, n * 4, stream));  // NaN poison
    launch();
    CK(cudaStreamSynchronize(stream));
    std::vector<float> h(n);
    CK(cudaMemcpy(h.data(), out, n * 4, cudaMemcpyDeviceToHost));
    return h;
  }
};

bool check_case(const Case& c, unsigned seed) {
  std::vector<float> probs;
  std::vector<uint8_t> rgb;
  make_inputs(c, seed, probs, rgb);
  const size_t n = probs.size();
  std::vector<float> emu(n);
  int32_t counts[3];
  int64_t launches = 0;
  pyseg::cuda::run_dense_crf_host(c.B, c.L, c.H, c.W, probs.data(), rgb.data(), c.prm, c.iterations, emu.data(), counts,
                                  &launches);
  DeviceRun dr(c, probs, rgb);
  const std::vector<float> a = dr.run(n), b = dr.run(n);
  double maxdiff = 0.0;
  size_t argmax_eq = 0, pix = (size_t)c.B * c.H * c.W, bad = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) ++bad;
    maxdiff = std::max(maxdiff, (double)std::fabs(a[i] - emu[i]));
  }
  const size_t N = (size_t)c.H * c.W;
  for (int bb = 0; bb < c.B; ++bb)
    for (size_t i = 0; i < N; ++i) {
      int ga = 0, ge = 0;
      for (int l = 1; l < c.L; ++l) {
        if (a[((size_t)bb * c.L + l) * N + i] > a[((size_t)bb * c.L + ga) * N + i]) ga = l;
        if (emu[((size_t)bb * c.L + l) * N + i] > emu[((size_t)bb * c.L + ge) * N + i]) ge = l;
      }
      argmax_eq += ga == ge;
    }
  // Launched inside the caller's own stream capture: the kernels go into the caller's graph (no graph of
  // ours); replaying it must give the same output.
  CK(cudaMemsetAsync(dr.out, 0xFF, n * 4, dr.stream));
  cudaGraph_t user_graph = nullptr;
  cudaGraphExec_t user_exec = nullptr;
  CK(cudaStreamBeginCapture(dr.stream, cudaStreamCaptureModeGlobal));
  dr.launch();
  CK(cudaStreamEndCapture(dr.stream, &user_graph));
  CK(cudaGraphInstantiate(&user_exec, user_graph, 0));
  CK(cudaGraphLaunch(user_exec, dr.stream));
  CK(cudaStreamSynchronize(dr.stream));
  std::vector<float> captured(n);
  CK(cudaMemcpy(captured.data(), dr.out, n * 4, cudaMemcpyDeviceToHost));
  CK(cudaGraphExecDestroy(user_exec));
  CK(cudaGraphDestroy(user_graph));
  const bool same = std::memcmp(a.data(), b.data(), n * 4) == 0 && std::memcmp(a.data(), captured.data(), n * 4) == 0;
  const bool ok = bad == 0 && maxdiff <= 1e-4 && argmax_eq >= pix * 999 / 1000 && same;
  std::printf("%-4s B=%d L=%2d %3dx%-3d it=%d %s  vertices=%d (lattice0 %d) pieces=%d  max|gpu-emu|=%.2e argmax=%.5f "
              "bitwise-repeat (graph, again, caller's capture)=%s nonfinite=%zu\n",
              ok ? "ok" : "FAIL", c.B, c.L, c.H, c.W, c.iterations, c.noise ? "noise " : "smooth", counts[0], counts[1],
              counts[2], maxdiff, (double)argmax_eq / pix, same ? "yes" : "NO", bad);
  return ok;
}

double time_ms(DeviceRun& dr, int warmup, int reps, bool flip = false) {
  for (int i = 0; i < warmup; ++i) flip ? dr.launch_flip() : dr.launch();
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  std::vector<float> t;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(e0, dr.stream));
    flip ? dr.launch_flip() : dr.launch();
    CK(cudaEventRecord(e1, dr.stream));
    CK(cudaEventSynchronize(e1));
    float ms = 0.f;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    t.push_back(ms);
  }
  std::sort(t.begin(), t.end());
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return t[t.size() / 2];
}

}  // namespace

int run(int argc, char** argv) {
  const bool bench = argc > 1 && (std::strcmp(argv[1], "--bench") == 0 || std::strcmp(argv[1], "--profile") == 0);
  const bool small = argc > 1 && std::strcmp(argv[1], "--small") == 0;  // for compute-sanitizer
  const pyseg::crf::ImageParams kr{3.f, 3.f, 80.f, 13.f, 10.f}, dl{1.f, 3.f, 67.f, 3.f, 4.f};
  bool ok = true;
  if (!bench) {
    const Case cases[] = {{2, 5, 24, 40, kr, 3, false},  {1, 11, 33, 47, dl, 2, false}, {3, 11, 16, 21, kr, 1, true},
                          {1, 37, 17, 19, kr, 2, false}, {2, 1, 9, 13, dl, 2, true},    {1, 4, 1, 1, kr, 3, false},
                          {1, 3, 20, 30, kr, 0, false}};
    unsigned seed = 1;
    const int n_cases = small ? 3 : (int)(sizeof(cases) / sizeof(cases[0]));
    for (int i = 0; i < n_cases; ++i) ok = check_case(cases[i], seed++) && ok;
    std::printf(ok ? "standalone check: all ok\n" : "standalone check: FAILED\n");
    return ok ? 0 : 1;
  }
  const Case big{1, 11, 512, 512, kr, 10, false}, batch{64, 11, 256, 256, kr, 10, false};
  if (std::strcmp(argv[1], "--profile") == 0) {
    setenv("PYSEG_CUDA_GRAPHS", "0", 1);
    for (const Case* c : {&big, &batch}) {
      std::vector<float> probs;
      std::vector<uint8_t> rgb;
      make_inputs(*c, 7, probs, rgb);
      DeviceRun dr(*c, probs, rgb);
      for (int rep = 0; rep < 2; ++rep) {
        dr.launch();
        marker<<<1, 1, 0, dr.stream>>>();
        CK(cudaStreamSynchronize(dr.stream));
      }
    }
    std::printf("profile runs done\n");
    return 0;
  }
  for (const Case* c : {&big, &batch}) {
    std::vector<float> probs;
    std::vector<uint8_t> rgb;
    make_inputs(*c, 7, probs, rgb);
    Case one = *c;
    one.iterations = 1;
    DeviceRun dr(*c, probs, rgb), d1(one, probs, rgb);
    const char* modes[3] = {"graph", "graph, new output each call", "kernel by kernel"};
    for (int mode = 0; mode < 3; ++mode) {
      if (mode == 2) setenv("PYSEG_CUDA_GRAPHS", "0", 1);
      const double ms = time_ms(dr, 5, 30, mode == 1);
      const double ms1 = time_ms(d1, 5, 30, mode == 1);
      std::printf("standalone bench B=%d %dx%d L=%d it=%d (%s): %.3f ms (median of 30)  it=1: %.3f ms  "
                  "per-iteration %.1f us  %.0f images/s  workspace %.1f MiB\n",
                  c->B, c->H, c->W, c->L, c->iterations, modes[mode], ms, ms1,
                  (ms - ms1) / (c->iterations - 1) * 1e3, c->B / (ms * 1e-3), dr.ws_bytes / 1048576.0);
    }
    unsetenv("PYSEG_CUDA_GRAPHS");
  }
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "standalone check: error: %s\n", e.what());
    return 2;
  }
}
