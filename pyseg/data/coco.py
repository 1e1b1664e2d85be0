"""COCO-format semantic segmentation, laid out like the recycling-trash competition.

A root folder holds images in subfolders; the json's ``images[i].file_name`` is relative to it (e.g.
``batch_01_vt/0002.jpg``). Masks are rasterised with pycocotools (polygons or RLE) and merged into one
(H,W) int64 class map, background 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from .classes import CATEGORY_OFFSET, PRESETS, palette_for, preset_names

log = logging.getLogger(__name__)

OVERLAP_MODES = ("area_desc", "max_index")
# A polygon vertex may lie this many pixels outside [0, W] x [0, H] (rounding in annotation tools).
POLYGON_TOLERANCE = 1.0


def read_rgb(path: str, what: str) -> np.ndarray:
    """Read an image file as (H,W,3) uint8 RGB; FileNotFoundError / ValueError name ``path`` and ``what``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path} ({what})")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"cannot read image {path} ({what}): {e}") from e


def _load_json(ann_file: str) -> dict:
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{ann_file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file}: expected a COCO json object, got {type(data).__name__}")
    return data


class CocoSegmentation(torch.utils.data.Dataset):
    """Semantic masks from a COCO json.

    Args:
        root: folder that ``file_name`` paths are relative to.
        ann_file: the COCO json (a path; if it does not exist as given, ``root/ann_file`` is tried).
        classes: None (json categories; class = category id, 0 = background; an id 0 category is an error),
            ``"trash11"`` (class = category id), ``"trash12"`` (class = category id + 1, id 0 = UNKNOWN), or a
            list of class names (class = position of the category's name in the list; index 0 = background).
        overlap: ``"area_desc"`` (annotations painted by decreasing ``area``: smaller objects end on top) or
            ``"max_index"`` (a shared pixel takes the highest class).
        transform: albumentations Compose called with ``image=``/``mask=`` (see ``pyseg.data.transforms``).

    Item ``ds[i]``: dict ``"image"`` (H,W,3) uint8 RGB or, with a transform, float tensor (3,h,w); ``"mask"``
    (H,W) int64 numpy or int64 tensor (h,w), absent when the json has no annotations at all (a test split);
    ``"image_id"`` the ``file_name``; ``"id"`` the COCO image id.
    """

    ignore_index = 255

    def __init__(self, root, ann_file, classes=None, overlap: str = "area_desc", transform=None):
        self.root = os.fspath(root)
        ann_file = os.fspath(ann_file)
        if not os.path.isfile(ann_file) and os.path.isfile(os.path.join(self.root, ann_file)):
            ann_file = os.path.join(self.root, ann_file)
        if not os.path.isfile(ann_file):
            raise FileNotFoundError(f"annotation file not found: {ann_file}")
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"image root folder not found: {self.root}")
        if overlap not in OVERLAP_MODES:
            raise ValueError(f"overlap must be one of {OVERLAP_MODES}, got {overlap!r}")
        self.ann_file = ann_file
        self.overlap = overlap
        self.transform = transform
        data = _load_json(ann_file)
        self._validate(data)
        self.class_names, self._cat_to_class, preset = self._class_map(data["categories"], classes)
        self.num_classes = len(self.class_names)
        self.palette = palette_for(self.class_names, preset)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        self.ids = [img["id"] for img in data["images"]]
        self.has_masks = bool(data.get("annotations"))
        self._anns = {i: self._ordered(self.coco.imgToAnns.get(i, [])) for i in self.ids}
        self.ram: list | None = None  # decoded (image, mask) pairs, filled by pyseg.data.ram_cache

    # ---------------------------------------------------------------- validation
    def _validate(self, data: dict) -> None:
        f = self.ann_file
        cats = data.get("categories")
        if not cats:
            raise ValueError(f"{f} has no categories (a 'categories' list is needed to name the classes)")
        for c in cats:
            if not isinstance(c, dict) or "id" not in c or "name" not in c:
                raise ValueError(f"{f}: every category needs 'id' and 'name', got {c!r}")
        cat_ids = {c["id"] for c in cats}
        images = data.get("images")
        if not isinstance(images, list):
            raise ValueError(f"{f} has no 'images' list")
        sizes = {}
        for img in images:
            for key in ("id", "file_name", "height", "width"):
                if key not in img:
                    raise ValueError(f"{f}: image entry {img.get('id', '?')} lacks '{key}'")
            if img["id"] in sizes:
                raise ValueError(f"{f}: duplicate image id {img['id']}")
            sizes[img["id"]] = (int(img["height"]), int(img["width"]))
        for a in data.get("annotations") or []:
            aid = a.get("id", "?")
            if a.get("image_id") not in sizes:
                raise ValueError(f"{f}: annotation {aid} refers to unknown image id {a.get('image_id')!r}")
            if a.get("category_id") not in cat_ids:
                raise ValueError(f"{f}: annotation {aid} (image {a['image_id']}) has unknown category_id "
                                 f"{a.get('category_id')!r}; categories are {sorted(cat_ids)}")
            self._check_segmentation(a, *sizes[a["image_id"]])

    def _check_segmentation(self, a: dict, h: int, w: int) -> None:
        where = f"{self.ann_file}: annotation {a.get('id', '?')} (image id {a['image_id']}, {w}x{h})"
        seg = a.get("segmentation")
        if isinstance(seg, list):
            if not seg:
                raise ValueError(f"{where} has an empty polygon list")
            for poly in seg:
                p = np.asarray(poly, dtype=np.float64)
                if p.ndim != 1 or p.size < 6 or p.size % 2 or not np.isfinite(p).all():
                    raise ValueError(f"{where}: a polygon must be a flat list of >= 3 finite x,y pairs")
                xs, ys = p[0::2], p[1::2]
                t = POLYGON_TOLERANCE
                if xs.min() < -t or ys.min() < -t or xs.max() > w + t or ys.max() > h + t:
                    raise ValueError(
                        f"{where}: polygon outside the image (x in [{xs.min():.1f}, {xs.max():.1f}], "
                        f"y in [{ys.min():.1f}, {ys.max():.1f}]; image is {w}x{h})")
        elif isinstance(seg, dict):
            if "counts" not in seg or "size" not in seg:
                raise ValueError(f"{where}: RLE segmentation needs 'size' and 'counts'")
            if [int(s) for s in seg["size"]] != [h, w]:
                raise ValueError(f"{where}: RLE size {seg['size']} differs from the image's [height, width] "
                                 f"[{h}, {w}]")
        else:
            raise ValueError(f"{where}: segmentation must be polygons (list) or RLE (dict), got "
                             f"{type(seg).__name__}")

    def _class_map(self, cats: list[dict], classes):
        f = self.ann_file
        if classes is None:
            ids = sorted(c["id"] for c in cats)
            if any(not isinstance(i, int) or i < 0 for i in ids):
                raise ValueError(f"{f}: category ids must be non-negative ints, got {ids}")
            if ids[0] == 0:
                raise ValueError(f"{f}: category id 0 ({[c['name'] for c in cats if c['id'] == 0][0]!r}) would "
                                 f"collide with background 0; use classes='trash12' (class = id + 1) or a list")
            names = [f"unused_{i}" for i in range(ids[-1] + 1)]
            names[0] = "Background"
            for c in cats:
                names[c["id"]] = str(c["name"])
            return names, {c["id"]: c["id"] for c in cats}, None
        if isinstance(classes, str):
            names = preset_names(classes)
            if classes not in CATEGORY_OFFSET:
                raise ValueError(f"class preset {classes!r} is not for COCO data; use one of {sorted(CATEGORY_OFFSET)}")
            off = CATEGORY_OFFSET[classes]
            mapping = {}
            for c in cats:
                k = c["id"] + off
                if not 1 <= k < len(names):
                    raise ValueError(f"{f}: category id {c['id']} ({c['name']!r}) does not fit preset {classes!r} "
                                     f"(ids {1 - off}..{len(names) - 1 - off})")
                if str(c["name"]).lower() != names[k].lower():
                    log.warning("%s: category %d is %r but preset %s calls class %d %r", f, c["id"], c["name"],
                                classes, k, names[k])
                mapping[c["id"]] = k
            return names, mapping, classes
        if isinstance(classes, (list, tuple)) and all(isinstance(n, str) for n in classes) and classes:
            names = list(classes)
            lower = {n.lower(): i for i, n in enumerate(names)}
            mapping, unknown = {}, []
            for c in cats:
                k = names.index(c["name"]) if c["name"] in names else lower.get(str(c["name"]).lower())
                if k is None:
                    unknown.append(c["name"])
                else:
                    mapping[c["id"]] = k
            if unknown:
                raise ValueError(f"{f}: categories {unknown} are not in the class list {names}")
            return names, mapping, None
        raise TypeError(f"classes must be None, one of {sorted(PRESETS)} or a list of names, got {classes!r}")

    def _ordered(self, anns: list[dict]) -> list[dict]:
        if self.overlap != "area_desc":
            return list(anns)

        def area(a):
            if "area" in a:
                return float(a["area"])
            return float(mask_utils.area(self.coco.annToRLE(a)))

        return sorted(anns, key=area, reverse=True)  # stable: ties keep json order

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.ids)

    def image_info(self, index: int) -> dict:
        """The json's image entry (id, file_name, height, width, ...) of item ``index``."""
        return self.coco.imgs[self.ids[index]]

    def image_ids(self) -> list[str]:
        """The ``image_id`` of every item, in order (the json's file names; a submission's row order)."""
        return [str(self.coco.imgs[i]["file_name"]) for i in self.ids]

    def load_image(self, index: int) -> np.ndarray:
        """(H,W,3) uint8 RGB; errors name the file and id (missing, unreadable, size differs from the json)."""
        info = self.image_info(index)
        path = os.path.join(self.root, info["file_name"])
        img = read_rgb(path, f"image id {info['id']} in {self.ann_file}")
        if img.shape[:2] != (info["height"], info["width"]):
            raise ValueError(f"image {path} (id {info['id']}) is {img.shape[1]}x{img.shape[0]} but "
                             f"{self.ann_file} says {info['width']}x{info['height']}")
        return img

    def load_mask(self, index: int) -> np.ndarray:
        """(H,W) int64 class map of item ``index`` (background 0), merged by the ``overlap`` rule."""
        info = self.image_info(index)
        mask = np.zeros((info["height"], info["width"]), dtype=np.int64)
        for a in self._anns[info["id"]]:
            with warnings.catch_warnings():  # pycocotools' decode trips a NumPy 2 copy-keyword deprecation
                warnings.simplefilter("ignore", DeprecationWarning)
                m = self.coco.annToMask(a).astype(bool)
            cls = self._cat_to_class[a["category_id"]]
            if self.overlap == "area_desc":
                mask[m] = cls
            else:
                np.maximum(mask, m * cls, out=mask)
        return mask

    def load_item(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(image, mask or None) of item ``index``, decoded from disk (see ``pyseg.data.ram_cache``)."""
        mask = self.load_mask(index) if self.has_masks else None
        if mask is not None and mask.max(initial=0) < 256:
            mask = mask.astype(np.uint8)  # 8x less memory in a RAM cache; cast back to int64 on the way out
        return self.load_image(index), mask

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        info = self.image_info(index)
        image, mask = self.ram[index] if self.ram is not None else self.load_item(index)
        return apply_transform(self.transform, image, mask, info["file_name"], info["id"])

    def __repr__(self) -> str:
        return (f"CocoSegmentation({Path(self.ann_file).name}: {len(self)} images, {self.num_classes} classes, "
                f"overlap={self.overlap!r}, masks={self.has_masks})")


def apply_transform(transform, image: np.ndarray, mask: np.ndarray | None, image_id: str, idx: int) -> dict:
    """Build an item dict, running an albumentations transform when given (mask cast to int64)."""
    item: dict = {"image_id": image_id, "id": idx}
    if transform is None:
        item["image"] = image
        if mask is not None:
            item["mask"] = mask.astype(np.int64, copy=False)
        return item
    if mask is None:
        out = transform(image=image)
    else:
        small = mask.astype(np.uint8) if mask.min() >= 0 and mask.max() <= 255 else mask.astype(np.int32)
        out = transform(image=image, mask=small)
    img = out["image"]
    item["image"] = img if isinstance(img, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(img))
    if mask is not None:
        m = out["mask"]
        m = m if isinstance(m, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(m))
        item["mask"] = m.long()
    return item
