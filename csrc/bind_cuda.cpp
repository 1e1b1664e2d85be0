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

// The CRF layer's lattice filter (pyseg.crf.cuda_layer owns its memory as torch tensors).
class PyLatticeOp {
 public:
  PyLatticeOp(int64_t b, int64_t h, int64_t w, float gaussian_sxy, float bilateral_sxy, float bilateral_srgb,
              int device)
      : op_(b, h, w, gaussian_sxy, bilateral_sxy, bilateral_srgb, device) {}
  void build_vertices(std::uintptr_t rgb, std::uintptr_t work, std::uintptr_t scratch, std::uintptr_t fixed,
                      std::uintptr_t stream) {
    py::gil_scoped_release release;  // waits for the GPU (the vertex counts)
    op_.build_vertices(reinterpret_cast<const uint8_t*>(rgb), reinterpret_cast<void*>(work),
                       reinterpret_cast<void*>(scratch), reinterpret_cast<void*>(fixed),
                       reinterpret_cast<void*>(stream));
  }
  void build_finish(std::uintptr_t vertex, std::uintptr_t tmp, std::uintptr_t stream) {
    py::gil_scoped_release release;
    op_.build_finish(reinterpret_cast<void*>(vertex), reinterpret_cast<void*>(tmp), reinterpret_cast<void*>(stream));
  }
  void apply(std::uintptr_t in0, std::uintptr_t in1, int64_t ld_in, std::uintptr_t out0, std::uintptr_t out1,
             int64_t ld_out, int c, bool adjoint, std::uintptr_t tmp, std::size_t tmp_bytes, std::uintptr_t stream) {
    py::gil_scoped_release release;
    op_.apply(reinterpret_cast<const float*>(in0), reinterpret_cast<const float*>(in1), ld_in,
              reinterpret_cast<float*>(out0), reinterpret_cast<float*>(out1), ld_out, c, adjoint,
              reinterpret_cast<void*>(tmp), tmp_bytes, reinterpret_cast<void*>(stream));
  }
  pyseg::cuda::LatticeOpCuda op_;
};

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
  py::class_<PyLatticeOp>(m, "LatticeOp",
                          "Both pairwise terms' lattice filters of a batch on the GPU, forward and adjoint "
                          "(pyseg.crf.cuda_layer); device pointers as integers, memory owned by the caller.")
      .def(py::init<int64_t, int64_t, int64_t, float, float, float, int>(), py::arg("b"), py::arg("h"), py::arg("w"),
           py::arg("gaussian_sxy"), py::arg("bilateral_sxy"), py::arg("bilateral_srgb"), py::arg("device"))
      .def_property_readonly("work_bytes", [](const PyLatticeOp& o) { return o.op_.work_bytes(); })
      .def_property_readonly("scratch_bytes", [](const PyLatticeOp& o) { return o.op_.scratch_bytes(); })
      .def_property_readonly("fixed_bytes", [](const PyLatticeOp& o) { return o.op_.fixed_bytes(); })
      .def_property_readonly("vertex_bytes", [](const PyLatticeOp& o) { return o.op_.vertex_bytes(); })
      .def_property_readonly("build_tmp_bytes", [](const PyLatticeOp& o) { return o.op_.build_tmp_bytes(); })
      .def("apply_bytes", [](const PyLatticeOp& o, int c, bool two) { return o.op_.apply_bytes(c, two); },
           py::arg("c"), py::arg("two_inputs"))
      .def("build_vertices", &PyLatticeOp::build_vertices, py::arg("image"), py::arg("work"), py::arg("scratch"),
           py::arg("fixed"), py::arg("stream"))
      .def("build_finish", &PyLatticeOp::build_finish, py::arg("vertex"), py::arg("tmp"), py::arg("stream"))
      .def("apply", &PyLatticeOp::apply, py::arg("in0"), py::arg("in1"), py::arg("ld_in"), py::arg("out0"),
           py::arg("out1"), py::arg("ld_out"), py::arg("c"), py::arg("adjoint"), py::arg("tmp"), py::arg("tmp_bytes"),
           py::arg("stream"))
      .def_property_readonly("vertices", [](const PyLatticeOp& o) { return o.op_.vertices(); })
      .def_property_readonly("gaussian_vertices", [](const PyLatticeOp& o) { return o.op_.gaussian_vertices(); })
      .def_property_readonly("pieces", [](const PyLatticeOp& o) { return o.op_.pieces(); });
  m.def("device_sm_count", &pyseg::cuda::device_sm_count, py::arg("device"));
}
