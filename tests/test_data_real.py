"""The loaders on the real data in ../shared/data (TrashCan as COCO, CamVid label PNGs); skipped when absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyseg.data import CocoSegmentation, MaskFolderSegmentation, eval_transform
from pyseg.data.classes import CAMVID11, CAMVID_PALETTE

pytestmark = [pytest.mark.data, pytest.mark.filterwarnings("ignore::DeprecationWarning")]  # pycocotools/NumPy 2


@pytest.fixture(scope="module")
def trashcan(shared_data):
    root = shared_data / "trashcan"
    if not (root / "train.json").is_file():
        pytest.skip(f"no TrashCan data at {root}")
    return root


@pytest.fixture(scope="module")
def trash_train(trashcan):
    return CocoSegmentation(trashcan, trashcan / "train.json")


def test_trashcan_train_masks(trash_train):
    ds = trash_train
    assert len(ds) == 842 and ds.num_classes == 23  # 22 categories (ids 1..22) + background
    assert ds.class_names[0] == "Background" and ds.class_names[1] == "rov"
    annotated = 0
    for i in range(0, len(ds), 120):
        item = ds[i]
        h, w = item["image"].shape[:2]
        assert (h, w) in ((270, 480), (360, 480)) and item["image"].dtype == np.uint8
        m = item["mask"]
        assert m.shape == (h, w) and m.dtype == np.int64 and 0 <= m.min() and m.max() < 23
        assert item["image_id"].startswith("images/")
        annotated += bool(m.any())
        anns = ds.coco.imgToAnns[item["id"]]
        assert bool(m.any()) == bool(anns)
    assert annotated >= 5


def test_trashcan_overlap_rule_on_a_real_overlap(trash_train):
    ds = trash_train
    maxi = CocoSegmentation(ds.root, ds.ann_file, overlap="max_index")
    for i, img_id in enumerate(ds.ids):
        anns = ds.coco.imgToAnns[img_id]
        if len(anns) < 2 or len({a["category_id"] for a in anns}) < 2:
            continue
        masks = [ds.coco.annToMask(a).astype(bool) for a in anns]
        shared = np.zeros_like(masks[0], dtype=np.int32)
        for m in masks:
            shared += m
        if not (shared > 1).any():
            continue
        a_mask, m_mask = ds.load_mask(i), maxi.load_mask(i)
        px = shared > 1
        cats = np.array([a["category_id"] for a in anns])
        stack = np.stack(masks)
        # max_index: the highest class among the covering annotations
        assert (m_mask[px] == np.where(stack, cats[:, None, None], 0).max(0)[px]).all()
        # area_desc: the covering annotation with the smallest area (pixels without a tie)
        areas = np.where(stack, np.array([a["area"] for a in anns], float)[:, None, None], np.inf)
        best = areas.min(0)
        untied = px & ((areas == best).sum(0) == 1)
        assert untied.any()
        assert (a_mask[untied] == cats[areas.argmin(0)][untied]).all()
        assert not np.array_equal(a_mask, m_mask) or (cats[areas.argmin(0)] == m_mask)[px].all()
        return
    pytest.skip("no overlapping annotations of different classes found")


def test_trashcan_test_split_has_no_masks(trashcan):
    ds = CocoSegmentation(trashcan, trashcan / "test.json", transform=eval_transform(256))
    assert len(ds) == 150 and not ds.has_masks
    item = ds[0]
    assert "mask" not in item and item["image"].shape == (3, 256, 256)


@pytest.fixture(scope="module")
def camvid(shared_data):
    root = shared_data / "camvid"
    if not (root / "trainannot").is_dir():
        pytest.skip(f"no CamVid data at {root}")
    return root


@pytest.mark.parametrize("split,count", [("train", 367), ("val", 101)])
def test_camvid_void_is_ignored(camvid, split, count):
    if not (camvid / f"{split}annot").is_dir():
        pytest.skip(f"no CamVid {split} split")
    ds = MaskFolderSegmentation(camvid / split, camvid / f"{split}annot", "camvid11")
    assert len(ds) == count and ds.class_names == CAMVID11 and ds.num_classes == 11
    assert np.array_equal(ds.palette, CAMVID_PALETTE)
    seen = set()
    for i in range(0, len(ds), max(1, len(ds) // 6)):
        item = ds[i]
        assert item["image"].shape == (360, 480, 3) and item["mask"].shape == (360, 480)
        vals = set(np.unique(item["mask"]).tolist())
        assert vals <= set(range(11)) | {255}
        seen |= vals
    assert 255 in seen and len(seen - {255}) >= 8
    t = MaskFolderSegmentation(camvid / split, camvid / f"{split}annot", "camvid11", transform=eval_transform(64))
    assert t[0]["mask"].dtype == torch.int64 and t[0]["image"].shape == (3, 64, 64)
