"""Saved-probability directories (``pyseg-predict --save-probs``): class probabilities kept for ensembling.

Format (written by :class:`ProbsWriter`, read by :func:`read_probs_index` and :func:`load_probs`,
averaged into a submission by :func:`ensemble_probs`): a directory holding

* ``index.json``: ``{"format": "pyseg-probs", "version": 1, "num_classes": C, "class_names": [...],
  "size": S, "dtype": "float16", "meta": {...}, "images": [{"image_id": file_name, "id": int,
  "file": "000000.npz", "height": H, "width": W}, ...]}`` with images in the json's order
  (``height``/``width`` are the original image's size);
* one ``NNNNNN.npz`` per image (``np.savez_compressed``) with the array ``probs``: float16, shape
  (C, S, S), the class probabilities that produced the submission row (after the CRF when it was on),
  sampled at the submission resolution with the same nearest-neighbour indices as the class map
  (:func:`pyseg.submission.resize_nearest`) and stored so that their argmax is the submission's map
  (:func:`float16_keeping_argmax`): an ensemble of one saved directory reproduces its submission exactly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pyseg.fileio import atomic_write, atomic_write_bytes, read_json
from pyseg.submission import SubmissionWriter

PROBS_FORMAT = "pyseg-probs"
PROBS_VERSION = 1


def float16_keeping_argmax(probs: np.ndarray) -> np.ndarray:
    """(C, ...) probabilities as float16 whose argmax over axis 0 is the input's.

    Rounding keeps the order of two values but can make them equal; where that ties the top class with a
    lower-numbered one, the top class moves up one float16 step, so a submission and the argmax of its saved
    probabilities are the same map."""
    p = np.asarray(probs)
    half = p.astype(np.float16)
    top = p.argmax(0)[None]
    lost = half.argmax(0)[None] != top
    if lost.any():
        kept = np.take_along_axis(half, top, 0)
        np.put_along_axis(half, top, np.where(lost, np.nextafter(kept, np.float16(np.inf)), kept), 0)
    return half


class ProbsWriter:
    """Writes the directory described in the module docstring."""

    def __init__(self, out_dir, num_classes: int, class_names: Sequence[str] | None, size: int,
                 meta: dict | None = None):
        self.dir = Path(out_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create the probabilities directory {self.dir}: {e.strerror or e}") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise ValueError(f"the probabilities directory {self.dir} is not writable")
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
            np.savez_compressed(f, probs=float16_keeping_argmax(p))
        self.images.append({"image_id": str(image_id), "id": int(image_int_id), "file": name,
                            "height": int(height), "width": int(width)})

    def close(self) -> Path:
        index = {"format": PROBS_FORMAT, "version": PROBS_VERSION, "num_classes": self.num_classes,
                 "class_names": self.class_names, "size": self.size, "dtype": "float16",
                 "meta": self.meta, "images": self.images}
        atomic_write_bytes(self.dir / "index.json", json.dumps(index, indent=1).encode("utf-8"),
                           create_parent=False)
        return self.dir / "index.json"


def read_probs_index(probs_dir) -> dict:
    """The index.json of a saved-probabilities directory, checked."""
    p = Path(probs_dir) / "index.json"
    if not p.is_file():
        raise ValueError(f"{probs_dir} is not a directory of saved probabilities (no index.json)")
    index = read_json(p, "probabilities index")
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


def ensemble_probs(probs_dirs: Sequence, out_csv, weights: Sequence[float] | None = None,
                   expected_ids: Sequence[str] | None = None) -> Path:
    """Average the probabilities of several saved-probability directories and write a submission.

    All directories must hold the same images in the same order, the same class count (and class
    names when recorded) and the same size. ``weights`` (one per directory, default equal) are
    normalised to sum to 1. Returns the CSV path.
    """
    dirs = [Path(d) for d in probs_dirs]
    if not dirs:
        raise ValueError("an ensemble needs at least one directory of saved probabilities")
    if weights is None:
        weights = [1.0] * len(dirs)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(dirs),) or not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(dirs)} non-negative numbers with a positive sum, got {weights!r}")
    w = w / w.sum()
    indexes = [read_probs_index(d) for d in dirs]
    ref = indexes[0]
    ref_ids = [e["image_id"] for e in ref["images"]]
    for d, ix in zip(dirs[1:], indexes[1:]):
        for key in ("num_classes", "size"):
            if ix[key] != ref[key]:
                raise ValueError(f"{d}: {key} = {ix[key]}, but {dirs[0]} has {ref[key]}")
        if ix.get("class_names") and ref.get("class_names") and ix["class_names"] != ref["class_names"]:
            raise ValueError(f"{d}: class names differ from {dirs[0]}")
        ids = [e["image_id"] for e in ix["images"]]
        if ids != ref_ids:
            raise ValueError(f"{d}: images differ from {dirs[0]} ({len(ids)} vs {len(ref_ids)} images, "
                             "or another order)")
    if expected_ids is not None and list(expected_ids) != ref_ids:
        raise ValueError(f"the saved probabilities' images ({len(ref_ids)}) differ from the expected ones "
                         f"({len(expected_ids)}, e.g. the json's)")
    size, c = ref["size"], ref["num_classes"]
    with SubmissionWriter(out_csv, ref_ids, size, c) as writer:
        for i, entry in enumerate(ref["images"]):
            acc = np.zeros((c, size, size), dtype=np.float32)
            for k, (d, ix) in enumerate(zip(dirs, indexes)):
                acc += np.float32(w[k]) * load_probs(d, ix["images"][i], ix)
            writer.write(entry["image_id"], acc.argmax(0))
    return Path(out_csv)
