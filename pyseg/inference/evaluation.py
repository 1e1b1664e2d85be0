"""Evaluation of a model on a labelled split, without and with the dense CRF side by side.

Metrics (from :mod:`pyseg.training.metrics`, at each image's own resolution, ``ignore_index`` left
out): global mIoU (one confusion matrix over the set), per-image mIoU (averaged over images, the 2021
leaderboard), per-class IoU and pixel accuracy. The confusion-matrix plot uses matplotlib's Agg
backend, imported only when a plot is asked for.
"""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from pyseg.submission import resize_nearest
from pyseg.training.metrics import SegMetrics

log = logging.getLogger(__name__)


def accumulate_predictions(predictions: Iterable, num_classes: int, ignore_index: int | None = 255,
                           size: int | None = None) -> dict:
    """The metric state of :class:`pyseg.inference.predict.ImagePrediction` items that carry ground truth, before any
    mean is taken: {"images": n, "no_crf": SegMetrics, "crf": SegMetrics or None}. States of disjoint parts
    (e.g. one per rank, in dataset order) combine with :func:`summarize`.

    ``size``: None scores at each image's own resolution; an int first resizes ground truth and
    predictions to size x size with the submission's nearest-neighbour rule (as the leaderboard scored
    the 256 x 256 submissions).
    """
    plain = SegMetrics(num_classes, ignore_index)
    refined = None
    n = 0
    for r in predictions:
        if r.mask is None:
            raise ValueError(f"image {r.image_id} has no ground truth; evaluation needs labelled data "
                             "(e.g. val.json, or a label folder), not test images")
        gt, pred, pred_crf = r.mask, r.pred, r.pred_crf
        if size is not None:
            gt, pred = resize_nearest(gt, size), resize_nearest(pred, size)
            pred_crf = resize_nearest(pred_crf, size) if pred_crf is not None else None
        plain.update(gt, pred)
        if pred_crf is not None:
            refined = refined or SegMetrics(num_classes, ignore_index)
            refined.update(gt, pred_crf)
        n += 1
    return {"images": n, "no_crf": plain, "crf": refined}


def summarize(states: Sequence[dict]) -> dict:
    """Metrics of the union of :func:`accumulate_predictions` states (in order: per-image means then match one
    pass over the same images). Returns {"images": N, "no_crf": metrics, "crf": metrics or None}; each metrics
    dict has miou, miou_per_image, pixel_acc, iou_per_class (list of C, nan = absent) and cm ((C, C) int64,
    rows = ground truth)."""
    n = sum(s["images"] for s in states)
    if n == 0:
        raise ValueError("nothing to evaluate: the dataset is empty")
    out = {"images": n, "no_crf": None, "crf": None}
    for key in ("no_crf", "crf"):
        parts = [s[key] for s in states if s[key] is not None]
        if not parts:
            continue
        total = SegMetrics(parts[0].num_classes, parts[0].ignore_index)
        for m in parts:
            total.merge_(m.cm, m.image_mious)
        out[key] = dict(total.compute(), cm=total.cm.copy())
    return out


def evaluate_predictions(predictions: Iterable, num_classes: int, ignore_index: int | None = 255,
                         size: int | None = None) -> dict:
    """:func:`summarize` of one :func:`accumulate_predictions` pass (see both for the arguments and result)."""
    return summarize([accumulate_predictions(predictions, num_classes, ignore_index, size)])


def evaluate(model, dataset, *, crf=None, ignore_index: int | None = 255, size: int | None = None,
             **predict_kwargs) -> dict:
    """Predict ``dataset`` (labelled) and return :func:`evaluate_predictions`'s dict (+ "seconds")."""
    import time

    from pyseg.inference.predict import predict_dataset

    t0 = time.perf_counter()
    res = evaluate_predictions(predict_dataset(model, dataset, crf=crf, **predict_kwargs),
                               dataset.num_classes, ignore_index, size)
    res["seconds"] = time.perf_counter() - t0
    return res


def _fmt(v: float) -> str:
    return "   -  " if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:6.4f}"


def format_report(result: dict, class_names: Sequence[str] | None = None) -> str:
    """A plain-text table: summary metrics and per-class IoU, without and with the CRF."""
    a, b = result["no_crf"], result.get("crf")
    cols = ["no CRF"] + (["CRF", "gain"] if b else [])
    lines = [f"images: {result['images']}", f"{'metric':<24}" + "".join(f"{c:>10}" for c in cols)]

    def row(label, x, y):
        cells = [_fmt(x)] + ([_fmt(y), _fmt(y - x) if not (math.isnan(x) or math.isnan(y)) else "   -  "]
                             if b else [])
        lines.append(f"{label:<24}" + "".join(f"{c:>10}" for c in cells))

    row("mIoU (global)", a["miou"], b["miou"] if b else None)
    row("mIoU (per image)", a["miou_per_image"], b["miou_per_image"] if b else None)
    row("pixel accuracy", a["pixel_acc"], b["pixel_acc"] if b else None)
    lines.append("IoU per class:")
    n = len(a["iou_per_class"])
    names = list(class_names) if class_names is not None and len(class_names) == n else [str(i) for i in range(n)]
    for i, name in enumerate(names):
        row(f"  {i:>2} {name[:19]}", a["iou_per_class"][i], b["iou_per_class"][i] if b else None)
    return "\n".join(lines)


def plot_confusion_matrix(cm: np.ndarray, path, class_names: Sequence[str] | None = None,
                          title: str = "confusion matrix (rows: ground truth, normalised per row)") -> Path:
    """Save a row-normalised (C, C) confusion matrix as a PNG (atomically). Returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    from pyseg.fileio import atomic_write_bytes

    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be (C, C), got {cm.shape}")
    c = cm.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = cm / cm.sum(1, keepdims=True)
    names = list(class_names) if class_names is not None and len(class_names) == c else [str(i) for i in range(c)]
    side = max(4.0, 0.45 * c + 2)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    im = ax.imshow(np.nan_to_num(norm), vmin=0, vmax=1, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(c), labels=names, rotation=90, fontsize=7)
    ax.set_yticks(range(c), labels=names, fontsize=7)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=9)
    if c <= 24:
        for i in range(c):
            for j in range(c):
                if norm[i, j] >= 0.01:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue(), create_parent=False)
    return path
