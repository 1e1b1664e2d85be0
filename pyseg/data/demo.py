"""A small synthetic dataset in the competition's COCO layout, so the demo runs on a fresh machine.

Each image has a textured background (smooth noise in muted tones, sometimes tiles) and 2-5 objects of the
ten trash11 object classes; every class has its own shape, colour and texture (e.g. Metal = silver disc with a
highlight, Battery = long red bar with a dark band, Plastic bag = yellow star), with jitter, random size,
rotation and position, and objects overlap. Objects are painted by decreasing area, the ``"area_desc"`` rule,
so the default loader reproduces exactly what is drawn. About a quarter of the annotations are stored as RLE,
the rest as polygons. Everything is a deterministic function of ``seed``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pyseg.fileio import atomic_write

from .classes import TRASH_OBJECTS

log = logging.getLogger(__name__)

# class id -> (shape, base RGB, texture)
_STYLE = {
    1: ("blob", (200, 60, 160), "noise"),        # General trash
    2: ("rect", (235, 235, 220), "lines"),       # Paper
    3: ("box", (165, 110, 55), "noise"),         # Paper pack
    4: ("circle", (185, 190, 205), "shine"),     # Metal
    5: ("ellipse", (40, 165, 85), "shine"),      # Glass
    6: ("triangle", (40, 90, 220), "noise"),     # Plastic
    7: ("diamond", (250, 250, 250), "dots"),     # Styrofoam
    8: ("star", (235, 210, 40), "noise"),        # Plastic bag
    9: ("bar", (215, 40, 30), "band"),           # Battery
    10: ("hexagon", (120, 40, 170), "stripes"),  # Clothing
}


def _shape(kind: str, rng: np.random.Generator, cx: float, cy: float, r: float) -> np.ndarray:
    """(N,2) polygon vertices (x, y) of a shape of radius ~r centred at (cx, cy), randomly rotated."""
    if kind in ("circle", "ellipse", "blob"):
        n = 20
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        if kind == "circle":
            rx, ry = np.full(n, r), np.full(n, r)
        elif kind == "ellipse":
            rx, ry = np.full(n, r), np.full(n, r * 0.5)
        else:
            k = rng.uniform(0.55, 1.0, size=9)
            rad = np.interp(t, np.linspace(0, 2 * np.pi, 10), np.append(k, k[0])) * r
            rx = ry = rad
        pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    elif kind in ("rect", "box", "bar"):
        a = {"rect": (1.0, 0.75), "box": (0.85, 0.85), "bar": (1.0, 0.28)}[kind]
        pts = np.array([[-a[0], -a[1]], [a[0], -a[1]], [a[0], a[1]], [-a[0], a[1]]]) * r
    elif kind == "triangle":
        t = np.array([90, 210, 330]) * np.pi / 180
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif kind == "diamond":
        pts = np.array([[0, -1], [0.8, 0], [0, 1], [-0.8, 0]]) * r
    elif kind == "star":
        t = np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    elif kind == "hexagon":
        t = np.arange(6) * np.pi / 3
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    else:  # pragma: no cover - _STYLE is fixed
        raise ValueError(kind)
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + (cx, cy)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """(h,w) float noise in [-1, 1] with ``cells`` random values per side, bilinearly upsampled."""
    small = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.BILINEAR))


def _background(rng: np.random.Generator, s: int) -> np.ndarray:
    base = rng.uniform(70, 150) + rng.uniform(-25, 25, size=3)
    img = base + 35 * _smooth_noise(rng, s, s, 4)[..., None] + rng.normal(0, 8, size=(s, s, 3))
    if rng.random() < 0.4:  # floor tiles
        period = int(rng.integers(12, 28))
        yy, xx = np.mgrid[:s, :s]
        img -= 25 * (((yy % period) < 2) | ((xx % period) < 2))[..., None]
    return img


def _texture(kind: str, rng: np.random.Generator, s: int, colour: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(s,s,3) float colour field for one object (only its masked pixels are used)."""
    yy, xx = np.mgrid[:s, :s].astype(np.float32)
    img = np.broadcast_to(colour, (s, s, 3)).astype(np.float32) + rng.normal(0, 6, size=(s, s, 3))
    cx, cy = poly.mean(0)
    if kind == "lines":
        img -= 70 * ((yy.astype(int) % 6) == 0)[..., None] * np.array([1.0, 0.6, 0.0])
    elif kind == "stripes":
        img += 60 * (((xx + yy).astype(int) // 4) % 2)[..., None]
    elif kind == "dots":
        img -= 80 * (((xx.astype(int) % 5) == 0) & ((yy.astype(int) % 5) == 0))[..., None]
    elif kind == "shine":
        d = np.hypot(xx - cx + 3, yy - cy + 3)
        img += 70 * np.exp(-(d / 4.0) ** 2)[..., None]
    elif kind == "band":
        d = np.hypot(xx - cx, yy - cy)
        img *= np.where(d < 3.0, 0.25, 1.0)[..., None]
    else:
        img += 25 * _smooth_noise(rng, s, s, 6)[..., None]
    return img


def _render(rng: np.random.Generator, s: int) -> tuple[np.ndarray, list[dict]]:
    """One image (s,s,3) uint8 and its annotations (without ids), painted in decreasing-area order."""
    img = _background(rng, s)
    objs = []
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.integers(1, 11))
        kind, colour, tex = _STYLE[cls]
        r = rng.uniform(0.12, 0.26) * s
        cx, cy = rng.uniform(0.15 * s, 0.85 * s, size=2)
        poly = np.clip(_shape(kind, rng, cx, cy, r), 0, s)
        flat = [round(float(v), 2) for v in poly.reshape(-1)]
        rle = mask_utils.merge(mask_utils.frPyObjects([flat], s, s))
        area = int(mask_utils.area(rle))
        if area < 20:
            continue
        jitter = np.clip(np.asarray(colour) + rng.uniform(-20, 20, size=3), 0, 255)
        objs.append({"cls": cls, "poly": flat, "rle": rle, "area": area, "tex": _texture(tex, rng, s, jitter, poly),
                     "as_rle": bool(rng.random() < 0.25)})
    objs.sort(key=lambda o: o["area"], reverse=True)  # stable, same rule as the loader's area_desc
    anns = []
    for o in objs:
        with warnings.catch_warnings():  # pycocotools' decode trips a NumPy 2 copy-keyword deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            m = mask_utils.decode(o["rle"]).astype(bool)
        img[m] = o["tex"][m]
        x, y, w, h = (float(v) for v in mask_utils.toBbox(o["rle"]))
        if o["as_rle"]:
            seg = {"size": [s, s], "counts": o["rle"]["counts"].decode("ascii")}
        else:
            seg = [o["poly"]]
        anns.append({"category_id": o["cls"], "segmentation": seg, "area": o["area"], "bbox": [x, y, w, h],
                     "iscrowd": 0})
    return np.clip(img, 0, 255).astype(np.uint8), anns


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f)


def _coco(entries: list[tuple[str, list[dict]]], size: int, with_anns: bool) -> dict:
    images, anns = [], []
    for img_id, (file_name, objs) in enumerate(entries):
        images.append({"id": img_id, "file_name": file_name, "height": size, "width": size})
        if with_anns:
            for a in objs:
                anns.append({"id": len(anns), "image_id": img_id, **a})
    cats = [{"id": i + 1, "name": n, "supercategory": n} for i, n in enumerate(TRASH_OBJECTS)]
    return {"info": {"description": "pyseg synthetic demo data (trash11 classes)"}, "licenses": [],
            "categories": cats, "images": images, "annotations": anns}


def make_demo_dataset(root, n_train: int = 48, n_val: int = 16, n_test: int = 16, size: int = 128,
                      seed: int = 0) -> dict[str, Path]:
    """Write a synthetic competition-style dataset under ``root``; returns its paths.

    Writes ``images/batch_0{1,2,3}/NNNN.jpg`` (train/val alternate between batch_01 and batch_02, test in
    batch_03), ``train.json``, ``val.json``, ``train_all.json`` (train + val, renumbered), ``test.json`` (images
    only, ``"annotations": []``) and ``test_gt.json`` (the test images with their annotations, for evaluation).
    Categories are the trash11 objects (ids 1..10); use ``classes="trash11"``. Images are ``size`` x ``size``
    RGB JPEGs (quality 95). Returns ``{"root", "images", "train", "val", "train_all", "test", "test_gt"}``.
    """
    for name, v, lo in (("n_train", n_train, 1), ("n_val", n_val, 0), ("n_test", n_test, 0), ("size", size, 32)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    root = Path(root)
    rng = np.random.default_rng(int(seed))
    counters = {1: 0, 2: 0, 3: 0}
    splits: dict[str, list[tuple[str, list[dict]]]] = {"train": [], "val": [], "test": []}
    plan = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    for k, split in enumerate(plan):
        batch = 3 if split == "test" else 1 + k % 2
        counters[batch] += 1
        rel = f"images/batch_{batch:02d}/{counters[batch]:04d}.jpg"
        img, anns = _render(rng, int(size))
        path = root / rel
        with atomic_write(path, "wb") as f:
            Image.fromarray(img).save(f, format="JPEG", quality=95)
        splits[split].append((rel, anns))
    paths = {"root": root, "images": root / "images"}
    for name, entries, with_anns in (("train", splits["train"], True), ("val", splits["val"], True),
                                     ("train_all", splits["train"] + splits["val"], True),
                                     ("test", splits["test"], False), ("test_gt", splits["test"], True)):
        paths[name] = root / f"{name}.json"
        _write_json(paths[name], _coco(entries, int(size), with_anns))
    log.info("demo dataset: %d train, %d val, %d test images of %dx%d in %s", n_train, n_val, n_test, size, size,
             root)
    return paths
