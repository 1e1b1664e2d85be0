// dense_crf_images: the pyseg way in (a batch of images, the preset's two pairwise terms), threads across images or
// within each.
#include <atomic>
#include <stdexcept>
#include <string>

#include "cpu/crf_cpu.h"
#include "cpu/profile.h"
#include "crf/common.h"

namespace pyseg {
namespace cpu {

void dense_crf_images(int64_t b, int labels, int h, int w, const float* probs, const uint8_t* rgb,
                      const crf::ImageParams& prm, int iterations, float* out, int threads) {
  if (b < 1 || labels < 1 || h < 1 || w < 1)
    throw std::invalid_argument("dense_crf needs at least one image, label and pixel");
  if (iterations < 0) throw std::invalid_argument("iterations must be >= 0, got " + std::to_string(iterations));
  const int64_t n = (int64_t)h * w;
  const int64_t per = n * labels;
  auto run_one = [&](int64_t i, Executor& ex) {
    PYSEG_PROFILE_CLOCK(prof, "image");
    DenseCrf crf(n, labels);
    if (prm.gaussian_compat != 0.0f) {
      CompatSpec c;
      c.w = prm.gaussian_compat;
      crf.add_gaussian(w, h, prm.gaussian_sxy, prm.gaussian_sxy, c, crf::NORMALIZE_SYMMETRIC, ex);
    }
    if (prm.bilateral_compat != 0.0f) {
      CompatSpec c;
      c.w = prm.bilateral_compat;
      crf.add_bilateral(w, h, prm.bilateral_sxy, prm.bilateral_sxy, prm.bilateral_srgb, prm.bilateral_srgb,
                        prm.bilateral_srgb, rgb + i * n * 3, c, crf::NORMALIZE_SYMMETRIC, ex);
    }
    PYSEG_PROFILE_TICK(prof, "terms");
    if (iterations > 0 && crf.can_splat_unary()) {
      // The unary and the first splat in one pass: no starting-Q buffer.
      crf.set_unary_from_probs_splat(probs + i * per, 1e-5f, 1e-3f, ex);
      PYSEG_PROFILE_TICK(prof, "unary+splat");
      crf.iterate(nullptr, iterations, ex, out + i * per);
    } else {
      WsArray<float> qp((size_t)n * crf.lp());
      crf.set_unary_from_probs(probs + i * per, 1e-5f, 1e-3f, qp.get(), ex);
      PYSEG_PROFILE_TICK(prof, "unary");
      crf.iterate(qp.get(), iterations, ex, out + i * per);
    }
    PYSEG_PROFILE_TICK(prof, "iterate");
  };
  with_executor(threads, [&](Executor& ex) {
    const int t = ex.threads();
    if (t > 1 && b >= t) {
      std::atomic<int64_t> next{0};
      ex.run(t, [&](int) {
        SerialExecutor serial;
        for (int64_t i = next.fetch_add(1); i < b; i = next.fetch_add(1)) run_one(i, serial);
      });
    } else {
      for (int64_t i = 0; i < b; ++i) run_one(i, ex);
    }
  });
}

}  // namespace cpu
}  // namespace pyseg
