"""Segmentation metrics from a bincount confusion matrix.

The confusion matrix ``cm`` is (C, C) int64 with rows = ground truth, columns = prediction.
mIoU is the nan-mean over classes of IoU = TP / (TP + FP + FN); a class absent from both the
ground truth and the prediction has IoU = nan and is skipped, as on the competition leaderboard.
Two averages are reported:

* global mIoU: one confusion matrix accumulated over the whole set (later leaderboards);
* per-image mIoU: mIoU of each image's own matrix, averaged over images (2021 leaderboard).

Works with numpy arrays or torch tensors (torch is imported only when a tensor comes in).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _to_numpy(x):
    if isinstance(x, np.ndarray):
        return x
    try:  # torch tensor
        return x.detach().cpu().numpy()
    except AttributeError:
        return np.asarray(x)


def confusion_matrix(gt, pred, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """(C, C) int64 confusion matrix of integer label maps of the same shape.

    Pixels whose ground truth equals ``ignore_index`` (or lies outside [0, C)) are left out.
    Predictions outside [0, C) are an error: they mean the model and ``num_classes`` disagree.
    """
    gt = _to_numpy(gt)
    pred = _to_numpy(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth and prediction shapes differ: {gt.shape} vs {pred.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    gt = gt.reshape(-1).astype(np.int64, copy=False)
    pred = pred.reshape(-1).astype(np.int64, copy=False)
    keep = (gt >= 0) & (gt < num_classes)
    if ignore_index is not None:
        keep &= gt != ignore_index
    gt, pred = gt[keep], pred[keep]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(
            f"prediction has class ids outside [0, {num_classes}): min {pred.min()}, max {pred.max()}")
    return np.bincount(num_classes * gt + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class (nan where the class is absent from both gt and prediction)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


@dataclass
class SegMetrics:
    """Accumulates a global confusion matrix and per-image mIoU over batches."""

    num_classes: int
    ignore_index: int | None = 255
    cm: np.ndarray = field(init=False)
    image_mious: list = field(init=False, default_factory=list)

    def __post_init__(self):
        self.cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, gt, pred) -> None:
        """Add a batch (B,H,W) or one image (H,W) of integer label maps."""
        gt = _to_numpy(gt)
        pred = _to_numpy(pred)
        if gt.ndim == 2:
            gt, pred = gt[None], pred[None]
        if gt.shape != pred.shape:
            raise ValueError(f"ground truth and prediction shapes differ: {gt.shape} vs {pred.shape}")
        for g, p in zip(gt, pred):
            cm = confusion_matrix(g, p, self.num_classes, self.ignore_index)
            self.cm += cm
            if cm.sum():
                self.image_mious.append(mean_iou(cm))

    def merge_(self, cm: np.ndarray, image_mious) -> None:
        """Add another accumulator's state (e.g. gathered from other ranks)."""
        self.cm += np.asarray(cm, dtype=np.int64)
        self.image_mious.extend(float(v) for v in image_mious)

    def compute(self) -> dict:
        return {
            "miou": mean_iou(self.cm),
            "miou_per_image": float(np.mean(self.image_mious)) if self.image_mious else float("nan"),
            "pixel_acc": pixel_accuracy(self.cm),
            "iou_per_class": iou_per_class(self.cm).tolist(),
        }


def all_reduce_metrics(metrics: SegMetrics, device=None) -> SegMetrics:
    """A new SegMetrics holding the union over all ranks of ``metrics`` (collective call).

    The confusion matrices are summed with ``all_reduce`` (int64, on ``device``: a CUDA device for nccl,
    CPU for gloo) and the per-image mIoUs of every rank are gathered, so ``compute()`` afterwards gives
    the same numbers as one process that saw every image. Without an initialised process group (or with
    one rank) a copy of ``metrics`` is returned.
    """
    import torch
    import torch.distributed as dist

    out = SegMetrics(metrics.num_classes, metrics.ignore_index)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        out.merge_(metrics.cm, metrics.image_mious)
        return out
    cm = torch.as_tensor(metrics.cm, dtype=torch.int64, device=device)
    dist.all_reduce(cm, op=dist.ReduceOp.SUM)
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, [float(v) for v in metrics.image_mious])
    out.merge_(cm.cpu().numpy(), [v for part in gathered for v in part])
    return out


class DeviceSegMetrics:
    """:class:`SegMetrics` accumulated on the tensors' device: no host copy or sync per batch.

    ``update`` takes (B,H,W) integer tensors; ``to_seg_metrics()`` copies the (C, C) matrix and the per-image
    mIoUs to the host once, as a :class:`SegMetrics` with the same numbers.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.cm = None
        self.image_mious = []

    def update(self, gt, pred) -> None:
        import torch

        if gt.shape != pred.shape:
            raise ValueError(f"ground truth and prediction shapes differ: {tuple(gt.shape)} vs {tuple(pred.shape)}")
        c = self.num_classes
        gt, pred = gt.reshape(gt.shape[0], -1).long(), pred.reshape(pred.shape[0], -1).long()
        keep = (gt >= 0) & (gt < c)
        if self.ignore_index is not None:
            keep &= gt != self.ignore_index
        image = torch.arange(gt.shape[0], device=gt.device)[:, None].expand_as(gt)
        flat = (image * (c * c) + c * gt + pred)[keep]
        cms = torch.bincount(flat, minlength=gt.shape[0] * c * c).view(-1, c, c)
        self.cm = cms.sum(0) if self.cm is None else self.cm + cms.sum(0)
        tp = cms.diagonal(dim1=1, dim2=2).double()
        union = cms.sum(1) + cms.sum(2) - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.nan)
        present = (union > 0).sum(1)
        miou = torch.nansum(iou, 1) / present.clamp(min=1)
        self.image_mious.append(miou[cms.sum((1, 2)) > 0])

    def to_seg_metrics(self) -> SegMetrics:
        out = SegMetrics(self.num_classes, self.ignore_index)
        if self.cm is not None:
            import torch

            out.merge_(self.cm.cpu().numpy(), torch.cat(self.image_mious).cpu().tolist())
        return out
