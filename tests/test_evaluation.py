"""pyseg.inference.evaluation: metrics without and with the CRF, report table, confusion-matrix plot."""

from __future__ import annotations

import numpy as np
import pytest

from pyseg.inference import evaluation as E
from pyseg.inference.predict import ImagePrediction


def _pred(mask, pred, pred_crf=None, i=0):
    return ImagePrediction(image_id=f"{i}.jpg", id=i, image=np.zeros(mask.shape + (3,), np.uint8),
                           pred=pred, pred_crf=pred_crf, mask=mask)


def test_metrics_match_hand_computed_values():
    gt1 = np.array([[0, 0, 1, 1]])
    p1 = np.array([[0, 1, 1, 1]])  # class 0: 1/2, class 1: 2/3
    gt2 = np.array([[2, 2, 255, 0]])
    p2 = np.array([[2, 0, 1, 0]])  # ignore pixel left out; class 2: 1/2, class 0: 1/2
    crf1, crf2 = gt1.copy(), np.array([[2, 2, 0, 0]])
    res = E.evaluate_predictions([_pred(gt1, p1, crf1, 0), _pred(gt2, p2, crf2, 1)], 3, 255)
    a = res["no_crf"]
    # global: class 0 tp 2, fp 1 (gt 2 -> 0), fn 1 (gt 0 -> 1) -> 2/4; class 1 tp 2, fp 1 -> 2/3; class 2 1/2
    np.testing.assert_allclose(a["iou_per_class"], [0.5, 2 / 3, 0.5])
    assert a["miou"] == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)
    # per image: image 1 (1/2 + 2/3)/2; image 2 classes 0 (1/2), 1 (0, predicted only) ... 2 (1/2)
    img2 = np.nanmean([1 / 2, 1 / 2])  # class 1 absent from gt and prediction of the kept pixels
    assert a["miou_per_image"] == pytest.approx(((0.5 + 2 / 3) / 2 + img2) / 2)
    assert a["pixel_acc"] == pytest.approx(5 / 7)
    assert a["cm"].sum() == 7
    assert res["crf"]["miou"] == pytest.approx(1.0) and res["crf"]["pixel_acc"] == 1.0
    assert res["images"] == 2


def test_scoring_at_the_submission_size():
    gt = np.zeros((4, 4), np.int64)
    gt[1::2, 1::2] = 1  # only on odd rows/columns: gone after the [::2, ::2] resize
    pred = np.zeros((4, 4), np.int64)
    full = E.evaluate_predictions([_pred(gt, pred)], 2)
    small = E.evaluate_predictions([_pred(gt, pred)], 2, size=2)
    assert full["no_crf"]["pixel_acc"] == pytest.approx(12 / 16)
    assert small["no_crf"]["pixel_acc"] == 1.0 and small["no_crf"]["cm"].sum() == 4


def test_report_and_errors():
    gt = np.array([[0, 1]])
    res = E.evaluate_predictions([_pred(gt, gt, np.array([[0, 0]]))], 2)
    text = E.format_report(res, ["bg", "thing"])
    assert "no CRF" in text and "CRF" in text and "gain" in text and "thing" in text
    miou_row = next(line for line in text.splitlines() if line.startswith("mIoU (global)"))
    assert miou_row.split()[2:] == ["1.0000", "0.2500", "-0.7500"]  # CRF: class 0 IoU 1/2, class 1 IoU 0
    res2 = E.evaluate_predictions([_pred(gt, gt)], 2)
    assert res2["crf"] is None and "gain" not in E.format_report(res2)
    with pytest.raises(ValueError, match="no ground truth"):
        E.evaluate_predictions([ImagePrediction("x.jpg", 0, np.zeros((1, 2, 3), np.uint8), gt)], 2)
    with pytest.raises(ValueError, match="empty"):
        E.evaluate_predictions([], 2)


def test_confusion_matrix_plot(tmp_path):
    cm = np.array([[5, 1, 0], [0, 0, 0], [2, 0, 3]])
    p = E.plot_confusion_matrix(cm, tmp_path / "cm.png", ["a", "b", "c"])
    assert p.read_bytes()[:4] == b"\x89PNG" and [f.name for f in tmp_path.iterdir()] == ["cm.png"]
    with pytest.raises(ValueError, match=r"\(C, C\)"):
        E.plot_confusion_matrix(np.zeros((2, 3)), tmp_path / "x.png")


def test_evaluate_runs_the_model(monkeypatch):
    torch = pytest.importorskip("torch")
    from helpers import FakeCRF, TinyDataset, tiny_model

    from pyseg.inference import predict as P
    from pyseg.crf.params import CRFParams

    monkeypatch.setattr(P, "_dense_crf", lambda: FakeCRF())
    ds = TinyDataset(n=4, num_classes=3)
    res = E.evaluate(tiny_model(), ds, crf=CRFParams(), input_size=16, batch_size=2)
    assert res["images"] == 4 and res["crf"] is not None and res["seconds"] > 0
    # FakeCRF thresholds brightness into classes {0, 1}; GT has 0 left, 1 or 2 right
    assert res["crf"]["iou_per_class"][0] == pytest.approx(1.0)
    del torch
