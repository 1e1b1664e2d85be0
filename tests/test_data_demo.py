"""Synthetic demo dataset: layout like the competition, deterministic, consistent with its images, learnable."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pyseg.cli.demo_data import main as demo_main
from pyseg.data import CocoSegmentation, make_demo_dataset
from pyseg.data.classes import TRASH11
from pyseg.training.metrics import SegMetrics


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return make_demo_dataset(root, n_train=16, n_val=6, n_test=4, size=64, seed=3)


def load(p):
    return json.loads(p.read_text())


def test_layout_like_the_competition(demo):
    root = demo["root"]
    for key in ("train", "val", "train_all", "test", "test_gt"):
        assert demo[key] == root / f"{key}.json" and demo[key].is_file()
    train, val, all_, test = (load(demo[k]) for k in ("train", "val", "train_all", "test"))
    assert len(train["images"]) == 16 and len(val["images"]) == 6 and len(test["images"]) == 4
    assert len(all_["images"]) == 22 and len(all_["annotations"]) == len(train["annotations"]) + len(val["annotations"])
    assert test["annotations"] == [] and len(load(demo["test_gt"])["annotations"]) > 0
    assert [c["name"] for c in train["categories"]] == TRASH11[1:]
    assert [c["id"] for c in train["categories"]] == list(range(1, 11))
    for d in (train, val, all_, test):
        ids = [i["id"] for i in d["images"]]
        assert len(set(ids)) == len(ids)
        assert len({a["id"] for a in d["annotations"]}) == len(d["annotations"])
        for img in d["images"]:
            assert img["file_name"].startswith("images/batch_0") and (root / img["file_name"]).is_file()
            assert (img["height"], img["width"]) == (64, 64)
    assert {i["file_name"].split("/")[1] for i in test["images"]} == {"batch_03"}
    kinds = {type(a["segmentation"]).__name__ for a in all_["annotations"]}
    assert kinds == {"list", "dict"}  # polygons and RLE
    assert len({a["category_id"] for a in all_["annotations"]}) >= 8


def test_deterministic_from_seed(tmp_path, demo):
    again = make_demo_dataset(tmp_path / "a", n_train=16, n_val=6, n_test=4, size=64, seed=3)
    assert load(again["train_all"]) == load(demo["train_all"])
    for img in load(demo["train"])["images"][:5]:
        assert (again["root"] / img["file_name"]).read_bytes() == (demo["root"] / img["file_name"]).read_bytes()
    other = make_demo_dataset(tmp_path / "b", n_train=16, n_val=6, n_test=4, size=64, seed=4)
    assert load(other["train"]) != load(demo["train"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode under NumPy 2
def test_objects_overlap_and_masks_match_the_drawing(demo):
    ds = CocoSegmentation(demo["root"], demo["train"], classes="trash11")
    overlaps = 0
    for i in range(len(ds)):
        anns = ds.coco.imgToAnns[ds.ids[i]]
        masks = [ds.coco.annToMask(a) for a in anns]
        overlaps += sum(int((a & b).any()) for k, a in enumerate(masks) for b in masks[k + 1:])
    assert overlaps >= 3
    # the picture is drawn by the area_desc rule: each class's pixels have that class's colour signature
    means = class_colour_means(ds)
    assert np.isfinite(means[1:]).all()
    assert min(np.abs(means[a] - means[b]).max() for a in range(11) for b in range(a + 1, 11)) > 10


def class_colour_means(ds):
    sums, counts = np.zeros((11, 3)), np.zeros(11)
    for i in range(len(ds)):
        it = ds[i]
        m = it["mask"].ravel()
        counts += np.bincount(m, minlength=11)
        for c in range(3):
            sums[:, c] += np.bincount(m, weights=it["image"][..., c].ravel().astype(float), minlength=11)
    return sums / np.maximum(counts, 1)[:, None]


def test_learnable_even_by_colour_alone(demo):
    """A nearest-mean-colour pixel classifier fit on train already beats chance clearly on val."""
    train = CocoSegmentation(demo["root"], demo["train"], classes="trash11")
    val = CocoSegmentation(demo["root"], demo["val"], classes="trash11")
    means = class_colour_means(train)
    metrics = SegMetrics(11, 255)
    for i in range(len(val)):
        it = val[i]
        d = ((it["image"][:, :, None, :].astype(float) - means[None, None]) ** 2).sum(-1)
        metrics.update(it["mask"], d.argmin(-1))
    res = metrics.compute()
    assert res["miou"] > 0.4, res  # 0.63 with seed 3


def test_cli(tmp_path, capsys):
    assert demo_main([str(tmp_path / "d"), "--n-train", "2", "--n-val", "1", "--n-test", "1", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "train.json" in out and (tmp_path / "d" / "test.json").is_file()
    assert demo_main([str(tmp_path / "e"), "--size", "8"]) == 2
    assert "size must be" in capsys.readouterr().err


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_train"):
        make_demo_dataset(tmp_path, n_train=0)
    with pytest.raises(TypeError, match="seed"):
        make_demo_dataset(tmp_path, seed="x")
