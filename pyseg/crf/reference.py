"""Slow NumPy reference of the dense CRF: the oracle the fast implementation is tested against.

Importable with numpy alone. Nothing here is meant to be fast; it is written to be read and checked.

* ``Lattice`` / ``lattice_filter``: the permutohedral lattice of Kraehenbuehl's DenseCRF v2.2 (the code that
  pydensecrf wraps), step by step as ``docs/crf.md`` states it, with the step names of the C++ (see
  ``csrc/README.md``). The geometry is float32 in the C++'s operation order (so rounding and rank decisions
  agree); splat, blur and slice accumulate in float64. ``meanfield`` uses it with the four normalisations and
  the three compatibility forms, from Q0 = softmax(-U).
* ``exact_filter``: the brute-force Gaussian filter out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j (with or without
  the self term), and ``meanfield_exact`` on it: what the lattice approximates. Small N only (N^2 float64).

How close these are to pydensecrf2 and to each other, and the measurements behind the ``LATTICE_*`` bounds
below: ``benchmarks/NOTES_reference.md``. The lattice is a piecewise-linear interpolation over a simplex grid
about one standard deviation apart, so errors of a few percent against the exact filter are inherent.

Shapes: features are (d, N) float32, values/Q/U are (L, N) with N = H * W pixels in row-major order
(index = y * W + x), images are (H, W, 3) uint8.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# pydensecrf's enum values
CONST_KERNEL, DIAG_KERNEL, FULL_KERNEL = 0, 1, 2
NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC = 0, 1, 2, 3
_NORMALIZATIONS = (NO_NORMALIZATION, NORMALIZE_BEFORE, NORMALIZE_AFTER, NORMALIZE_SYMMETRIC)

# Bounds on the lattice vs the exact Gaussian filter (measured: benchmarks/NOTES_reference.md).
LATTICE_NORMALIZED_MAX_ABS_ERROR = 0.35
LATTICE_NORMALIZED_MEAN_ABS_ERROR = 0.05
LATTICE_GRID_MAX_ABS_ERROR = 0.02
LATTICE_GRID_MEAN_ABS_ERROR = 0.003
LATTICE_MEANFIELD_MAX_ABS_ERROR = 0.3
LATTICE_MEANFIELD_MEAN_ABS_ERROR = 0.015
LATTICE_MEANFIELD_MIN_ARGMAX_AGREEMENT = 0.97
LATTICE_MEANFIELD_MIN_ARGMAX_AGREEMENT_5IT = 0.85

_f32 = np.float32


# ----------------------------------------------------------------------------------------------- lattice
# The steps carry the names of the C++ ones (csrc/README.md maps each to its CPU function and CUDA kernel).

def _checked_features(features) -> np.ndarray:
    f = np.asarray(features)
    if f.ndim != 2 or f.shape[0] < 1 or f.shape[1] < 1:
        raise ValueError(f"features must be a non-empty (d, N) array, got shape {f.shape}")
    f = f.astype(_f32)
    if not np.all(np.isfinite(f)):
        raise ValueError("features must be finite")
    return f


def lattice_points(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each point's simplex and weights (crf::lattice_point): (rem0 (d+1, N) float32, the closest remainder-0
    point; rank (d+1, N) int64; weight (N, d+1) float32 barycentric weights) of (d, N) float32 features."""
    d, n = f.shape
    dp1 = d + 1
    # Elevation onto the hyperplane sum(x) = 0 of R^{d+1} (float32, the reference's operation order).
    inv_std_dev = _f32(math.sqrt(2.0 / 3.0) * dp1)
    scale = np.array([1.0 / math.sqrt((i + 2) * (i + 1)) * float(inv_std_dev) for i in range(d)],
                     dtype=_f32)
    elevated = np.zeros((dp1, n), dtype=_f32)
    sm = np.zeros(n, dtype=_f32)
    for j in range(d, 0, -1):
        cf = f[j - 1] * scale[j - 1]
        elevated[j] = sm - _f32(j) * cf
        sm = sm + cf
    elevated[0] = sm
    if float(np.abs(elevated).max()) > 2.0 ** 40:
        raise ValueError("features too large for the lattice (|elevated coordinate| > 2^40): sigma too small?")
    # Closest remainder-0 lattice point (round half to even, as the SSE conversion does).
    down = _f32(1.0) / _f32(dp1)
    v = np.rint(down * elevated).astype(_f32)
    rem0 = v * _f32(dp1)
    ssum = np.zeros(n, dtype=_f32)
    for i in range(dp1):
        ssum = ssum + v[i]
    # Rank of every coordinate's residual.
    rank = np.zeros((dp1, n), dtype=np.int64)
    resid = elevated - rem0
    for i in range(d):
        for j in range(i + 1, dp1):
            c = resid[i] < resid[j]
            rank[i] += c
            rank[j] += ~c
    rank += ssum.astype(np.int64)
    low = rank < 0
    high = rank > d
    rank[low] += dp1
    rem0[low] += _f32(dp1)
    rank[high] -= dp1
    rem0[high] -= _f32(dp1)
    # Barycentric weights.
    bary = np.zeros((n, d + 2), dtype=_f32)
    cols = np.arange(n)
    for i in range(dp1):
        w = (elevated[i] - rem0[i]) * down
        p = d - rank[i]
        bary[cols, p] += w
        bary[cols, p + 1] -= w
    bary[:, 0] += _f32(1.0) + bary[:, d + 1]
    return rem0, rank, np.ascontiguousarray(bary[:, :dp1])


def number_vertices(rem0: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of the points' simplices, numbered once each (crf::vertex_key, then one number per key):
    (keys (M, d) int64, their first d coordinates, sorted; offset (N, d+1) int64, the vertex of each point's
    corner r). The C++ numbers them in order of appearance instead: the same lattice."""
    dp1, n = rank.shape
    d = dp1 - 1
    # Vertex keys of the d+1 simplex corners: rem0 + canonical[r][rank].
    rem0_i = rem0.astype(np.int64)[:d]  # (d, N)
    rank_d = rank[:d]
    allkeys = np.empty((n, dp1, d), dtype=np.int64)
    for r in range(dp1):
        canon = np.where(rank_d <= d - r, r, r - dp1)
        allkeys[:, r, :] = (rem0_i + canon).T
    keys, inverse = np.unique(allkeys.reshape(n * dp1, d), axis=0, return_inverse=True)
    return keys, inverse.reshape(n, dp1)


def find_neighbours(keys: np.ndarray) -> np.ndarray:
    """Blur neighbours (crf::neighbour_keys) of (M, d) vertex keys: (d+1, M, 2) int64, the vertices before
    and after each vertex along each lattice axis j (-1 where absent): n1 = key - 1 except key[j] + d,
    n2 = key + 1 except key[j] - d."""
    m, d = keys.shape
    cand = []
    for j in range(d + 1):
        n1 = keys - 1
        n2 = keys + 1
        if j < d:
            n1[:, j] = keys[:, j] + d
            n2[:, j] = keys[:, j] - d
        cand.append(n1)
        cand.append(n2)
    allc = np.concatenate([keys] + cand, axis=0)
    _, inv = np.unique(allc, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    lut = np.full(inv.max() + 1, -1, dtype=np.int64)
    lut[inv[:m]] = np.arange(m)
    return lut[inv[m:]].reshape(d + 1, 2, m).transpose(0, 2, 1).copy()


class Lattice:
    """The permutohedral lattice of a (d, N) float32 feature matrix.

    Attributes: ``d``, ``n`` (pixels), ``m`` (lattice vertices), ``offset`` (N, d+1) int64 vertex of each
    pixel's simplex corner r, ``weight`` (N, d+1) float32 barycentric weights (rows sum to 1), ``keys``
    (M, d) int64 first d coordinates of each vertex, ``neighbors`` (d+1, M, 2) int64 the vertices before and
    after each vertex along each lattice axis (-1 where absent).
    """

    def __init__(self, features: np.ndarray):
        f = _checked_features(features)
        self.d, self.n = f.shape
        rem0, rank, self.weight = lattice_points(f)
        self.keys, self.offset = number_vertices(rem0, rank)
        self.m = self.keys.shape[0]
        self.neighbors = find_neighbours(self.keys)

    def splat(self, vals: np.ndarray) -> np.ndarray:
        """(M+1, C) float64 vertex sums of the weighted (C, N) values; row 0 is a zero "missing neighbour" and
        vertex v lives at row v + 1."""
        c = vals.shape[0]
        grid = np.zeros((self.m + 1, c), dtype=np.float64)
        contrib = (self.weight[:, :, None].astype(np.float64) * vals.T[:, None, :]).reshape(-1, c)
        np.add.at(grid, self.offset.reshape(-1) + 1, contrib)
        return grid

    def blur(self, grid: np.ndarray, reverse: bool = False) -> np.ndarray:
        """[1 2 1] / 2 along the lattice axes 0..d (d..0 when ``reverse``), every read from the values before
        the axis's pass."""
        axes = range(self.d, -1, -1) if reverse else range(self.d + 1)
        for j in axes:
            n1 = self.neighbors[j, :, 0] + 1
            n2 = self.neighbors[j, :, 1] + 1
            new = grid.copy()
            new[1:] = grid[1:] + 0.5 * (grid[n1] + grid[n2])
            grid = new
        return grid

    def slice(self, grid: np.ndarray) -> np.ndarray:
        """(C, N) float64: each point's weighted sum of its vertices' values, times alpha = 1 / (1 + 2^-d)."""
        alpha = 1.0 / (1.0 + 2.0 ** (-self.d))
        gathered = grid[self.offset + 1]  # (N, d+1, C)
        return np.einsum("nr,nrc->cn", self.weight.astype(np.float64), gathered) * alpha

    def filter(self, values: np.ndarray, reverse: bool = False) -> np.ndarray:
        """Filter (C, N) values: splat, blur (axes 0..d, or d..0 when ``reverse``), slice. Returns (C, N) float64."""
        vals = np.asarray(values, dtype=np.float64)
        if vals.ndim != 2 or vals.shape[1] != self.n:
            raise ValueError(f"values must be (C, {self.n}), got shape {vals.shape}")
        return self.slice(self.blur(self.splat(vals), reverse))


def lattice_filter(features: np.ndarray, values: np.ndarray, reverse: bool = False) -> np.ndarray:
    """Permutohedral-lattice Gaussian filter of (C, N) ``values`` over (d, N) ``features``; (C, N) float64."""
    return Lattice(features).filter(values, reverse=reverse)


# ----------------------------------------------------------------------------------------- exact filter
def exact_kernel(features: np.ndarray, include_self: bool = True) -> np.ndarray:
    """Dense (N, N) float64 kernel exp(-|f_i - f_j|^2 / 2) of (d, N) features (diagonal 0 without self)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"features must be (d, N), got shape {f.shape}")
    sq = np.sum(f * f, axis=0)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (f.T @ f), 0.0)
    k = np.exp(-0.5 * d2)
    if not include_self:
        np.fill_diagonal(k, 0.0)
    return k


def exact_filter(features: np.ndarray, values: np.ndarray, include_self: bool = True) -> np.ndarray:
    """Brute-force Gaussian filter: out[:, i] = sum_j exp(-|f_i - f_j|^2 / 2) values[:, j]; (C, N) float64."""
    k = exact_kernel(features, include_self)
    return np.asarray(values, dtype=np.float64) @ k.T


# ------------------------------------------------------------------------------- pairwise terms, compat
def normalise(norm: np.ndarray, normalization: int) -> np.ndarray | None:
    """The per-point factor of a normalisation from norm = filter(ones) (the C++ LatticeBuild::normalise):
    1 / sqrt(norm) (symmetric), 1 / norm (before or after), or None (NO_NORMALIZATION: the reference computes
    N / sum(norm) and never applies it)."""
    if normalization == NO_NORMALIZATION:
        return None
    if normalization == NORMALIZE_SYMMETRIC:
        return 1.0 / np.sqrt(norm + 1e-20)
    return 1.0 / (norm + 1e-20)


class _PairwiseFilter:
    """A pairwise term's filter with its normalisation; ``apply(Q)`` is DenseKernel::filter (not transposed)."""

    def __init__(self, features, normalization, exact=False, include_self=True):
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
        self.ntype = normalization
        n = np.asarray(features).shape[1]
        if exact:
            k = exact_kernel(features, include_self)
            self._filter = lambda v: np.asarray(v, dtype=np.float64) @ k.T
        else:
            lat = Lattice(features)
            self._filter = lat.filter
        self.norm = normalise(self._filter(np.ones((1, n)))[0], normalization)

    def apply(self, q: np.ndarray) -> np.ndarray:
        t = self.ntype
        out = np.asarray(q, dtype=np.float64)
        if t in (NORMALIZE_SYMMETRIC, NORMALIZE_BEFORE):
            out = out * self.norm[None, :]
        out = self._filter(out)
        if t in (NORMALIZE_SYMMETRIC, NORMALIZE_AFTER):
            out = out * self.norm[None, :]
        return out


def compat_matrix(compat, n_labels: int) -> np.ndarray:
    """The (L, L) matrix S with C(x) = S x for a scalar (Potts: -w I), vector (diag) or matrix ((m+m^T)/2)."""
    if np.isscalar(compat) or np.ndim(compat) == 0:
        return -float(compat) * np.eye(n_labels)
    c = np.asarray(compat, dtype=np.float64)
    if c.ndim == 1:
        if c.shape[0] != n_labels:
            raise ValueError(f"vector compat must have {n_labels} entries, got {c.shape[0]}")
        return np.diag(c)
    if c.ndim == 2:
        if c.shape != (n_labels, n_labels):
            raise ValueError(f"matrix compat must be ({n_labels}, {n_labels}), got {c.shape}")
        return 0.5 * (c + c.T)
    raise ValueError(f"compat must be a scalar, a vector or a matrix, got ndim {c.ndim}")


def softmax_neg(u: np.ndarray) -> np.ndarray:
    """softmax(-U) over axis 0 (labels), max subtracted; (L, N) float64."""
    x = -np.asarray(u, dtype=np.float64)
    x = x - x.max(axis=0, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=0, keepdims=True)


@dataclass
class Pairwise:
    """A pairwise term: (d, N) features, compat (scalar / (L,) / (L, L)) and a normalisation."""

    features: np.ndarray
    compat: object
    normalization: int = NORMALIZE_SYMMETRIC


def _meanfield(unary, pairwise: Sequence[Pairwise], iterations, exact, include_self):
    u = np.asarray(unary, dtype=np.float64)
    if u.ndim != 2:
        raise ValueError(f"unary must be (L, N), got shape {u.shape}")
    if int(iterations) != iterations or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    n_labels = u.shape[0]
    terms = [(_PairwiseFilter(p.features, p.normalization, exact, include_self), compat_matrix(p.compat, n_labels))
             for p in pairwise]
    q = softmax_neg(u)
    for _ in range(int(iterations)):
        q = update(u, terms, q)
    return q


def update(u: np.ndarray, terms, q: np.ndarray) -> np.ndarray:
    """One mean-field step, the slice and update (crf::meanfield_pixel per point): softmax(-U - sum_k C_k(K_k Q))
    for terms of (_PairwiseFilter, compat matrix)."""
    tmp = -u
    for filt, s in terms:
        tmp = tmp - s @ filt.apply(q)
    return softmax_neg(-tmp)


def meanfield(unary, pairwise: Sequence[Pairwise], iterations: int) -> np.ndarray:
    """DenseCRF v2.2 mean-field with lattice filtering: (L, N) unary energies -> (L, N) float64 Q."""
    return _meanfield(unary, pairwise, iterations, exact=False, include_self=True)


def meanfield_exact(unary, pairwise: Sequence[Pairwise], iterations: int, include_self: bool = True):
    """The same mean-field with the brute-force Gaussian filter (small N only); (L, N) float64 Q."""
    return _meanfield(unary, pairwise, iterations, exact=True, include_self=include_self)


def kl_divergence(q, unary, pairwise: Sequence[Pairwise]) -> float:
    """DenseCRF::klDivergence: sum Q log Q + sum U Q + sum_k sum Q * C(K Q) (lattice filtering)."""
    q = np.asarray(q, dtype=np.float64)
    u = np.asarray(unary, dtype=np.float64)
    kl = float(np.sum(q * np.log(np.maximum(q, 1e-20))) + np.sum(u * q))
    for p in pairwise:
        filt = _PairwiseFilter(p.features, p.normalization)
        kl += float(np.sum(q * (compat_matrix(p.compat, q.shape[0]) @ filt.apply(q))))
    return kl


# ------------------------------------------------------------------------------------------- features
def gaussian_features(height: int, width: int, sx: float, sy: float | None = None) -> np.ndarray:
    """(2, H*W) float32 features (x / sx, y / sy) as DenseCRF2D::addPairwiseGaussian builds them."""
    sy = sx if sy is None else sy
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs.reshape(-1).astype(_f32) / _f32(sx), ys.reshape(-1).astype(_f32) / _f32(sy)])


def bilateral_features(image: np.ndarray, sx: float, srgb, sy: float | None = None) -> np.ndarray:
    """(5, H*W) float32 features (x/sx, y/sy, r/sr, g/sg, b/sb) of an (H, W, 3) uint8 image."""
    sy = sx if sy is None else sy
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got shape {img.shape}")
    h, w, _ = img.shape
    s = np.broadcast_to(np.asarray(srgb, dtype=_f32), (3,))
    pos = gaussian_features(h, w, sx, sy)
    col = img.reshape(-1, 3).T.astype(_f32) / s[:, None]
    return np.concatenate([pos, col]).astype(_f32)


# ---------------------------------------------------------------------------------- pyseg dense_crf
def _params_tuple(params):
    if params is None:
        from pyseg.crf.params import CRFParams

        params = CRFParams.preset("krahenbuhl")
    return params


def dense_crf_reference(probs: np.ndarray, image: np.ndarray, params=None, iterations: int | None = None,
                        clip: float = 1e-5) -> np.ndarray:
    """What ``pyseg.crf.dense_crf`` computes for one image, with the lattice above.

    probs (L, H, W) probabilities, image (H, W, 3) uint8; unary U = -log(clip(probs, clip, 1)) (as
    ``unary_from_softmax``), a Gaussian term (gaussian_sxy, Potts gaussian_compat) and a bilateral term
    (bilateral_sxy, bilateral_srgb, Potts bilateral_compat), both NORMALIZE_SYMMETRIC; a kernel whose
    compat is 0 is left out. Returns (L, H, W) float32 probabilities.
    """
    p = np.asarray(probs)
    img = np.asarray(image)
    if p.ndim != 3:
        raise ValueError(f"probs must be (L, H, W), got shape {p.shape}")
    if img.shape != (p.shape[1], p.shape[2], 3) or img.dtype != np.uint8:
        raise ValueError(f"image must be ({p.shape[1]}, {p.shape[2]}, 3) uint8, got {img.shape} {img.dtype}")
    params = _params_tuple(params)
    iters = params.iterations if iterations is None else iterations
    n_labels, h, w = p.shape
    u = -np.log(np.clip(p.astype(_f32), _f32(clip), _f32(1.0))).reshape(n_labels, -1).astype(_f32)
    terms = []
    if params.gaussian_compat != 0:
        terms.append(Pairwise(gaussian_features(h, w, params.gaussian_sxy), float(params.gaussian_compat)))
    if params.bilateral_compat != 0:
        terms.append(Pairwise(bilateral_features(img, params.bilateral_sxy, params.bilateral_srgb),
                              float(params.bilateral_compat)))
    q = meanfield(u, terms, iters)
    return q.reshape(n_labels, h, w).astype(_f32)
