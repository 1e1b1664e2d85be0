// pybind11 module pyseg.crf._crf_cuda: the CUDA dense CRF. Takes device pointers as integers (from
// torch.Tensor.data_ptr()), shapes and the CUDA stream as an integer; never links libtorch. The GIL is
// released while the work is queued (the call does not wait for the GPU).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cuda/api.cuh"

namespace py = pybind11;

namespace {

void dense_crf(std::uintptr_t probs, std::uintptr_t image, std::uintptr_t out, std::uintptr_t workspace,
               std::size_t workspace_bytes, int64_t b, int64_t labels, int64_t h, int64_t w, float gaussian_sxy,
               float gaussian_compat, float bilateral_sxy, float bilateral_srgb, float bilateral_compat,
               int iterations, std::uintptr_t stream, int device) {
  if (device < 0) throw std::invalid_argument("dense_crf_cuda: device index must be >= 0, got " + std::to_string(device));
  const pyseg::crf::ImageParams prm{gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
                                    bilateral_compat};
  py::gil_scoped_release release;
  pyseg::cuda::dense_crf_images(b, labels, h, w, reinterpret_cast<const float*>(probs),
                                reinterpret_cast<const uint8_t*>(image), prm, iterations,
                                reinterpret_cast<float*>(out), reinterpret_cast<void*>(workspace), workspace_bytes,
                                reinterpret_cast<void*>(stream), device);
}

std::size_t workspace_bytes(int64_t b, int64_t labels, int64_t h, int64_t w, int device) {
  if (device < 0) throw std::invalid_argument("dense_crf_cuda: device index must be >= 0, got " + std::to_string(device));
  py::gil_scoped_release release;
  return pyseg::cuda::dense_crf_workspace_bytes(b, labels, h, w, device);
}

}  // namespace

PYBIND11_MODULE(_crf_cuda, m) {
  m.doc() = "CUDA dense CRF (permutohedral lattice, batched). Use pyseg.crf.dense_crf(..., device='cuda').";
  m.def("dense_crf", &dense_crf, py::arg("probs"), py::arg("image"), py::arg("out"), py::arg("workspace"),
        py::arg("workspace_bytes"), py::arg("b"), py::arg("labels"), py::arg("h"), py::arg("w"),
        py::arg("gaussian_sxy"), py::arg("gaussian_compat"), py::arg("bilateral_sxy"), py::arg("bilateral_srgb"),
        py::arg("bilateral_compat"), py::arg("iterations"), py::arg("stream"), py::arg("device"),
        "Queues the CRF of a batch on `stream`: probs (b, labels, h, w) float32, image (b, h, w, 3) uint8 and "
        "out (b, labels, h, w) float32 are device pointers on `device`; workspace holds workspace_bytes(...) "
        "bytes, 256-byte aligned.");
  m.def("workspace_bytes", &workspace_bytes, py::arg("b"), py::arg("labels"), py::arg("h"), py::arg("w"),
        py::arg("device"), "Device scratch bytes one dense_crf call needs for these shapes.");
  m.def("device_sm_count", &pyseg::cuda::device_sm_count, py::arg("device"));
}
