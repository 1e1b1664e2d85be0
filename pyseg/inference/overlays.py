"""PNG overlays of predictions (``pyseg-predict --vis DIR``), drawn with Pillow.

One PNG per image: panels side by side — the image, the prediction, the CRF-refined prediction (when
the CRF ran) and the ground truth (when known) — each class map blended over the image with the
dataset palette (``ds.palette``, (C, 3) uint8). Files are written atomically.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np


def default_palette(num_classes: int) -> np.ndarray:
    """(C, 3) uint8 distinct colours (class 0 black), for when the dataset has none."""
    rng = np.random.default_rng(12345)
    pal = rng.integers(40, 256, size=(max(num_classes, 1), 3), dtype=np.int64).astype(np.uint8)
    pal[0] = 0
    return pal


def colorize(label_map: np.ndarray, palette: np.ndarray, ignore_color=(255, 255, 255)) -> np.ndarray:
    """(H, W) ints -> (H, W, 3) uint8 colours; ids outside the palette (e.g. ignore 255) get ignore_color."""
    lm = np.asarray(label_map).astype(np.int64)
    pal = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    ext = np.concatenate([pal, np.asarray(ignore_color, np.uint8)[None]])
    idx = np.where((lm >= 0) & (lm < len(pal)), lm, len(pal))
    return ext[idx]


def blend(image: np.ndarray, label_map: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: the image with the coloured class map over it (alpha = class map weight)."""
    col = colorize(label_map, palette).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + col * alpha).round().clip(0, 255).astype(np.uint8)


def overlay_panels(image, pred, pred_crf=None, mask=None, palette=None, alpha: float = 0.5) -> np.ndarray:
    """(H, k*W + gaps, 3) uint8 panel strip: image | prediction | CRF prediction | ground truth."""
    if palette is None:
        hi = max(int(np.max(pred)), int(np.max(pred_crf)) if pred_crf is not None else 0) + 1
        palette = default_palette(hi)
    panels = [np.asarray(image, np.uint8), blend(image, pred, palette, alpha)]
    if pred_crf is not None:
        panels.append(blend(image, pred_crf, palette, alpha))
    if mask is not None:
        panels.append(blend(image, mask, palette, alpha))
    h = panels[0].shape[0]
    gap = np.full((h, 4, 3), 255, np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [gap, p]
    return np.concatenate(out, axis=1)


def _safe_name(image_id: str) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", str(image_id))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"


def save_overlay(out_dir, prediction, palette=None, alpha: float = 0.5) -> Path:
    """Write ``<out_dir>/<image_id with / as _>.png`` for an ImagePrediction; returns the path."""
    from PIL import Image

    from pyseg.fileio import atomic_write_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    strip = overlay_panels(prediction.image, prediction.pred, prediction.pred_crf, prediction.mask,
                           palette, alpha)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG")
    path = out_dir / f"{_safe_name(prediction.image_id)}.png"
    atomic_write_bytes(path, buf.getvalue(), create_parent=False)
    return path
