"""Image + label-PNG pairs (CamVid style): ``image_dir/NAME.ext`` with ``mask_dir/NAME.png``."""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .classes import CAMVID_VOID, PRESETS, palette_for, preset_names
from .coco import apply_transform, read_rgb

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_DEFAULT_VOID = {"camvid11": (CAMVID_VOID,)}


class MaskFolderSegmentation(torch.utils.data.Dataset):
    """Semantic segmentation from an image folder and a folder of single-channel label PNGs.

    Args:
        image_dir: folder of RGB images.
        mask_dir: folder of label PNGs with the same stem (value = class index), mode ``L``/``P``/``I``;
            None for unlabelled images (items then have no ``"mask"``, ``has_masks`` is False).
        classes: preset name (``"camvid11"``) or list of class names; C = len(classes).
        ignore_index: value written for ignored pixels (void labels and pixels already equal to it).
        transform: albumentations Compose (see ``pyseg.data.transforms``).
        void_labels: label values mapped to ``ignore_index``; None = the preset's (CamVid: 11), else none.

    Item: like :class:`pyseg.data.CocoSegmentation` (``"image"``, ``"mask"`` (H,W) int64 with values in
    0..C-1 or ``ignore_index``, ``"image_id"`` = image file name, ``"id"`` = index). Any other label value is
    a ValueError naming the file.
    """

    def __init__(self, image_dir, mask_dir, classes, ignore_index: int = 255, transform=None,
                 void_labels=None):
        self.image_dir = os.fspath(image_dir)
        self.mask_dir = os.fspath(mask_dir) if mask_dir is not None else None
        self.has_masks = self.mask_dir is not None
        for d in (self.image_dir, self.mask_dir):
            if d is not None and not os.path.isdir(d):
                raise FileNotFoundError(f"folder not found: {d}")
        preset = classes if isinstance(classes, str) else None
        if preset is not None:
            self.class_names = preset_names(classes)
        elif isinstance(classes, (list, tuple)) and classes and all(isinstance(c, str) for c in classes):
            self.class_names = list(classes)
        else:
            raise TypeError(f"classes must be one of {sorted(PRESETS)} or a list of names, got {classes!r}")
        self.num_classes = len(self.class_names)
        if not isinstance(ignore_index, int) or 0 <= ignore_index < self.num_classes:
            raise ValueError(f"ignore_index must be an int outside 0..{self.num_classes - 1}, got {ignore_index!r}")
        self.ignore_index = ignore_index
        self.void_labels = tuple(_DEFAULT_VOID.get(preset, ()) if void_labels is None else void_labels)
        self.palette = palette_for(self.class_names, preset)
        self.transform = transform
        images = sorted(n for n in os.listdir(self.image_dir) if n.lower().endswith(IMAGE_EXTS))
        if not images:
            raise ValueError(f"no images ({', '.join(IMAGE_EXTS)}) in {self.image_dir}")
        masks = {}
        if self.has_masks:
            masks = {os.path.splitext(n)[0]: n for n in os.listdir(self.mask_dir) if n.lower().endswith(".png")}
            missing = [n for n in images if os.path.splitext(n)[0] not in masks]
            if missing:
                raise FileNotFoundError(f"{len(missing)} images in {self.image_dir} have no label PNG in "
                                        f"{self.mask_dir}, e.g. {missing[:3]}")
        self.files = [(n, masks.get(os.path.splitext(n)[0])) for n in images]
        lut = np.full(65536, -1, dtype=np.int64)
        lut[: self.num_classes] = np.arange(self.num_classes)
        for v in (*self.void_labels, ignore_index):
            if 0 <= v < 65536:
                lut[v] = ignore_index
        self._lut = lut
        self.ram: list | None = None  # decoded (image, mask) pairs, filled by pyseg.data.ram_cache

    def __len__(self) -> int:
        return len(self.files)

    def image_ids(self) -> list[str]:
        """The ``image_id`` of every item, in order (the image file names; a submission's row order)."""
        return [name for name, _ in self.files]

    def load_image(self, index: int) -> np.ndarray:
        """(H,W,3) uint8 RGB of item ``index``."""
        return read_rgb(os.path.join(self.image_dir, self.files[index][0]), f"item {index}")

    def load_mask(self, index: int) -> np.ndarray:
        """(H,W) int64 labels (0..C-1 or ignore_index); ValueError names the file for any other value."""
        if not self.has_masks:
            raise ValueError(f"{self!r} has no label folder")
        path = os.path.join(self.mask_dir, self.files[index][1])
        try:
            with Image.open(path) as im:
                if im.mode not in ("L", "P", "I", "I;16"):
                    raise ValueError(f"label PNG {path} has mode {im.mode}; expected single-channel L/P/I")
                raw = np.asarray(im)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"cannot read label PNG {path}: {e}") from e
        if raw.min() < 0 or raw.max() >= len(self._lut):
            raise ValueError(f"label PNG {path} has values outside 0..65535")
        mask = self._lut[raw]
        if (mask < 0).any():
            bad = np.unique(raw[mask < 0])[:10].tolist()
            raise ValueError(f"label PNG {path} has values {bad} that are neither classes 0..{self.num_classes - 1}, "
                             f"void {list(self.void_labels)} nor ignore_index {self.ignore_index}")
        return mask

    def load_item(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(image, mask or None) of item ``index``, decoded from disk and checked for equal sizes."""
        if not self.has_masks:
            return self.load_image(index), None
        image, mask = self.load_image(index), self.load_mask(index)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"image {self.files[index][0]} is {image.shape[1]}x{image.shape[0]} but its label "
                             f"{self.files[index][1]} is {mask.shape[1]}x{mask.shape[0]}")
        if mask.min(initial=0) >= 0 and mask.max(initial=0) < 256:
            mask = mask.astype(np.uint8)  # 8x less memory in a RAM cache; cast back to int64 on the way out
        return image, mask

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index %= len(self)
        image, mask = self.ram[index] if self.ram is not None else self.load_item(index)
        return apply_transform(self.transform, image, mask, self.files[index][0], index)

    def __repr__(self) -> str:
        return (f"MaskFolderSegmentation({self.image_dir}: {len(self)} images, {self.num_classes} classes, "
                f"masks={self.mask_dir})")
