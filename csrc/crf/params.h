// The CRF parameters of dense_crf (both presets' form): a Gaussian and a bilateral pairwise term with Potts
// weights (pydensecrf convention C(x) = -w x); a term with compat 0 is skipped. Shared by the CPU and CUDA
// drivers and the bindings (plain C++).
#pragma once

namespace pyseg {
namespace crf {

struct ImageParams {
  float gaussian_sxy, gaussian_compat;
  float bilateral_sxy, bilateral_srgb, bilateral_compat;
};

}  // namespace crf
}  // namespace pyseg
