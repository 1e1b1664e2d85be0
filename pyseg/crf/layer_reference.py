"""Slow float64 torch reference of the CRF layer (``pyseg.crf.layer``), the oracle of its gradients.

The same steps with the same names, where each term's normalised lattice filter is an explicit (N, N)
matrix read off ``pyseg.crf.reference``'s lattice (its filter applied to the identity), so autograd
differentiates exactly the linear map the fast code applies. Dense matrices: small images only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from pyseg.crf import reference as R


def filter_matrix(features: np.ndarray) -> torch.Tensor:
    """(N, N) float64 F with F @ v = the symmetric-normalised lattice filter of v, for (d, N) features."""
    lat = R.Lattice(features)
    k = torch.from_numpy(lat.filter(np.eye(lat.n)).T.copy())  # filter(v)[i] = sum_j K[i, j] v[j]
    d = 1.0 / torch.sqrt(k.sum(dim=1) + 1e-20)  # norm = the filter of ones
    return d[:, None] * k * d[None, :]


def image_features(image: np.ndarray, sxy: float, srgb: float | None = None) -> np.ndarray:
    """(2, N) Gaussian features (x / sxy, y / sxy) of an (H, W, 3) image, or (5, N) bilateral ones with the
    colours / srgb appended (x is the column; pixel n = y * W + x)."""
    h, w = image.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w]
    f = [xs.reshape(-1) / sxy, ys.reshape(-1) / sxy]
    if srgb is not None:
        f += [image[..., c].reshape(-1).astype(np.float64) / srgb for c in range(3)]
    return np.stack(f).astype(np.float32)


def meanfield(logits: torch.Tensor, filters: Sequence[Sequence[torch.Tensor]], compat: torch.Tensor,
              weights: torch.Tensor, iterations: int) -> torch.Tensor:
    """``pyseg.crf.layer.meanfield`` in float64: logits (B, L, N), filters[b][k] (N, N) matrices."""
    out = []
    for b in range(logits.shape[0]):
        e = logits[b]
        for _ in range(iterations):
            q = torch.softmax(e, dim=0)
            e = logits[b] - sum(weights[k] * (compat[k] @ (q @ filters[b][k].T)) for k in range(compat.shape[0]))
        out.append(e)
    return torch.stack(out)
