// The CUDA pipeline's host emulation as a program (tests/test_crf_cuda.py and scripts/crf_fingerprint.py build it
// with g++): argv B L H W gaussian_sxy gaussian_compat bilateral_sxy bilateral_srgb bilateral_compat iterations
// probs.bin rgb.bin out.bin; prints the counts (M, M0, pieces) and the launches; exit 4 with the error on stderr.
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "cuda/host_exec.cuh"
int main(int argc, char** argv) {
  if (argc != 14) return 2;
  long B = atol(argv[1]), L = atol(argv[2]), H = atol(argv[3]), W = atol(argv[4]);
  const pyseg::crf::ImageParams prm{(float)atof(argv[5]), (float)atof(argv[6]), (float)atof(argv[7]),
                                    (float)atof(argv[8]), (float)atof(argv[9])};
  const int iterations = atoi(argv[10]);
  size_t np_ = (size_t)(B * L * H * W), nr = (size_t)(B * H * W * 3);
  std::vector<float> probs(np_), out(np_, -7.0f);
  std::vector<uint8_t> rgb(nr);
  FILE* f = fopen(argv[11], "rb");
  if (!f || fread(probs.data(), 4, np_, f) != np_) return 3;
  fclose(f);
  f = fopen(argv[12], "rb");
  if (!f || fread(rgb.data(), 1, nr, f) != nr) return 3;
  fclose(f);
  int32_t counts[3];
  int64_t launches = 0;
  try {
    pyseg::cuda::run_dense_crf_host(B, L, H, W, probs.data(), rgb.data(), prm, iterations, out.data(), counts, &launches);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 4;
  }
  f = fopen(argv[13], "wb");
  fwrite(out.data(), 4, np_, f);
  fclose(f);
  std::printf("%d %d %d %lld\n", counts[0], counts[1], counts[2], (long long)launches);
  return 0;
}
