"""Batched inference: model forward (+ TTA), softmax at each image's own resolution, dense CRF.

Pipeline for a batch of raw images (H_i, W_i, 3) uint8 RGB:

1. resize each to ``input_size`` x ``input_size`` (bilinear; ``None`` keeps the native size, then a
   batch only mixes images of one size) and normalise with the ImageNet mean/std -> (B, 3, S, S);
2. model forward for every TTA view (scales x optional horizontal flip); each view's logits are
   upsampled (bilinear) to the image's own (H_i, W_i), softmaxed there, and the views' probabilities
   averaged -> (C, H_i, W_i) float32;
3. optional dense CRF (``pyseg.crf.dense_crf``) on those probabilities with the *raw* RGB image, for
   all images of one size at once; on CPU threads it runs in a worker thread so that it overlaps the
   next batch's forward pass (the extension releases the GIL); on CUDA it runs in line on the GPU;
4. argmax -> (H_i, W_i) int64 class maps, yielded in dataset order as :class:`ImagePrediction`.
"""

from __future__ import annotations

import collections
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pyseg.progress import with_progress

log = logging.getLogger(__name__)

_DEFAULT_MEAN = (0.485, 0.456, 0.406)
_DEFAULT_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------
# options
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: the views are every scale, each with and without a horizontal flip."""

    flip: bool = False
    scales: tuple[float, ...] = (1.0,)

    @property
    def num_views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)


def parse_tta(spec: str | None) -> TTA:
    """``"flip"``, ``"flip,0.75,1,1.25"``, ``"0.75,1.25"``, ``"off"``/``None`` -> :class:`TTA`.

    Scales are factors of the input size; when any are listed they are the complete set (add 1 to keep
    the plain view).
    """
    if spec is None or spec.strip().lower() in ("", "off", "none"):
        return TTA()
    flip, scales = False, []
    for tok in (t.strip() for t in spec.split(",")):
        if tok.lower() in ("flip", "hflip"):
            flip = True
            continue
        try:
            s = float(tok)
        except ValueError:
            raise ValueError(f"tta: expected 'flip' and/or scale factors like 0.75,1,1.25, got {tok!r}") from None
        if not math.isfinite(s) or not 0.1 <= s <= 4:
            raise ValueError(f"tta: scale factors must lie in [0.1, 4], got {tok!r}")
        scales.append(s)
    return TTA(flip, tuple(dict.fromkeys(scales)) or (1.0,))


def resolve_crf(spec):
    """``None``/``"off"`` -> None; a preset name -> CRFParams.preset; a ``.json`` file (as written by
    ``pyseg-tune-crf --out``) -> CRFParams of its fields; a CRFParams passes through."""
    from pyseg.crf.params import CRFParams

    if spec is None or isinstance(spec, CRFParams):
        return spec
    s = str(spec).strip()
    if s.lower() in ("off", "none", ""):
        return None
    if s in CRFParams.presets():
        return CRFParams.preset(s)
    if Path(s).suffix.lower() == ".json":
        return CRFParams.from_file(s)
    raise ValueError(f"crf: expected 'off', a preset ({', '.join(CRFParams.presets())}) or a .json "
                     f"file of parameters, got {s!r}")


def mean_std():
    try:
        from pyseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
        return tuple(float(v) for v in IMAGENET_MEAN), tuple(float(v) for v in IMAGENET_STD)
    except ImportError:
        return _DEFAULT_MEAN, _DEFAULT_STD


# ----------------------------------------------------------------------------------------------
# forward
# ----------------------------------------------------------------------------------------------
def preprocess(images: Sequence[np.ndarray], input_size: int | None, device="cpu"):
    """List of (H, W, 3) uint8 RGB -> (B, 3, S, S) float tensor, resized (bilinear) and normalised.

    With input_size None all images must share one size, which is kept.
    """
    import torch
    import torch.nn.functional as F

    mean, std = mean_std()
    shapes = {im.shape for im in images}
    if input_size is None and len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)} in one batch need an input size")
    out = []
    for im in images:
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ValueError(f"images must be (H, W, 3) uint8 RGB, got {im.shape} {im.dtype}")
        a = im if im.flags.writeable and im.flags.c_contiguous else np.array(im)  # torch wants writable memory
        t = torch.from_numpy(a).to(device).permute(2, 0, 1)[None].float().div_(255)
        if input_size is not None and t.shape[-2:] != (input_size, input_size):
            t = F.interpolate(t, size=(input_size, input_size), mode="bilinear", align_corners=False)
        out.append(t)
    x = torch.cat(out)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def forward_probs(model, x, out_sizes: Sequence[tuple[int, int]], tta: TTA = TTA(), num_classes=None):
    """Class probabilities of each image at its own resolution, averaged over the TTA views.

    x: (B, 3, S, S) normalised input; out_sizes: B (H_i, W_i). Returns a list of B float32 tensors
    (C, H_i, W_i) on x's device.
    """
    import torch
    import torch.nn.functional as F

    acc = [None] * x.shape[0]
    groups = collections.defaultdict(list)
    for i, hw in enumerate(out_sizes):
        groups[tuple(hw)].append(i)
    with torch.inference_mode():
        for scale in tta.scales:
            xs = x
            if scale != 1.0:
                side = [max(8, int(round(d * scale))) for d in x.shape[-2:]]
                xs = F.interpolate(x, size=side, mode="bilinear", align_corners=False)
            for flip in ((False, True) if tta.flip else (False,)):
                logits = model(xs.flip(-1) if flip else xs)
                if isinstance(logits, dict):  # torchvision-style {"out": ...}
                    logits = logits["out"]
                if logits.ndim != 4 or logits.shape[0] != x.shape[0]:
                    raise ValueError(f"the model returned {tuple(logits.shape)}, expected (B, C, H, W)")
                if num_classes is not None and logits.shape[1] != num_classes:
                    raise ValueError(f"the model outputs {logits.shape[1]} classes, the data has {num_classes}")
                if flip:
                    logits = logits.flip(-1)
                logits = logits.float()
                for hw, idx in groups.items():
                    lg = logits[idx]
                    if tuple(lg.shape[-2:]) != hw:
                        lg = F.interpolate(lg, size=hw, mode="bilinear", align_corners=False)
                    p = lg.softmax(1)
                    for j, i in enumerate(idx):
                        acc[i] = p[j] if acc[i] is None else acc[i].add_(p[j])
        n = tta.num_views
        return [a.div_(n) if n > 1 else a for a in acc]


def _dense_crf():
    from pyseg.crf import dense_crf

    return dense_crf


def run_crf_grouped(probs: Sequence, images: Sequence, params, device="cpu", num_threads=None) -> list:
    """dense_crf on each group of same-sized images at once; returns refined probabilities in order.

    probs: (C, H_i, W_i) float32 numpy arrays (or torch tensors, for the CUDA path); images:
    (H_i, W_i, 3) uint8 RGB of the same kind.
    """
    dense_crf = _dense_crf()
    groups = collections.defaultdict(list)
    for i, p in enumerate(probs):
        groups[tuple(p.shape[-2:])].append(i)
    out = [None] * len(probs)
    for idx in groups.values():
        if hasattr(probs[idx[0]], "detach"):  # torch tensors
            import torch
            P, I = torch.stack([probs[i] for i in idx]), torch.stack([images[i] for i in idx])
        else:
            P = np.stack([probs[i] for i in idx]).astype(np.float32, copy=False)
            I = np.stack([images[i] for i in idx])
        Q = dense_crf(P, I, params=params, device=device, num_threads=num_threads)
        for j, i in enumerate(idx):
            out[i] = Q[j]
    return out


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------
@dataclass
class ImagePrediction:
    """One image's result. Arrays at the image's own resolution (H, W)."""

    image_id: str
    id: int
    image: np.ndarray  # (H, W, 3) uint8 RGB
    pred: np.ndarray  # (H, W) int64 argmax without the CRF
    pred_crf: np.ndarray | None = None  # (H, W) int64 argmax after the CRF (None when off)
    mask: np.ndarray | None = None  # (H, W) ground truth when the dataset has it
    probs: np.ndarray | None = None  # (C, H, W) float32 final probabilities (when keep_probs)

    @property
    def final(self) -> np.ndarray:
        return self.pred_crf if self.pred_crf is not None else self.pred


def _collate(items):
    return items


def resolve_crf_device(crf_device: str, model_device) -> str:
    """"cpu" or "cuda" for ``--crf-device`` (auto: the GPU when the model is on one and the CUDA CRF is
    usable); ValueError when cuda is asked for and cannot run."""
    import torch

    if crf_device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"crf_device must be auto, cpu or cuda, got {crf_device!r}")
    if crf_device == "cuda" and not torch.cuda.is_available():
        raise ValueError("crf_device cuda needs a CUDA GPU, and none is available")
    try:
        from pyseg.crf.backends import cuda_usable, require_cuda
    except ImportError as e:
        usable, why = False, str(e)
    else:
        usable, why = cuda_usable(), ""
        if crf_device == "cuda" and not usable:
            try:
                require_cuda()
            except RuntimeError as e:
                why = str(e)
    if crf_device == "cuda" and not usable:
        raise ValueError(f"crf_device cuda: the CUDA CRF cannot run: {why}")
    if crf_device == "auto":
        return "cuda" if str(model_device).startswith("cuda") and usable else "cpu"
    return crf_device


def should_overlap(model_device, crf_threads: int | None) -> bool:
    """Whether a CPU CRF should run in a worker thread beside the forward pass (see predict_dataset)."""
    import os

    import torch

    if str(model_device).startswith("cuda"):
        return True
    cores = os.cpu_count() or 1
    if crf_threads is None:
        try:
            from pyseg.crf import get_num_threads

            crf_threads = get_num_threads()
        except ImportError:
            crf_threads = cores
    return torch.get_num_threads() + (crf_threads or cores) <= cores


def predict_dataset(model, dataset, *, input_size: int | None = 512, tta: TTA = TTA(), crf=None,
                    crf_device: str = "auto", batch_size: int = 4, num_threads: int | None = None,
                    num_workers: int = 0, keep_probs: bool = False, device=None, indices: Sequence[int] | None = None,
                    limit: int | None = None, overlap: bool | str = "auto") -> Iterator[ImagePrediction]:
    """Predict every item of ``dataset`` (items as pyseg.data datasets give without a transform), or the items
    at ``indices`` (e.g. one rank's shard), then at most ``limit`` of them.

    Yields :class:`ImagePrediction` in dataset order. ``crf``: None (off) or a CRFParams. When the
    CRF runs on CPU threads and ``overlap`` is on, the CRF of batch k runs in a worker thread while
    batch k+1 is forwarded. ``overlap="auto"`` turns it on only where it pays: the model on a GPU, or
    torch's threads plus the CRF's threads fitting in the CPU's cores (e.g. 1 + 1 on 2 cores); with
    both using every core (the default on a CPU-only machine) the two thread pools only fight.
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    num_classes = getattr(dataset, "num_classes", None)
    crf_dev = resolve_crf_device(crf_device, device) if crf is not None else None
    if indices is not None:
        dataset = Subset(dataset, list(indices))
    if limit is not None:
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate)
    if overlap == "auto":
        overlap = should_overlap(device, num_threads)
    elif not isinstance(overlap, bool):
        raise ValueError(f"overlap must be True, False or 'auto', got {overlap!r}")
    log.debug("CRF on %s, overlapped with the forward pass: %s", crf_dev, overlap)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pyseg-crf") if crf_dev == "cpu" else None
    pending: collections.deque = collections.deque()

    def finish(items, probs, crf_out):
        results = []
        for k, it in enumerate(items):
            p = probs[k]
            pred = p.argmax(0)
            q = None
            if crf_out is not None:
                q = crf_out[k]
                q = q.detach().cpu().numpy() if hasattr(q, "detach") else q
            pred_crf = q.argmax(0).astype(np.int64) if q is not None else None
            mask = it.get("mask")
            results.append(ImagePrediction(
                image_id=str(it["image_id"]), id=int(it.get("id", -1)), image=it["image"],
                pred=pred.astype(np.int64), pred_crf=pred_crf,
                mask=np.asarray(mask) if mask is not None else None,
                probs=(q if q is not None else p) if keep_probs else None))
        return results

    try:
        for items in loader:
            images = [np.asarray(it["image"]) for it in items]
            sizes = [im.shape[:2] for im in images]
            if input_size is None:  # native resolution: forward each size group separately
                groups = collections.defaultdict(list)
                for i, s in enumerate(sizes):
                    groups[s].append(i)
            else:
                groups = {None: list(range(len(images)))}
            probs_t = [None] * len(images)
            for idx in groups.values():
                x = preprocess([images[i] for i in idx], input_size, device)
                for i, p in zip(idx, forward_probs(model, x, [sizes[i] for i in idx], tta, num_classes)):
                    probs_t[i] = p
            if crf_dev == "cuda":  # on the GPU, in line (the model may be on the CPU)
                cdev = device if str(device).startswith("cuda") else torch.device("cuda")
                imgs_t = [torch.from_numpy(np.array(im)).to(cdev) for im in images]
                q = run_crf_grouped([p.to(cdev) for p in probs_t], imgs_t, crf, "cuda", num_threads)
                probs = [p.cpu().numpy() for p in probs_t]
                yield from finish(items, probs, [t.cpu().numpy() for t in q])
                continue
            probs = [p.cpu().numpy() for p in probs_t]
            if pool is None:
                yield from finish(items, probs, None)
                continue
            if not overlap:
                yield from finish(items, probs, run_crf_grouped(
                    probs, [np.ascontiguousarray(im) for im in images], crf, "cpu", num_threads))
                continue
            fut = pool.submit(run_crf_grouped, probs, [np.ascontiguousarray(im) for im in images], crf,
                              "cpu", num_threads)
            pending.append((items, probs, fut))
            while len(pending) > 1:  # keep one CRF batch in flight while the next forward runs
                it_, pr_, f_ = pending.popleft()
                yield from finish(it_, pr_, f_.result())
        while pending:
            it_, pr_, f_ = pending.popleft()
            yield from finish(it_, pr_, f_.result())
    finally:
        for _, _, f_ in pending:
            f_.cancel()
        if pool is not None:
            pool.shutdown(wait=True)


def predict_to_submission(model, dataset, out_csv, *, image_ids: Sequence[str] | None = None,
                          size: int = 256, save_probs=None, vis_dir=None, palette=None,
                          class_names=None, meta: dict | None = None, progress: bool = False,
                          **predict_kwargs) -> dict:
    """Run :func:`predict_dataset` and write the submission CSV (atomically, validated row by row).

    ``image_ids``: the expected row order (the json's file names, or those of ``indices`` when given; every
    row is checked against it; None: ``dataset.image_ids()``, else read from the items). Each row is the final class
    map (after the CRF when on) resized to ``size`` x ``size`` with
    :func:`pyseg.submission.resize_nearest`. ``save_probs``: a directory for the probabilities
    (format in :mod:`pyseg.inference.probs`); ``vis_dir``: PNG overlays (:mod:`pyseg.inference.overlays`).
    Returns {"rows", "seconds", "out"}.
    """
    import time

    from pyseg import submission

    if image_ids is None:
        if callable(getattr(dataset, "image_ids", None)):
            image_ids = dataset.image_ids()
        else:
            image_ids = [str(dataset[i]["image_id"]) for i in range(len(dataset))]
        if predict_kwargs.get("indices") is not None:
            image_ids = [image_ids[i] for i in predict_kwargs["indices"]]
    num_classes = getattr(dataset, "num_classes", None)
    t0 = time.perf_counter()
    writer = submission.SubmissionWriter(out_csv, image_ids, size, num_classes)
    probs_writer = None
    try:
        if save_probs is not None:
            from pyseg.inference.probs import ProbsWriter

            probs_writer = ProbsWriter(save_probs, num_classes, class_names, size, meta)
        keep = probs_writer is not None
        n = 0
        results = predict_dataset(model, dataset, keep_probs=keep, **predict_kwargs)
        for r in with_progress(results, len(image_ids), progress, "predict"):
            writer.write(r.image_id, submission.resize_nearest(r.final, size))
            if probs_writer is not None:
                probs_writer.write(r.image_id, r.id, submission.resize_nearest(r.probs, size), *r.image.shape[:2])
            if vis_dir is not None:
                from pyseg.inference.overlays import save_overlay
                save_overlay(vis_dir, r, palette)
            n += 1
        writer.close()
        if probs_writer is not None:
            probs_writer.close()
    except BaseException:
        writer.abort()
        raise
    return {"rows": n, "seconds": time.perf_counter() - t0, "out": str(out_csv)}
