"""A drop-in for pydensecrf's ``densecrf`` module: ``import pyseg.crf as dcrf`` instead of
``import pydensecrf.densecrf as dcrf`` keeps working code working (same classes, methods, constants and
results), with clear errors instead of crashes on bad input.

Arrays: unary (n_labels, n_points) float32; features (d, n_points) float32; rgbim (height, width, 3) uint8;
Q (n_labels, n_points) float32. Other float dtypes and non-contiguous arrays are converted (copied).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from pyseg.crf.backends import load_cpu
from pyseg.crf.checks import check_int

# Constants with pydensecrf's values.
CONST_KERNEL = 0
DIAG_KERNEL = 1
FULL_KERNEL = 2
NO_NORMALIZATION = 0
NORMALIZE_BEFORE = 1
NORMALIZE_AFTER = 2
NORMALIZE_SYMMETRIC = 3

_KERNELS = (CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL)
_NORMS = (NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC)


def _float_array(x, name: str, shape_hint: str) -> np.ndarray:
    """C-contiguous float32 copy/view of x; integer or other dtypes are an error."""
    a = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if a.dtype != np.float32:
        if a.dtype.kind != "f":
            raise TypeError(f"{name} must be a float32 array {shape_hint}, got dtype {a.dtype.name}"
                            + ("" if isinstance(x, np.ndarray) else f" from a {type(x).__name__}"))
        a = a.astype(np.float32)
    return np.ascontiguousarray(a)


def _sigmas(value, name: str, count: int) -> tuple[float, ...]:
    """A number (used for every axis) or `count` numbers, each finite and > 0."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        vals = (float(value),) * count
    else:
        try:
            vals = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or {count} numbers, got {type(value).__name__} {value!r}") \
                from None
        if len(vals) != count:
            raise ValueError(f"{name} must be a number or {count} numbers, got {len(vals)} values {value!r}")
    for v in vals:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} (sigma) must be finite and > 0, got {value!r}")
    return vals


def _compat(compat, n_labels: int) -> tuple[int, float, np.ndarray | None]:
    """(type, potts weight, values) for the C++ core: scalar -> Potts, 1-D -> diagonal, 2-D -> matrix."""
    cpu = load_cpu()
    if isinstance(compat, numbers.Real) and not isinstance(compat, bool):
        w = float(compat)
        if not math.isfinite(w):
            raise ValueError(f"compat must be finite, got {compat!r}")
        return cpu.COMPAT_POTTS, w, None
    if isinstance(compat, (str, bytes)) or compat is None:
        raise TypeError(f"compat must be a number, a 1-D vector or a 2-D matrix, got {type(compat).__name__} "
                        f"{compat!r}")
    a = np.asarray(compat)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"compat must be numeric, got dtype {a.dtype.name}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim == 1:
        if a.shape[0] != n_labels:
            raise ValueError(f"compat vector must have n_labels = {n_labels} entries, got {a.shape[0]}")
        kind = cpu.COMPAT_DIAGONAL
    elif a.ndim == 2:
        if a.shape != (n_labels, n_labels):
            raise ValueError(f"compat matrix must have shape ({n_labels}, {n_labels}), got {a.shape}")
        kind = cpu.COMPAT_MATRIX
    else:
        raise ValueError(f"compat must be a scalar, a 1-D vector or a 2-D matrix, got ndim {a.ndim} "
                         f"(shape {a.shape})")
    if not np.all(np.isfinite(a)):
        raise ValueError("compat entries must be finite, got nan or inf")
    return kind, 0.0, a.reshape(-1)


def _kernel_norm(kernel, normalization) -> int:
    if isinstance(kernel, bool) or not isinstance(kernel, numbers.Integral) or int(kernel) not in _KERNELS:
        raise ValueError(f"kernel must be CONST_KERNEL (0), DIAG_KERNEL (1) or FULL_KERNEL (2), got {kernel!r}")
    if isinstance(normalization, bool) or not isinstance(normalization, numbers.Integral) \
            or int(normalization) not in _NORMS:
        raise ValueError("normalization must be NO_NORMALIZATION (0), NORMALIZE_BEFORE (1), NORMALIZE_AFTER (2) "
                         f"or NORMALIZE_SYMMETRIC (3), got {normalization!r}")
    return int(normalization)


class DenseCRF:
    """Dense CRF over ``n_points`` points of any feature space (pydensecrf's ``DenseCRF``).

    Kernel type (DIAG/FULL/CONST) only matters for parameter learning in the reference and is accepted
    and ignored; inference is identical.
    """

    def __init__(self, n_points: int, n_labels: int):
        n_points = check_int(n_points, "n_points", 1)
        n_labels = check_int(n_labels, "n_labels", 1)
        self._n = n_points
        self._labels = n_labels
        self._crf = load_cpu().DenseCRF(n_points, n_labels)

    @property
    def n_points(self) -> int:
        return self._n

    @property
    def n_labels(self) -> int:
        return self._labels

    def setUnaryEnergy(self, u: Any, f: Any = None) -> None:
        """Unary energies U, float32 (n_labels, n_points) (e.g. ``unary_from_softmax``)."""
        if f is not None:
            raise NotImplementedError("learned unaries (setUnaryEnergy(u, f)) are not supported; pass energies")
        want = f"({self._labels}, {self._n})"
        a = _float_array(u, "unary", f"of shape {want}")
        if a.ndim != 2:
            raise ValueError(f"unary must be a 2-D array of shape {want} (n_labels, n_points), got shape "
                             f"{a.shape}")
        if a.shape != (self._labels, self._n):
            raise ValueError(f"unary must have shape {want} (n_labels, n_points), got {a.shape}")
        self._crf.set_unary(a)

    def addPairwiseEnergy(self, features: Any, compat: Any, kernel: int = DIAG_KERNEL,
                          normalization: int = NORMALIZE_SYMMETRIC) -> None:
        """A Gaussian kernel over features (d, n_points) float32 (already divided by their sigmas)."""
        norm = _kernel_norm(kernel, normalization)
        a = _float_array(features, "features", f"of shape (d, {self._n})")
        if a.ndim != 2:
            raise ValueError(f"features must be a 2-D array of shape (d, N) = (d, {self._n}), got shape {a.shape}")
        max_d = load_cpu().MAX_FEATURE_DIM
        if not 1 <= a.shape[0] <= max_d:
            raise ValueError(f"features must have 1..{max_d} feature dimensions (d), got d = {a.shape[0]} "
                             f"(shape {a.shape})")
        if a.shape[1] != self._n:
            raise ValueError(f"features must have shape (d, {self._n}), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("features must be finite, got nan or inf")
        kind, w, vals = _compat(compat, self._labels)
        self._crf.add_features(a, kind, w, vals, norm)

    def inference(self, n_iterations: int) -> np.ndarray:
        """Q after ``n_iterations`` mean-field steps from softmax(-U): (n_labels, n_points) float32."""
        n = check_int(n_iterations, "iterations", 0)
        return self._crf.inference(n)

    def startInference(self):
        """(Q, tmp1, tmp2) with Q = softmax(-U) (n_labels, n_points) float32, for ``stepInference``."""
        q = self._crf.start_inference()
        return q, np.empty((0, 0), np.float32), np.empty((0, 0), np.float32)

    def _q(self, q) -> np.ndarray:
        a = _float_array(q, "Q", f"of shape ({self._labels}, {self._n})")
        if a.shape != (self._labels, self._n):
            raise ValueError(f"Q must have shape ({self._labels}, {self._n}) (n_labels, n_points), got {a.shape}")
        return a

    def stepInference(self, Q: np.ndarray, tmp1: Any = None, tmp2: Any = None) -> None:
        """One mean-field step on Q in place (Q as returned by ``startInference``)."""
        if not (isinstance(Q, np.ndarray) and Q.dtype == np.float32 and Q.flags.c_contiguous and Q.flags.writeable):
            raise TypeError("stepInference updates Q in place: Q must be a writeable C-contiguous float32 array "
                            f"of shape ({self._labels}, {self._n}) (from startInference), got "
                            f"{type(Q).__name__} {getattr(Q, 'dtype', '')} {getattr(Q, 'shape', '')}")
        self._crf.step_inference(self._q(Q))

    def klDivergence(self, Q: Any) -> float:
        """KL divergence between Q and the CRF distribution (up to a constant), as pydensecrf computes it."""
        return float(self._crf.kl_divergence(self._q(Q)))


class DenseCRF2D(DenseCRF):
    """Dense CRF over a width x height image (pydensecrf's ``DenseCRF2D``); point index = y * width + x."""

    def __init__(self, width: int, height: int, n_labels: int):
        width = check_int(width, "width", 1)
        height = check_int(height, "height", 1)
        n_labels = check_int(n_labels, "n_labels", 1)
        super().__init__(width * height, n_labels)
        self._w = width
        self._h = height

    def addPairwiseGaussian(self, sxy: Any, compat: Any, kernel: int = DIAG_KERNEL,
                            normalization: int = NORMALIZE_SYMMETRIC) -> None:
        """Gaussian kernel on positions (x / sx, y / sy); sxy a number or (sx, sy)."""
        sx, sy = _sigmas(sxy, "sxy", 2)
        norm = _kernel_norm(kernel, normalization)
        kind, w, vals = _compat(compat, self._labels)
        self._crf.add_gaussian(self._w, self._h, sx, sy, kind, w, vals, norm)

    def addPairwiseBilateral(self, sxy: Any, srgb: Any, rgbim: Any, compat: Any, kernel: int = DIAG_KERNEL,
                             normalization: int = NORMALIZE_SYMMETRIC) -> None:
        """Bilateral kernel (x / sx, y / sy, r / sr, g / sg, b / sb); rgbim (height, width, 3) uint8."""
        sx, sy = _sigmas(sxy, "sxy", 2)
        sr, sg, sb = _sigmas(srgb, "srgb", 3)
        norm = _kernel_norm(kernel, normalization)
        im = np.asarray(rgbim) if not isinstance(rgbim, np.ndarray) else rgbim
        if im.dtype != np.uint8:
            raise TypeError(f"rgbim must be a uint8 image of shape ({self._h}, {self._w}, 3), got dtype "
                            f"{im.dtype.name}")
        if im.shape != (self._h, self._w, 3):
            raise ValueError(f"rgbim must have shape (height, width, 3) = ({self._h}, {self._w}, 3), got {im.shape}")
        im = np.ascontiguousarray(im)
        kind, w, vals = _compat(compat, self._labels)
        self._crf.add_bilateral(self._w, self._h, sx, sy, sr, sg, sb, im, kind, w, vals, norm)
