// pybind11 module pyseg.crf._crf_cpu: array checks, GIL release, calls into the CPU driver.
// std::invalid_argument -> ValueError (pybind11's default translation); wrong dtypes -> TypeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cpu/crf_cpu.h"
#include "cpu/fast_paths.h"
#include "cpu/lattice_op.h"
#include "cpu/ops.h"
#include "cpu/thread_pool.h"
#include "crf/common.h"

namespace py = pybind11;
using pyseg::cpu::CompatSpec;
using pyseg::cpu::DenseCrf;

namespace {

std::string shape_str(const py::array& a) {
  std::ostringstream os;
  os << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) os << (i ? ", " : "") << a.shape(i);
  os << (a.ndim() == 1 ? ",)" : ")");
  return os.str();
}

template <class T>
bool has_dtype(const py::array& a) {
  return py::dtype::of<T>().is(a.dtype()) || a.dtype().num() == py::dtype::of<T>().num();
}

template <class T>
void require(const py::array& a, const char* name, int ndim, const char* dtype_name) {
  if (!has_dtype<T>(a)) {
    throw py::type_error(std::string(name) + " must be a " + dtype_name + " array, got dtype " +
                         std::string(py::str(a.dtype())));
  }
  if (ndim >= 0 && a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got shape " +
                          shape_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous (use numpy.ascontiguousarray)");
  if (a.size() == 0) throw py::value_error(std::string(name) + " must not be empty, got shape " + shape_str(a));
}

CompatSpec make_compat(int type, float w, const py::object& values, int labels) {
  CompatSpec c;
  c.type = type;
  c.w = w;
  if (type != pyseg::crf::COMPAT_POTTS) {
    py::array a = py::array::ensure(values);
    if (!a) throw py::type_error("compatibility values must be an array");
    require<float>(a, "compatibility", -1, "float32");
    const float* p = static_cast<const float*>(a.data());
    c.values.assign(p, p + a.size());
    (void)labels;
  }
  return c;
}

class PyDenseCrf {
 public:
  PyDenseCrf(int64_t n, int labels) : crf_(n, labels) {}

  void set_unary(const py::array& u) {
    require<float>(u, "unary", 2, "float32");
    if (u.shape(0) != crf_.labels() || u.shape(1) != crf_.n())
      throw py::value_error("unary must have shape (" + std::to_string(crf_.labels()) + ", " +
                            std::to_string(crf_.n()) + "), got " + shape_str(u));
    const float* p = static_cast<const float*>(u.data());
    py::gil_scoped_release nogil;
    crf_.set_unary(p);
  }

  void add_features(const py::array& f, int ctype, float w, const py::object& cvals, int norm, int threads) {
    require<float>(f, "features", 2, "float32");
    if (f.shape(1) != crf_.n())
      throw py::value_error("features must have shape (d, " + std::to_string(crf_.n()) + "), got " + shape_str(f));
    CompatSpec c = make_compat(ctype, w, cvals, crf_.labels());
    pyseg::cpu::ArrayFeatures af{static_cast<const float*>(f.data()), (int)f.shape(0), (int64_t)f.shape(1)};
    py::gil_scoped_release nogil;
    pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) { crf_.add_term(af, c, norm, ex); });
  }

  void add_gaussian(int width, int height, float sx, float sy, int ctype, float w, const py::object& cvals, int norm,
                    int threads) {
    CompatSpec c = make_compat(ctype, w, cvals, crf_.labels());
    py::gil_scoped_release nogil;
    pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) {
      crf_.add_gaussian(width, height, sx, sy, c, norm, ex);
    });
  }

  void add_bilateral(int width, int height, float sx, float sy, float sr, float sg, float sb, const py::array& rgb,
                     int ctype, float w, const py::object& cvals, int norm, int threads) {
    require<uint8_t>(rgb, "rgbim", 3, "uint8");
    if (rgb.shape(0) != height || rgb.shape(1) != width || rgb.shape(2) != 3)
      throw py::value_error("rgbim must have shape (" + std::to_string(height) + ", " + std::to_string(width) +
                            ", 3), got " + shape_str(rgb));
    CompatSpec c = make_compat(ctype, w, cvals, crf_.labels());
    const uint8_t* p = static_cast<const uint8_t*>(rgb.data());
    py::gil_scoped_release nogil;
    pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) {
      crf_.add_bilateral(width, height, sx, sy, sr, sg, sb, p, c, norm, ex);
    });
  }

  py::array_t<float> inference(int iterations, int threads) {
    if (iterations < 0) throw py::value_error("iterations must be >= 0, got " + std::to_string(iterations));
    py::array_t<float> out({(py::ssize_t)crf_.labels(), (py::ssize_t)crf_.n()});
    float* o = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) { crf_.inference(iterations, o, ex); });
    }
    return out;
  }

  py::array_t<float> start_inference(int threads) {
    py::array_t<float> out({(py::ssize_t)crf_.labels(), (py::ssize_t)crf_.n()});
    float* o = out.mutable_data();
    {
      py::gil_scoped_release nogil;
      pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) { crf_.start_inference(o, ex); });
    }
    return out;
  }

  void check_q(const py::array& q) {
    require<float>(q, "Q", 2, "float32");
    if (q.shape(0) != crf_.labels() || q.shape(1) != crf_.n())
      throw py::value_error("Q must have shape (" + std::to_string(crf_.labels()) + ", " + std::to_string(crf_.n()) +
                            "), got " + shape_str(q));
  }

  void step_inference(py::array q, int threads) {
    check_q(q);
    if (!q.writeable()) throw py::value_error("Q must be writeable (it is updated in place)");
    float* p = static_cast<float*>(q.mutable_data());
    py::gil_scoped_release nogil;
    pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) { crf_.step_inference(p, ex); });
  }

  double kl_divergence(const py::array& q, int threads) {
    check_q(q);
    const float* p = static_cast<const float*>(q.data());
    double r = 0.0;
    py::gil_scoped_release nogil;
    pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) { r = crf_.kl_divergence(p, ex); });
    return r;
  }

  int64_t n() const { return crf_.n(); }
  int labels() const { return crf_.labels(); }
  int num_kernels() const { return crf_.num_terms(); }  // pydensecrf calls a pairwise term a kernel
  bool has_unary() const { return crf_.has_unary(); }

 private:
  DenseCrf crf_;
};

py::array_t<float> dense_crf(const py::array& probs, const py::array& image, float gaussian_sxy, float gaussian_compat,
                             float bilateral_sxy, float bilateral_srgb, float bilateral_compat, int iterations,
                             int threads) {
  require<float>(probs, "probs", 4, "float32");
  require<uint8_t>(image, "image", 4, "uint8");
  const py::ssize_t b = probs.shape(0), l = probs.shape(1), h = probs.shape(2), w = probs.shape(3);
  if (image.shape(0) != b || image.shape(1) != h || image.shape(2) != w || image.shape(3) != 3)
    throw py::value_error("image must have shape (" + std::to_string(b) + ", " + std::to_string(h) + ", " +
                          std::to_string(w) + ", 3) to match probs " + shape_str(probs) + ", got " +
                          shape_str(image));
  if (h > (1 << 20) || w > (1 << 20) || l > (1 << 20)) throw py::value_error("probs too large: " + shape_str(probs));
  if (iterations < 0) throw py::value_error("iterations must be >= 0, got " + std::to_string(iterations));
  py::array_t<float> out({b, l, h, w});
  const float* pp = static_cast<const float*>(probs.data());
  const uint8_t* ip = static_cast<const uint8_t*>(image.data());
  float* op = out.mutable_data();
  const pyseg::crf::ImageParams prm{gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb, bilateral_compat};
  {
    py::gil_scoped_release nogil;
    pyseg::cpu::dense_crf_images(b, (int)l, (int)h, (int)w, pp, ip, prm, iterations, op, threads);
  }
  return out;
}

// The normalised lattice filter of one pairwise term and its adjoint, for pyseg.crf.layer.
class PyLatticeFilter {
 public:
  static PyLatticeFilter from_features(const py::array& f, int normalization, int threads) {
    require<float>(f, "features", 2, "float32");
    if (f.shape(0) < 1 || f.shape(0) > pyseg::crf::kMaxDim)
      throw py::value_error("features must be (d, n) with 1 <= d <= " + std::to_string(pyseg::crf::kMaxDim) +
                            ", got " + shape_str(f));
    pyseg::cpu::ArrayFeatures af{static_cast<const float*>(f.data()), (int)f.shape(0), (int64_t)f.shape(1)};
    return build(threads, [&](pyseg::cpu::Executor& ex) {
      return std::make_unique<pyseg::cpu::LatticeOp>(af, normalization, ex);
    });
  }
  static PyLatticeFilter gaussian(int width, int height, float sxy, int normalization, int threads) {
    check_size(width, height);
    check_sigma("sxy", sxy);
    return build(threads, [&](pyseg::cpu::Executor& ex) {
      return std::make_unique<pyseg::cpu::LatticeOp>((int64_t)width * height,
                                                     pyseg::cpu::GaussianImageFeatures{width, sxy, sxy},
                                                     normalization, ex);
    });
  }
  static PyLatticeFilter bilateral(const py::array& rgb, float sxy, float srgb, int normalization, int threads) {
    require<uint8_t>(rgb, "image", 3, "uint8");
    if (rgb.shape(2) != 3) throw py::value_error("image must be (H, W, 3) uint8 RGB, got shape " + shape_str(rgb));
    check_sigma("sxy", sxy);
    check_sigma("srgb", srgb);
    const int height = (int)rgb.shape(0), width = (int)rgb.shape(1);
    const uint8_t* p = static_cast<const uint8_t*>(rgb.data());
    return build(threads, [&](pyseg::cpu::Executor& ex) {
      return std::make_unique<pyseg::cpu::LatticeOp>(
          (int64_t)width * height, pyseg::cpu::BilateralImageFeatures{width, sxy, sxy, srgb, srgb, srgb, p},
          normalization, ex);
    });
  }

  // float32 rows give float32, float64 rows float64 (the same lattice, every sum in double).
  py::array apply(const py::array& values, bool adjoint, int threads) const {
    if (has_dtype<double>(values)) return apply_as<double>(values, adjoint, threads);
    return apply_as<float>(values, adjoint, threads);
  }
  int64_t n() const { return op_->n(); }
  int d() const { return op_->d(); }
  int vertices() const { return op_->vertices(); }

 private:
  template <typename T>
  py::array_t<T> apply_as(const py::array& values, bool adjoint, int threads) const {
    require<T>(values, "values", 2, "float32 or float64");
    if (values.shape(0) != op_->n())
      throw py::value_error("values must be (n, c) with n = " + std::to_string(op_->n()) + " points, got " +
                            shape_str(values));
    const int c = (int)values.shape(1);
    py::array_t<T> out({(py::ssize_t)op_->n(), (py::ssize_t)c});
    const T* in = static_cast<const T*>(values.data());
    T* o = out.mutable_data();
    py::gil_scoped_release nogil;
    pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) { op_->apply(in, o, c, adjoint, ex); });
    return out;
  }
  template <class Make>
  static PyLatticeFilter build(int threads, const Make& make) {
    PyLatticeFilter r;
    py::gil_scoped_release nogil;
    pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) { r.op_ = make(ex); });
    return r;
  }
  static void check_size(int width, int height) {
    if (width < 1 || height < 1)
      throw py::value_error("width and height must be >= 1, got " + std::to_string(width) + " x " +
                            std::to_string(height));
  }
  static void check_sigma(const char* name, float v) {
    if (!(v > 0.0f) || !std::isfinite(v))
      throw py::value_error(std::string(name) + " must be finite and > 0, got " + std::to_string(v));
  }
  std::shared_ptr<const pyseg::cpu::LatticeOp> op_;
};

}  // namespace

PYBIND11_MODULE(_crf_cpu, m) {
  m.doc() = "pyseg dense CRF, CPU backend (permutohedral lattice, mean-field inference)";
  m.attr("MAX_FEATURE_DIM") = pyseg::crf::kMaxDim;
  m.attr("COMPAT_POTTS") = (int)pyseg::crf::COMPAT_POTTS;
  m.attr("COMPAT_DIAGONAL") = (int)pyseg::crf::COMPAT_DIAGONAL;
  m.attr("COMPAT_MATRIX") = (int)pyseg::crf::COMPAT_MATRIX;

  m.def("dense_crf", &dense_crf, py::arg("probs"), py::arg("image"), py::arg("gaussian_sxy"),
        py::arg("gaussian_compat"), py::arg("bilateral_sxy"), py::arg("bilateral_srgb"), py::arg("bilateral_compat"),
        py::arg("iterations"), py::arg("threads") = 0,
        "probs (B, L, H, W) float32, image (B, H, W, 3) uint8 -> (B, L, H, W) float32 probabilities.");
  m.def("set_num_threads", &pyseg::cpu::set_default_threads, py::arg("n"),
        "Default threads for the CPU backend (n <= 0: all cores).");
  m.def("get_num_threads", &pyseg::cpu::default_threads);
  m.def("release_memory",
        [] {
          pyseg::cpu::release_lattice_cache();  // its lattices' buffers go to the work-buffer cache, then to the OS
          return pyseg::cpu::release_cached_memory();
        },
        "Returns the CPU backend's cached work buffers and Gaussian lattices to the OS; returns the bytes released.");
  m.def("cached_bytes", [] { return pyseg::cpu::cached_bytes() + pyseg::cpu::lattice_cache_bytes(); });
  m.def("set_lattice_cache_limits", &pyseg::cpu::set_lattice_cache_limits, py::arg("entries"), py::arg("max_bytes"),
        "Gaussian lattices (one per image size, sigma and normalisation) kept for reuse: at most `entries` (0 = "
        "none) of at most max_bytes in all.");
  m.def("lattice_cache_entries", &pyseg::cpu::lattice_cache_entries);
  m.def("release_lattice_cache", &pyseg::cpu::release_lattice_cache,
        "Empties the Gaussian lattice cache (its buffers stay in the work-buffer cache); returns its bytes.");
  m.def("gaussian_lattice_uses_grid",
        [](int width, int height, float sx, float sy) {
          return pyseg::cpu::gaussian_lattice_uses_grid((int64_t)width * height,
                                                        pyseg::cpu::GaussianImageFeatures{width, sx, sy});
        },
        py::arg("width"), py::arg("height"), py::arg("sx"), py::arg("sy"),
        "Whether the Gaussian lattice of this image size numbers its vertices through dense key grids (faster) "
        "rather than hash tables; both build the same lattice.");
  m.def(
      "_pool_check",
      [](int threads, int nchunks, int slow_below, int work_us, int throw_at) {
        // For the tests of the thread pool: Executor::run over nchunks chunks on `threads` threads. Chunks below
        // slow_below spin for work_us microseconds first (so that the other threads run out of their own share
        // and take them); chunk throw_at throws. Returns, per chunk, how many times it ran and whether the
        // calling thread ran it.
        if (threads < 1 || threads > 64 || nchunks < 0 || nchunks > 100000 || work_us < 0 || work_us > 1000000)
          throw std::invalid_argument("_pool_check expects 1 <= threads <= 64, 0 <= nchunks <= 100000 and 0 <= "
                                      "work_us <= 1000000, got " + std::to_string(threads) + ", " +
                                      std::to_string(nchunks) + ", " + std::to_string(work_us));
        std::vector<std::atomic<int>> counts(nchunks), on_caller(nchunks);
        const std::thread::id caller = std::this_thread::get_id();
        {
          py::gil_scoped_release nogil;
          pyseg::cpu::with_executor(threads, [&](pyseg::cpu::Executor& ex) {
            ex.run(nchunks, [&](int c) {
              if (c < slow_below) {
                const auto t0 = std::chrono::steady_clock::now();
                while (std::chrono::steady_clock::now() - t0 < std::chrono::microseconds(work_us)) {
                }
              }
              counts[c].fetch_add(1);
              on_caller[c].store(std::this_thread::get_id() == caller ? 1 : 0);
              if (c == throw_at) throw std::runtime_error("chunk " + std::to_string(c) + " failed");
            });
          });
        }
        std::vector<int> ran, by_caller;
        for (int c = 0; c < nchunks; ++c) {
          ran.push_back(counts[c].load());
          by_caller.push_back(on_caller[c].load());
        }
        return py::make_tuple(ran, by_caller);
      },
      py::arg("threads"), py::arg("nchunks"), py::arg("slow_below") = 0, py::arg("work_us") = 0,
      py::arg("throw_at") = -1, "Test hook of the thread pool (see tests/test_crf_pool.py).");
  m.def("isa", [] { return std::string(pyseg::cpu::best_ops().name); },
        "Instruction set of the CPU ops in use (avx2 or sse2; PYSEG_CPU_ISA=sse2 forces the baseline).");
  m.def(
      "_fast_path_counts",
      [] {
        const auto& c = pyseg::cpu::fast_path_counts();
        py::dict d;
        d["update_pixels_sse2"] = c.update_pixels[0].load();
        d["update_pixels_avx2"] = c.update_pixels[1].load();
        d["lattice_points8"] = c.lattice_points8.load();
        return d;
      },
      "Test hook: work done so far by the fast paths that have a slower twin (see cpu/fast_paths.h).");

  py::class_<PyLatticeFilter>(m, "LatticeFilter",
                              "One pairwise term's normalised lattice filter as a linear map on (n, c) float32 or "
                              "float64 rows, and its adjoint (pyseg.crf.layer).")
      .def_static("from_features", &PyLatticeFilter::from_features, py::arg("features"), py::arg("normalization"),
                  py::arg("threads") = 0)
      .def_static("gaussian", &PyLatticeFilter::gaussian, py::arg("width"), py::arg("height"), py::arg("sxy"),
                  py::arg("normalization"), py::arg("threads") = 0)
      .def_static("bilateral", &PyLatticeFilter::bilateral, py::arg("image"), py::arg("sxy"), py::arg("srgb"),
                  py::arg("normalization"), py::arg("threads") = 0)
      .def("apply", &PyLatticeFilter::apply, py::arg("values"), py::arg("adjoint") = false, py::arg("threads") = 0)
      .def_property_readonly("n", &PyLatticeFilter::n)
      .def_property_readonly("d", &PyLatticeFilter::d)
      .def_property_readonly("vertices", &PyLatticeFilter::vertices);

  py::class_<PyDenseCrf>(m, "DenseCRF")
      .def(py::init<int64_t, int>(), py::arg("n_points"), py::arg("n_labels"))
      .def("set_unary", &PyDenseCrf::set_unary, py::arg("unary"))
      .def("add_features", &PyDenseCrf::add_features, py::arg("features"), py::arg("compat_type"), py::arg("w"),
           py::arg("compat_values"), py::arg("normalization"), py::arg("threads") = 0)
      .def("add_gaussian", &PyDenseCrf::add_gaussian, py::arg("width"), py::arg("height"), py::arg("sx"),
           py::arg("sy"), py::arg("compat_type"), py::arg("w"), py::arg("compat_values"), py::arg("normalization"),
           py::arg("threads") = 0)
      .def("add_bilateral", &PyDenseCrf::add_bilateral, py::arg("width"), py::arg("height"), py::arg("sx"),
           py::arg("sy"), py::arg("sr"), py::arg("sg"), py::arg("sb"), py::arg("rgbim"), py::arg("compat_type"),
           py::arg("w"), py::arg("compat_values"), py::arg("normalization"), py::arg("threads") = 0)
      .def("inference", &PyDenseCrf::inference, py::arg("iterations"), py::arg("threads") = 0)
      .def("start_inference", &PyDenseCrf::start_inference, py::arg("threads") = 0)
      .def("step_inference", &PyDenseCrf::step_inference, py::arg("Q"), py::arg("threads") = 0)
      .def("kl_divergence", &PyDenseCrf::kl_divergence, py::arg("Q"), py::arg("threads") = 0)
      .def_property_readonly("n_points", &PyDenseCrf::n)
      .def_property_readonly("n_labels", &PyDenseCrf::labels)
      .def_property_readonly("num_kernels", &PyDenseCrf::num_kernels)
      .def_property_readonly("has_unary", &PyDenseCrf::has_unary);
}
