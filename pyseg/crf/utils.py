"""Helpers with pydensecrf.utils' names, signatures and results: unaries from softmax outputs or label maps,
and pairwise feature arrays for ``DenseCRF.addPairwiseEnergy`` on data of any dimension."""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np


def _positive(values, name: str) -> list[float]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)) or v <= 0:
            raise ValueError(f"{name} must hold finite numbers > 0 (sigmas), got {tuple(values)!r}")
        out.append(float(v))
    return out


def unary_from_softmax(sm: np.ndarray, scale: float | None = None, clip: float | None = 1e-5) -> np.ndarray:
    """Unary energies -log(p) from class probabilities ``sm`` of shape (L, ...) -> (L, prod(...)) float32.

    scale: if given (0 < scale <= 1), p is first mixed with the uniform distribution: scale * p +
    (1 - scale) / L. clip: probabilities are clipped to [clip, 1] first (None: no clipping).
    """
    a = np.asarray(sm)
    if a.ndim < 1 or a.size == 0 or a.shape[0] < 1:
        raise ValueError(f"sm must be a non-empty array of shape (n_labels, ...), got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise TypeError(f"sm must hold probabilities (a float array), got dtype {a.dtype.name}")
    if not np.all(np.isfinite(a)):
        raise ValueError("sm must be finite probabilities, got nan or inf")
    n_labels = a.shape[0]
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 < scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {scale!r}")
        a = scale * a + (1 - scale) * (np.ones(a.shape) / n_labels)
    if clip is not None:
        a = np.clip(a, clip, 1.0)
    return (-np.log(a)).reshape([n_labels, -1]).astype(np.float32)


def unary_from_labels(labels: np.ndarray, n_labels: int, gt_prob: float, zero_unsure: bool = True) -> np.ndarray:
    """Unary energies (n_labels, N) float32 from a label map of any shape (N pixels, flattened row-major).

    The given label gets probability gt_prob, the others share 1 - gt_prob. With zero_unsure, label value 0
    means "unknown" (uniform energies) and labels 1..n_labels stand for classes 0..n_labels-1; otherwise
    labels are 0..n_labels-1.
    """
    if isinstance(n_labels, bool) or not isinstance(n_labels, numbers.Integral) or n_labels < 2:
        raise ValueError(f"n_labels must be an integer >= 2, got {n_labels!r}")
    if isinstance(gt_prob, bool) or not isinstance(gt_prob, numbers.Real) or not 0 < gt_prob < 1:
        raise ValueError(f"gt_prob must be in (0, 1), got {gt_prob!r}")
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iub":
        if lab.dtype.kind == "f" and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise TypeError(f"labels must be an integer label map, got dtype {lab.dtype.name}")
    flat = lab.reshape(-1).astype(np.int64)
    if flat.size == 0:
        raise ValueError("labels must not be empty")
    hi = n_labels if zero_unsure else n_labels - 1
    lo_v, hi_v = int(flat.min()), int(flat.max())
    if lo_v < 0 or hi_v > hi:
        raise ValueError(f"labels must be in [0, {hi}]" + (" (0 = unsure)" if zero_unsure else "")
                         + f" for n_labels = {n_labels}, got values in [{lo_v}, {hi_v}]")
    other = -np.log((1.0 - gt_prob) / (n_labels - 1))
    given = -np.log(gt_prob)
    u = np.full((n_labels, flat.size), other, dtype=np.float32)
    cls = flat - 1 if zero_unsure else flat
    cols = np.arange(flat.size)
    known = cls >= 0
    u[cls[known], cols[known]] = given
    if zero_unsure:
        u[:, ~known] = -np.log(1.0 / n_labels)
    return u


def create_pairwise_gaussian(sdims: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Position features (len(shape), prod(shape)) float32: index along each axis (row-major, 'ij' order)
    divided by its sigma in ``sdims``. For 2-D the same as ``DenseCRF2D.addPairwiseGaussian`` (which uses
    (x, y) order; the kernel is the same)."""
    shape = tuple(int(s) for s in shape)
    sd = _positive(tuple(sdims), "sdims")
    if len(sd) != len(shape):
        raise ValueError(f"sdims must have one sigma per dimension of shape ({len(shape)}), got {len(sd)}")
    if any(s < 1 for s in shape):
        raise ValueError(f"shape must have sizes >= 1, got {shape}")
    mesh = np.array(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), dtype=np.float32)
    for i, s in enumerate(sd):
        mesh[i] /= s
    return mesh.reshape([len(sd), -1])


def create_pairwise_bilateral(sdims: Sequence[float], schan, img: np.ndarray, chdim: int = -1) -> np.ndarray:
    """Position + channel features (len(sdims) + C, N) float32 for ``addPairwiseEnergy``.

    img: data with its channels along axis ``chdim`` (chdim=-1: img has no channel axis, one channel).
    sdims: a sigma per spatial axis; schan: one sigma for every channel, or one per channel.
    """
    a = np.asarray(img)
    if a.size == 0:
        raise ValueError(f"img must not be empty, got shape {a.shape}")
    if chdim == -1:
        chans = a[np.newaxis].astype(np.float32)
    else:
        if not -a.ndim <= chdim < a.ndim:
            raise ValueError(f"chdim must be -1 or an axis of img (ndim {a.ndim}), got {chdim}")
        chans = np.moveaxis(a, chdim, 0).astype(np.float32)
    n_ch = chans.shape[0]
    if isinstance(schan, numbers.Real) and not isinstance(schan, bool):
        sc = _positive((schan,), "schan") * n_ch
    else:
        sc = _positive(tuple(schan), "schan")
        if len(sc) != n_ch:
            raise ValueError(f"schan must have one sigma per channel ({n_ch} channels), got {len(sc)}")
    for i, s in enumerate(sc):
        chans[i] /= s
    spatial = chans.shape[1:]
    sd = _positive(tuple(sdims), "sdims")
    if len(sd) != len(spatial):
        raise ValueError(f"sdims must have one sigma per spatial dimension ({len(spatial)}), got {len(sd)}")
    mesh = np.array(np.meshgrid(*[np.arange(s) for s in spatial], indexing="ij"), dtype=np.float32)
    for i, s in enumerate(sd):
        mesh[i] /= s
    feats = np.concatenate([mesh, chans])
    return feats.reshape([feats.shape[0], -1])
