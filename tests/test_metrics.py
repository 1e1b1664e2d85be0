"""Confusion-matrix metrics: hand-computed values, ignore index, absent classes, per-image average."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pyseg.training.metrics import (SegMetrics, all_reduce_metrics, confusion_matrix, iou_per_class, mean_iou,
                                    pixel_accuracy)


def test_confusion_matrix_by_hand():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm = confusion_matrix(gt, pred, 3, ignore_index=255)
    expected = np.array([[1, 1, 0],
                         [0, 2, 0],
                         [1, 0, 0]])
    np.testing.assert_array_equal(cm, expected)
    iou = iou_per_class(cm)
    # class 0: tp 1, fp 1 (gt 2 -> 0), fn 1 -> 1/3; class 1: tp 2, fp 1 -> 2/3; class 2: tp 0, fn 1 -> 0
    np.testing.assert_allclose(iou, [1 / 3, 2 / 3, 0.0])
    assert mean_iou(cm) == pytest.approx(1 / 3)
    assert pixel_accuracy(cm) == pytest.approx(3 / 5)


def test_absent_class_is_skipped_and_torch_input():
    gt = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 0], [1, 1]])
    cm = confusion_matrix(gt, pred, 4, ignore_index=None)
    iou = iou_per_class(cm)
    assert iou[:2].tolist() == [1.0, 1.0] and np.isnan(iou[2:]).all()
    assert mean_iou(cm) == 1.0


def test_all_ignored_gives_nan():
    gt = np.full((2, 2), 255)
    cm = confusion_matrix(gt, np.zeros((2, 2), int), 3)
    assert cm.sum() == 0 and math.isnan(mean_iou(cm)) and math.isnan(pixel_accuracy(cm))


def test_bad_inputs():
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.zeros((2, 2)), np.full((2, 2), 3), 3)


def test_segmetrics_global_vs_per_image():
    m = SegMetrics(2, ignore_index=255)
    # image A: perfect on class 0 only -> mIoU 1; image B: all wrong -> mIoU 0
    a_gt, a_pred = np.zeros((2, 2), int), np.zeros((2, 2), int)
    b_gt, b_pred = np.ones((2, 2), int), np.zeros((2, 2), int)
    m.update(np.stack([a_gt, b_gt]), np.stack([a_pred, b_pred]))
    out = m.compute()
    assert out["miou_per_image"] == pytest.approx(0.5)
    # global: class 0 tp 4 fp 4 -> 0.5, class 1 tp 0 fn 4 -> 0
    assert out["miou"] == pytest.approx(0.25)
    assert out["pixel_acc"] == pytest.approx(0.5)
    assert out["iou_per_class"] == pytest.approx([0.5, 0.0])


def test_all_reduce_without_process_group_is_a_copy():
    m = SegMetrics(3)
    rng = np.random.default_rng(0)
    m.update(rng.integers(0, 3, (2, 4, 4)), rng.integers(0, 3, (2, 4, 4)))
    r = all_reduce_metrics(m)
    assert r is not m
    np.testing.assert_array_equal(r.cm, m.cm)
    assert r.compute() == m.compute()
    r.cm += 1
    assert not np.array_equal(r.cm, m.cm)
