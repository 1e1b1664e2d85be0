"""Search dense-CRF parameters on a labelled split, as DeepLab did on its validation set.

The model's probabilities are computed once (:func:`cache_probabilities`, float16 in memory at each
image's own resolution); each candidate then only reruns the CRF (:func:`score_params`). The search
(:func:`search`) is coarse-to-fine with a fixed number of mean-field iterations:

1. bilateral kernel grid (sxy x srgb x compat) with the Gaussian kernel at (3, 3);
2. Gaussian kernel grid (sxy x compat, compat 0 = off) with the best bilateral kernel;
3. a finer bilateral grid around the best values (x0.7, x1, x1.4 for sxy and srgb; +-1 for compat).

The presets (``CRFParams.presets()``) are scored too, at the same iterations, so the report can say
which named preset is best and how far the tuned parameters go beyond it.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from pyseg.crf.params import CRFParams
from pyseg.training.metrics import SegMetrics

log = logging.getLogger(__name__)

COARSE_BILATERAL = {"bilateral_sxy": (30.0, 50.0, 80.0, 120.0), "bilateral_srgb": (3.0, 5.0, 10.0, 15.0),
                    "bilateral_compat": (3.0, 5.0, 10.0)}
GAUSSIAN = {"gaussian_sxy": (1.0, 3.0, 5.0), "gaussian_compat": (0.0, 1.0, 3.0, 5.0)}


@dataclass
class CachedImage:
    image_id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    probs: np.ndarray  # (C, H, W) float16 model probabilities
    mask: np.ndarray  # (H, W) int64 ground truth


@dataclass
class TuneResult:
    best: CRFParams
    best_score: float
    baseline: float  # the objective without the CRF
    presets: dict  # preset name -> score
    history: list = field(default_factory=list)  # (CRFParams, score) in evaluation order
    objective: str = "miou"
    seconds: float = 0.0

    @property
    def gain(self) -> float:
        return self.best_score - self.baseline

    @property
    def best_preset(self) -> str:
        return max(self.presets, key=lambda k: self.presets[k])

    def to_dict(self) -> dict:
        return {"params": self.best.to_dict(), "objective": self.objective, "score": self.best_score,
                "baseline": self.baseline, "gain": self.gain, "presets": self.presets,
                "best_preset": self.best_preset, "evaluated": len(self.history)}


def cache_probabilities(model, dataset, max_images: int | None = None, **predict_kwargs) -> list[CachedImage]:
    """Run the model once (no CRF) over the first ``max_images`` items; keep float16 probabilities."""
    from pyseg.inference.predict import predict_dataset

    out = []
    for r in predict_dataset(model, dataset, crf=None, keep_probs=True, limit=max_images, **predict_kwargs):
        if r.mask is None:
            raise ValueError(f"image {r.image_id} has no ground truth; CRF tuning needs a labelled json (val.json)")
        out.append(CachedImage(r.image_id, r.image, r.probs.astype(np.float16), r.mask))
    if not out:
        raise ValueError("nothing to tune on: the dataset is empty")
    return out


def score_params(params: CRFParams | None, cache: Sequence[CachedImage], num_classes: int,
                 ignore_index: int | None = 255, num_threads: int | None = None, batch: int = 8) -> dict:
    """SegMetrics.compute() of the CRF with ``params`` (None: the model's own argmax) over the cache."""
    from pyseg.inference.predict import run_crf_grouped

    m = SegMetrics(num_classes, ignore_index)
    for start in range(0, len(cache), batch):
        chunk = cache[start:start + batch]
        if params is None:
            preds = [c.probs.argmax(0) for c in chunk]
        else:
            q = run_crf_grouped([c.probs.astype(np.float32) for c in chunk], [c.image for c in chunk], params,
                                "cpu", num_threads)
            preds = [x.argmax(0) for x in q]
        for c, p in zip(chunk, preds):
            m.update(c.mask, p)
    return m.compute()


def _grid(base: CRFParams, axes: dict) -> list[CRFParams]:
    names = list(axes)
    return [base.replace(**dict(zip(names, vals))) for vals in itertools.product(*(axes[n] for n in names))]


def _fine_axes(best: CRFParams) -> dict:
    return {"bilateral_sxy": tuple(sorted({round(best.bilateral_sxy * f, 2) for f in (0.7, 1.0, 1.4)})),
            "bilateral_srgb": tuple(sorted({round(best.bilateral_srgb * f, 2) for f in (0.7, 1.0, 1.4)})),
            "bilateral_compat": tuple(sorted({max(0.5, best.bilateral_compat + d) for d in (-1.0, 0.0, 1.0)}))}


def search(cache: Sequence[CachedImage], num_classes: int, *, iterations: int = 10, ignore_index: int | None = 255,
           objective: str = "miou", stages: Sequence[dict] | None = None, fine: bool = True,
           num_threads: int | None = None, callback: Callable | None = None) -> TuneResult:
    """Coarse-to-fine search; ``stages``: list of {param: values} grids, each applied around the best so far
    (default: the bilateral grid, then the Gaussian grid); ``fine`` adds the refinement stage.

    ``objective``: "miou" (global confusion matrix) or "miou_per_image". ``callback(params, score)`` is
    called after each evaluation (the CLI prints progress with it).
    """
    if objective not in ("miou", "miou_per_image"):
        raise ValueError(f"objective must be 'miou' or 'miou_per_image', got {objective!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    t0 = time.perf_counter()
    stages = list(stages) if stages is not None else [COARSE_BILATERAL, GAUSSIAN]
    seen: dict = {}
    history = []

    def evaluate(p: CRFParams) -> float:
        key = tuple(p.to_dict().values())
        if key not in seen:
            s = score_params(p, cache, num_classes, ignore_index, num_threads)[objective]
            seen[key] = s
            history.append((p, s))
            if callback is not None:
                callback(p, s)
        return seen[key]

    baseline = score_params(None, cache, num_classes, ignore_index)[objective]
    presets = {name: evaluate(CRFParams.preset(name).replace(iterations=iterations)) for name in CRFParams.presets()}
    best = CRFParams().replace(iterations=iterations)
    best_score = evaluate(best)
    for axes in stages + ([None] if fine else []):
        for p in _grid(best, axes if axes is not None else _fine_axes(best)):
            s = evaluate(p)
            if s > best_score + 1e-12 or (math.isnan(best_score) and not math.isnan(s)):
                best, best_score = p, s
    for name, s in presets.items():  # a preset may beat the grid
        if s > best_score:
            best, best_score = CRFParams.preset(name).replace(iterations=iterations), s
    return TuneResult(best, best_score, baseline, presets, history, objective, time.perf_counter() - t0)
