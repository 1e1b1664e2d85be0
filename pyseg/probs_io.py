"""``--save-probs`` directories: class probabilities saved by ``pyseg-predict`` for ensembling.

Format (written by :class:`ProbsWriter`, read by :func:`read_probs_index` and :func:`load_probs`,
averaged into a submission by :func:`pyseg.submission.ensemble_probs`): a directory holding

* ``index.json``: ``{"format": "pyseg-probs", "version": 1, "num_classes": C, "class_names": [...],
  "size": S, "dtype": "float16", "meta": {...}, "images": [{"image_id": file_name, "id": int,
  "file": "000000.npz", "height": H, "width": W}, ...]}`` with images in the json's order
  (``height``/``width`` are the original image's size);
* one ``NNNNNN.npz`` per image (``np.savez_compressed``) with the array ``probs``: float16, shape
  (C, S, S), the class probabilities that produced the submission row (after the CRF when it was on),
  sampled at the submission resolution with the same nearest-neighbour indices as the class map
  (:func:`pyseg.submission.resize_nearest`), so the argmax of one saved directory reproduces its submission (up to
  float16 ties).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pyseg.fileio import atomic_write
from pyseg.submission import atomic_write_bytes

PROBS_FORMAT = "pyseg-probs"
PROBS_VERSION = 1


class ProbsWriter:
    """Writes the ``--save-probs`` directory described in the module docstring."""

    def __init__(self, out_dir, num_classes: int, class_names: Sequence[str] | None, size: int,
                 meta: dict | None = None):
        self.dir = Path(out_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create --save-probs directory {self.dir}: {e.strerror or e}") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise ValueError(f"--save-probs directory {self.dir} is not writable")
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else None
        self.size = int(size)
        self.meta = dict(meta or {})
        self.images: list[dict] = []

    def write(self, image_id: str, image_int_id: int, probs, height: int, width: int) -> None:
        """probs: (C, size, size) probabilities (any float dtype; stored as float16)."""
        p = np.asarray(probs)
        if p.shape != (self.num_classes, self.size, self.size):
            raise ValueError(f"probabilities must be ({self.num_classes}, {self.size}, {self.size}), got {p.shape}")
        name = f"{len(self.images):06d}.npz"
        with atomic_write(self.dir / name, "wb", create_parent=False) as f:
            np.savez_compressed(f, probs=p.astype(np.float16))
        self.images.append({"image_id": str(image_id), "id": int(image_int_id), "file": name,
                            "height": int(height), "width": int(width)})

    def close(self) -> Path:
        index = {"format": PROBS_FORMAT, "version": PROBS_VERSION, "num_classes": self.num_classes,
                 "class_names": self.class_names, "size": self.size, "dtype": "float16",
                 "meta": self.meta, "images": self.images}
        atomic_write_bytes(self.dir / "index.json", json.dumps(index, indent=1).encode("utf-8"))
        return self.dir / "index.json"


def read_probs_index(probs_dir) -> dict:
    """The index.json of a ``--save-probs`` directory, checked."""
    p = Path(probs_dir) / "index.json"
    try:
        with open(p, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{probs_dir} is not a --save-probs directory (no index.json)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(index, dict) or index.get("format") != PROBS_FORMAT:
        raise ValueError(f"{p} is not a pyseg probabilities index (format != {PROBS_FORMAT!r})")
    if index.get("version") != PROBS_VERSION:
        raise ValueError(f"{p}: unsupported version {index.get('version')!r}, expected {PROBS_VERSION}")
    for key in ("num_classes", "size", "images"):
        if key not in index:
            raise ValueError(f"{p}: missing {key!r}")
    return index


def load_probs(probs_dir, entry: dict, index: dict | None = None) -> np.ndarray:
    """(C, S, S) float32 probabilities of one image entry of the index."""
    f = Path(probs_dir) / entry["file"]
    try:
        with np.load(f) as z:
            p = z["probs"].astype(np.float32)
    except FileNotFoundError:
        raise ValueError(f"{f} is missing (listed in {Path(probs_dir) / 'index.json'})") from None
    if index is not None:
        want = (index["num_classes"], index["size"], index["size"])
        if p.shape != tuple(want):
            raise ValueError(f"{f}: probabilities of shape {p.shape}, index says {tuple(want)}")
    return p
