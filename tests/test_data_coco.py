"""CocoSegmentation and MaskFolderSegmentation on small synthetic files written by the tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from pyseg.data import CocoSegmentation, MaskFolderSegmentation, eval_transform
from pyseg.data.classes import TRASH11, TRASH12

H, W = 40, 60


def square(x0, y0, x1, y1):
    """Polygon of the pixel block [x0, x1) x [y0, y1) (COCO polygons run along pixel edges)."""
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def write_image(path, h=H, w=W, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def make_coco(tmp_path, anns, images=None, categories=None, name="ann.json", write_images=True):
    """Write a COCO json (and PNG images) under tmp_path; returns (root, json path)."""
    images = images if images is not None else [{"id": 7, "file_name": "batch_01/0001.png", "height": H, "width": W}]
    categories = categories if categories is not None else [{"id": i, "name": n} for i, n in enumerate(TRASH11)
                                                            if i > 0]
    for i, a in enumerate(anns):
        a.setdefault("id", 100 + i)
        a.setdefault("image_id", images[0]["id"])
        a.setdefault("iscrowd", 0)
    if write_images:
        for k, img in enumerate(images):
            write_image(tmp_path / img["file_name"], img["height"], img["width"], seed=k)
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return tmp_path, path


def test_item_format_and_polygon_mask(tmp_path):
    root, ann = make_coco(tmp_path, [{"category_id": 3, "segmentation": square(10, 5, 20, 15), "area": 100}])
    ds = CocoSegmentation(root, ann, classes="trash11")
    assert len(ds) == 1 and ds.num_classes == 11 and ds.class_names == TRASH11
    assert ds.palette.shape == (11, 3) and ds.palette.dtype == np.uint8
    item = ds[0]
    assert set(item) == {"image", "mask", "image_id", "id"}
    assert item["image_id"] == "batch_01/0001.png" and item["id"] == 7
    img = item["image"]
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert np.array_equal(img, np.asarray(Image.open(tmp_path / "batch_01/0001.png").convert("RGB")))
    m = item["mask"]
    assert m.shape == (H, W) and m.dtype == np.int64
    expect = np.zeros((H, W), np.int64)
    expect[5:15, 10:20] = 3
    assert np.array_equal(m, expect)


def test_ann_file_relative_to_root_and_negative_index(tmp_path):
    root, _ = make_coco(tmp_path, [{"category_id": 1, "segmentation": square(0, 0, 5, 5), "area": 25}])
    ds = CocoSegmentation(root, "ann.json", classes="trash11")
    assert ds[-1]["id"] == 7
    with pytest.raises(IndexError):
        ds[1]


# ---------------------------------------------------------------- overlap rules
BIG = square(0, 0, 30, 30)  # area 900
SMALL = square(20, 20, 40, 35)  # area 300, overlaps BIG on [20,30) x [20,30)


@pytest.mark.parametrize("big_cls,small_cls", [(5, 2), (2, 5)])
def test_overlap_modes(tmp_path, big_cls, small_cls):
    # the small object comes first in the json: area_desc must still paint it last
    anns = [{"category_id": small_cls, "segmentation": SMALL, "area": 300},
            {"category_id": big_cls, "segmentation": BIG, "area": 900}]
    root, ann = make_coco(tmp_path, anns)
    area = CocoSegmentation(root, ann, classes="trash11", overlap="area_desc")[0]["mask"]
    maxi = CocoSegmentation(root, ann, classes="trash11", overlap="max_index")[0]["mask"]
    shared = (slice(20, 30), slice(20, 30))
    assert (area[shared] == small_cls).all()  # smaller object on top
    assert (maxi[shared] == max(big_cls, small_cls)).all()  # higher class wins
    for m in (area, maxi):
        assert (m[0:20, 0:30] == big_cls).all() and (m[30:35, 20:40] == small_cls).all()
        assert (m[35:, :] == 0).all() and (m[:, 40:] == 0).all()


def test_area_desc_uses_rasterised_area_when_area_missing(tmp_path):
    anns = [{"category_id": 2, "segmentation": SMALL}, {"category_id": 5, "segmentation": BIG}]
    root, ann = make_coco(tmp_path, anns)
    assert (CocoSegmentation(root, ann, classes="trash11")[0]["mask"][20:30, 20:30] == 2).all()


def test_bad_overlap_mode(tmp_path):
    root, ann = make_coco(tmp_path, [])
    with pytest.raises(ValueError, match="overlap"):
        CocoSegmentation(root, ann, overlap="min_index")


# ---------------------------------------------------------------- RLE
def test_rle_compressed_and_uncompressed(tmp_path):
    m = np.zeros((H, W), np.uint8, order="F")
    m[2:9, 30:50] = 1
    rle = mask_utils.encode(m)
    compressed = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    m2 = np.zeros((H, W), np.uint8)
    m2[30:38, 0:6] = 1
    flat = m2.flatten(order="F")  # uncompressed RLE: run lengths, column-major, starting with zeros
    runs, cur, n = [], 0, 0
    for v in flat:
        if v == cur:
            n += 1
        else:
            runs.append(n)
            cur, n = v, 1
    runs.append(n)
    uncompressed = {"size": [H, W], "counts": runs}
    anns = [{"category_id": 4, "segmentation": compressed, "area": int(m.sum())},
            {"category_id": 9, "segmentation": uncompressed, "area": int(m2.sum()), "iscrowd": 1}]
    root, ann = make_coco(tmp_path, anns)
    mask = CocoSegmentation(root, ann, classes="trash11")[0]["mask"]
    assert np.array_equal(mask == 4, m.astype(bool)) and np.array_equal(mask == 9, m2.astype(bool))


# ---------------------------------------------------------------- classes
def test_classes_none_uses_json_categories(tmp_path):
    cats = [{"id": 1, "name": "rov"}, {"id": 3, "name": "fish"}]
    root, ann = make_coco(tmp_path, [{"category_id": 3, "segmentation": square(0, 0, 4, 4), "area": 16}],
                          categories=cats)
    ds = CocoSegmentation(root, ann)
    assert ds.class_names == ["Background", "rov", "unused_2", "fish"] and ds.num_classes == 4
    assert ds[0]["mask"].max() == 3


def test_classes_none_rejects_category_zero(tmp_path):
    cats = [{"id": 0, "name": "UNKNOWN"}, {"id": 1, "name": "General trash"}]
    root, ann = make_coco(tmp_path, [], categories=cats)
    with pytest.raises(ValueError, match="trash12"):
        CocoSegmentation(root, ann)


def test_trash12_shifts_category_ids(tmp_path):
    cats = [{"id": i, "name": n} for i, n in enumerate(TRASH12[1:])]  # 0 = UNKNOWN .. 10 = Clothing
    anns = [{"category_id": 0, "segmentation": square(0, 0, 5, 5), "area": 25},
            {"category_id": 10, "segmentation": square(10, 10, 15, 15), "area": 25}]
    root, ann = make_coco(tmp_path, anns, categories=cats)
    ds = CocoSegmentation(root, ann, classes="trash12")
    assert ds.num_classes == 12 and ds.class_names[1] == "UNKNOWN"
    m = ds[0]["mask"]
    assert (m[0:5, 0:5] == 1).all() and (m[10:15, 10:15] == 11).all()
    with pytest.raises(ValueError, match="does not fit preset 'trash11'"):
        CocoSegmentation(root, ann, classes="trash11")


def test_explicit_class_list_maps_by_name(tmp_path):
    cats = [{"id": 4, "name": "cat"}, {"id": 9, "name": "Dog"}]
    anns = [{"category_id": 4, "segmentation": square(0, 0, 5, 5), "area": 25},
            {"category_id": 9, "segmentation": square(10, 10, 15, 15), "area": 25}]
    root, ann = make_coco(tmp_path, anns, categories=cats)
    ds = CocoSegmentation(root, ann, classes=["background", "dog", "cat"])
    m = ds[0]["mask"]
    assert (m[0:5, 0:5] == 2).all() and (m[10:15, 10:15] == 1).all() and ds.num_classes == 3
    with pytest.raises(ValueError, match=r"\['cat'\] are not in the class list"):
        CocoSegmentation(root, ann, classes=["background", "dog"])
    with pytest.raises(ValueError, match="unknown class preset"):
        CocoSegmentation(root, ann, classes="voc")
    with pytest.raises(TypeError, match="classes must be"):
        CocoSegmentation(root, ann, classes=3)


# ---------------------------------------------------------------- test split / empty images
def test_json_without_annotations_has_no_mask(tmp_path):
    root, ann = make_coco(tmp_path, [])
    item = CocoSegmentation(root, ann, classes="trash11")[0]
    assert "mask" not in item and item["image"].shape == (H, W, 3)
    item = CocoSegmentation(root, ann, classes="trash11", transform=eval_transform(32))[0]
    assert "mask" not in item and item["image"].shape == (3, 32, 32)


def test_image_without_annotations_is_background(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
              {"id": 2, "file_name": "b.png", "height": H, "width": W}]
    root, ann = make_coco(tmp_path, [{"category_id": 1, "segmentation": square(0, 0, 5, 5), "area": 25}],
                          images=images)
    ds = CocoSegmentation(root, ann, classes="trash11")
    assert ds[1]["mask"].dtype == np.int64 and not ds[1]["mask"].any() and ds[0]["mask"].any()


# ---------------------------------------------------------------- errors name the file / id
def test_missing_image_names_file_and_id(tmp_path):
    root, ann = make_coco(tmp_path, [], write_images=False)
    ds = CocoSegmentation(root, ann)
    with pytest.raises(FileNotFoundError, match=r"batch_01/0001\.png.*image id 7"):
        ds[0]


def test_unreadable_image_names_file(tmp_path):
    root, ann = make_coco(tmp_path, [])
    (tmp_path / "batch_01/0001.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*0001\.png"):
        CocoSegmentation(root, ann)[0]


def test_image_size_mismatch_names_file(tmp_path):
    root, ann = make_coco(tmp_path, [])
    write_image(tmp_path / "batch_01/0001.png", h=H + 1)
    with pytest.raises(ValueError, match=rf"0001\.png \(id 7\) is {W}x{H + 1} but .*ann\.json says {W}x{H}"):
        CocoSegmentation(root, ann)[0]


def test_json_without_categories(tmp_path):
    root, ann = make_coco(tmp_path, [], categories=[])
    with pytest.raises(ValueError, match=r"ann\.json has no categories"):
        CocoSegmentation(root, ann)


def test_annotation_for_unknown_image(tmp_path):
    root, ann = make_coco(tmp_path, [{"id": 55, "image_id": 8, "category_id": 1, "segmentation": BIG}])
    with pytest.raises(ValueError, match=r"ann\.json: annotation 55 refers to unknown image id 8"):
        CocoSegmentation(root, ann)


def test_annotation_with_unknown_category(tmp_path):
    root, ann = make_coco(tmp_path, [{"id": 56, "category_id": 42, "segmentation": BIG}])
    with pytest.raises(ValueError, match="annotation 56 .*unknown category_id 42"):
        CocoSegmentation(root, ann)


def test_polygon_outside_image(tmp_path):
    root, ann = make_coco(tmp_path, [{"id": 57, "category_id": 1, "segmentation": square(50, 10, W + 5, 20)}])
    with pytest.raises(ValueError, match=r"annotation 57 \(image id 7, 60x40\).*polygon outside the image"):
        CocoSegmentation(root, ann)
    # on the border (x = W) is inside: COCO polygons run along pixel edges
    root, ann = make_coco(tmp_path, [{"id": 58, "category_id": 1, "segmentation": square(50, 10, W, H)}])
    assert (CocoSegmentation(root, ann, classes="trash11")[0]["mask"][10:, 50:] == 1).all()


def test_malformed_segmentations(tmp_path):
    root, ann = make_coco(tmp_path, [{"id": 59, "category_id": 1, "segmentation": [[1, 2, 3, 4]]}])
    with pytest.raises(ValueError, match="annotation 59.*>= 3 finite x,y pairs"):
        CocoSegmentation(root, ann)
    rle = {"size": [H + 2, W], "counts": "abc"}
    root, ann = make_coco(tmp_path, [{"id": 60, "category_id": 1, "segmentation": rle}])
    with pytest.raises(ValueError, match=r"annotation 60 .*RLE size \[42, 60\] differs"):
        CocoSegmentation(root, ann)


def test_bad_json_and_missing_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        CocoSegmentation(tmp_path, bad)
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        CocoSegmentation(tmp_path, tmp_path / "nothere.json")
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W}] * 2
    root, ann = make_coco(tmp_path, [], images=images)
    with pytest.raises(ValueError, match="duplicate image id 1"):
        CocoSegmentation(root, ann)


# ---------------------------------------------------------------- with transforms / DataLoader
def test_transform_gives_tensors_and_collates(tmp_path):
    images = [{"id": i, "file_name": f"batch_0{i}/x.png", "height": H, "width": W} for i in (1, 2, 3)]
    anns = [{"image_id": i, "category_id": i, "segmentation": square(0, 0, 30, 20), "area": 600} for i in (1, 2, 3)]
    root, ann = make_coco(tmp_path, anns, images=images)
    ds = CocoSegmentation(root, ann, classes="trash11", transform=eval_transform((20, 30)))
    item = ds[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 20, 30)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (20, 30)
    assert set(item["mask"].unique().tolist()) == {0, 1}
    assert (item["mask"][:10, :15] == 1).all() and (item["mask"][10:, :] == 0).all()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 20, 30) and batch["mask"].shape == (3, 20, 30)
    assert batch["image_id"] == ["batch_01/x.png", "batch_02/x.png", "batch_03/x.png"]
    assert batch["id"].tolist() == [1, 2, 3]


# ---------------------------------------------------------------- mask folders
def write_pair(tmp_path, name, labels, mode="L"):
    (tmp_path / "img").mkdir(exist_ok=True)
    (tmp_path / "lbl").mkdir(exist_ok=True)
    h, w = labels.shape
    write_image(tmp_path / "img" / f"{name}.png", h, w)
    Image.fromarray(labels.astype(np.uint8), mode=mode if mode != "L" else None).save(tmp_path / "lbl" / f"{name}.png")


def test_mask_folder_camvid_void_is_ignored(tmp_path):
    lab = np.array([[0, 1, 10], [11, 3, 255]], np.uint8).repeat(4, 0).repeat(4, 1)
    write_pair(tmp_path, "a", lab)
    write_pair(tmp_path, "b", np.zeros((8, 12), np.uint8))
    ds = MaskFolderSegmentation(tmp_path / "img", tmp_path / "lbl", "camvid11")
    assert len(ds) == 2 and ds.num_classes == 11 and ds.palette.shape == (11, 3)
    item = ds[0]
    assert item["image_id"] == "a.png" and item["id"] == 0 and item["image"].shape == (8, 12, 3)
    expect = np.where(lab == 11, 255, lab).astype(np.int64)
    assert item["mask"].dtype == np.int64 and np.array_equal(item["mask"], expect)
    t = MaskFolderSegmentation(tmp_path / "img", tmp_path / "lbl", "camvid11", transform=eval_transform(16))[0]
    assert t["mask"].dtype == torch.int64 and set(t["mask"].unique().tolist()) == {0, 1, 3, 10, 255}


def test_mask_folder_errors(tmp_path):
    write_pair(tmp_path, "a", np.full((8, 8), 12, np.uint8))
    ds = MaskFolderSegmentation(tmp_path / "img", tmp_path / "lbl", "camvid11")
    with pytest.raises(ValueError, match=r"lbl/a\.png has values \[12\]"):
        ds[0]
    ds = MaskFolderSegmentation(tmp_path / "img", tmp_path / "lbl", ["bg"] + [f"c{i}" for i in range(12)])
    assert ds[0]["mask"].max() == 12  # 13 classes: 12 is a class, not void
    write_image(tmp_path / "img" / "b.png")
    with pytest.raises(FileNotFoundError, match=r"no label PNG .*b\.png"):
        MaskFolderSegmentation(tmp_path / "img", tmp_path / "lbl", "camvid11")
    (tmp_path / "img" / "b.png").unlink()
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "lbl" / "a.png")
    with pytest.raises(ValueError, match=r"a\.png is 8x8 but its label a\.png is 8x9"):
        MaskFolderSegmentation(tmp_path / "img", tmp_path / "lbl", "camvid11")[0]
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "lbl" / "a.png")
    with pytest.raises(ValueError, match="mode RGB"):
        MaskFolderSegmentation(tmp_path / "img", tmp_path / "lbl", "camvid11")[0]
    with pytest.raises(ValueError, match="ignore_index"):
        MaskFolderSegmentation(tmp_path / "img", tmp_path / "lbl", "camvid11", ignore_index=3)
