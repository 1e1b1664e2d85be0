"""The trainer reads image + label-PNG folders (CamVid layout) as well as COCO json."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from pyseg.config import Config  # noqa: E402
from pyseg.training.build import build_datasets  # noqa: E402


def _write_split(root, images, masks, n, rng):
    (root / images).mkdir(parents=True)
    (root / masks).mkdir(parents=True)
    for i in range(n):
        img = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
        lab = rng.integers(0, 12, (36, 48), dtype=np.uint8)  # 11 = CamVid void
        Image.fromarray(img).save(root / images / f"f{i:03d}.png")
        Image.fromarray(lab, mode="L").save(root / masks / f"f{i:03d}.png")


def _config(root, **data):
    cfg = Config()
    cfg.data.root = str(root)
    cfg.data.format = "mask_folder"
    cfg.data.classes = "camvid11"
    cfg.data.image_size = 32
    for k, v in data.items():
        setattr(cfg.data, k, v)
    return cfg


def test_mask_folder_datasets_map_void_to_ignore_index(tmp_path):
    rng = np.random.default_rng(0)
    _write_split(tmp_path, "train", "trainannot", 3, rng)
    _write_split(tmp_path, "val", "valannot", 2, rng)
    train_set, val_set = build_datasets(_config(tmp_path).data)
    assert (len(train_set), len(val_set)) == (3, 2)
    assert train_set.num_classes == 11
    item = val_set[0]
    assert tuple(item["image"].shape) == (3, 32, 32)
    mask = item["mask"].numpy()
    assert set(np.unique(mask)) <= set(range(11)) | {255}
    assert (mask == 255).any()  # void (11) became the ignore index


def test_mask_folder_needs_classes_and_existing_folders(tmp_path):
    rng = np.random.default_rng(1)
    _write_split(tmp_path, "train", "trainannot", 1, rng)
    _write_split(tmp_path, "val", "valannot", 1, rng)
    with pytest.raises(ValueError, match="data.classes must be set"):
        build_datasets(_config(tmp_path, classes=None).data)
    with pytest.raises(FileNotFoundError, match="nope"):
        build_datasets(_config(tmp_path, val_images="nope").data)
