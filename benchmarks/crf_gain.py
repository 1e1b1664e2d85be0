"""The dense CRF's mIoU gain on CamVid val (480x360, 11 classes, void ignored). Not a test.

Two sources of probabilities:

1. coarse probabilities made from the ground truth (always): one-hot labels (void pixels uniform) ->
   area-downsampled by --factor (8) -> bilinear upsampling back to full size -> noise on the log
   probabilities: p = softmax(log(max(p_up, 1e-4)) + sigma * N(0, 1)) per pixel and class (--sigma 1.0,
   --seed 0). The CRF must recover the boundaries the downsampling blurred and the noise flipped.
2. with --checkpoint: a trained 11-class model (CamVid classes), its softmax at full resolution.

For each, mIoU (global confusion matrix and per image), pixel accuracy without the CRF and with each
--presets CRF, and the CRF's time per image.

    python benchmarks/crf_gain.py [--data /work/shared/data/camvid] [--max-images N]
        [--presets krahenbuhl,deeplab] [--backend pyseg|pydensecrf] [--checkpoint CKPT] [--num-threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]  # for ../shared/data; pyseg is the installed package

from pyseg.crf.params import CRFParams  # noqa: E402
from pyseg.training.metrics import SegMetrics  # noqa: E402

IGNORE = 255


def coarse_probs(mask: np.ndarray, num_classes: int, factor: int, sigma: float, rng) -> np.ndarray:
    """(C, H, W) float32 probabilities from an (H, W) label map (IGNORE -> uniform), as in the module doc."""
    import torch
    import torch.nn.functional as F

    h, w = mask.shape
    onehot = np.full((num_classes, h, w), 1.0 / num_classes, np.float32)
    valid = mask != IGNORE
    onehot[:, valid] = 0
    onehot[mask[valid], np.nonzero(valid)[0], np.nonzero(valid)[1]] = 1
    t = torch.from_numpy(onehot)[None]
    small = F.adaptive_avg_pool2d(t, (max(1, h // factor), max(1, w // factor)))
    up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0].numpy()
    logits = np.log(np.maximum(up, 1e-4)) + sigma * rng.standard_normal(up.shape).astype(np.float32)
    logits -= logits.max(0, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(0, keepdims=True)).astype(np.float32)


def make_crf(backend: str, num_threads):
    if backend == "pyseg":
        from pyseg.crf import dense_crf

        return lambda p, img, params: dense_crf(p, img, params=params, device="cpu", num_threads=num_threads)
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    def run(p, img, params):
        c, h, w = p.shape
        d = dcrf.DenseCRF2D(w, h, c)
        d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(p)))
        d.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
        d.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb,
                               rgbim=np.array(img, np.uint8, order="C"), compat=params.bilateral_compat)
        return np.array(d.inference(params.iterations), np.float32).reshape(c, h, w)
    return run


def table(title: str, rows: list[tuple[str, dict, float | None]]) -> str:
    base = rows[0][1]["miou"]
    out = [title, f"{'setting':<34}{'mIoU':>8}{'gain':>9}{'mIoU/img':>10}{'pix acc':>9}{'s/img':>8}"]
    for name, m, sec in rows:
        out.append(f"{name:<34}{m['miou']:8.4f}{m['miou'] - base:+9.4f}{m['miou_per_image']:10.4f}"
                   f"{m['pixel_acc']:9.4f}{(f'{sec:8.3f}' if sec is not None else '       -')}")
    return "\n".join(out)


def run_gt(ds, args, presets, crf) -> str:
    rng = np.random.default_rng(args.seed)
    n = len(ds) if args.max_images is None else min(args.max_images, len(ds))
    metrics = {"coarse": SegMetrics(ds.num_classes, IGNORE)} | {k: SegMetrics(ds.num_classes, IGNORE) for k in presets}
    times = {k: [] for k in presets}
    for i in range(n):
        it = ds[i]
        img, mask = it["image"], it["mask"]
        p = coarse_probs(mask, ds.num_classes, args.factor, args.sigma, rng)
        metrics["coarse"].update(mask, p.argmax(0))
        for k, params in presets.items():
            t = time.perf_counter()
            q = crf(p, img, params)
            times[k].append(time.perf_counter() - t)
            metrics[k].update(mask, np.asarray(q).argmax(0))
    rows = [(f"GT x1/{args.factor} + noise {args.sigma} (no CRF)", metrics["coarse"].compute(), None)]
    rows += [(f"+ CRF {k} ({presets[k].iterations} it)", metrics[k].compute(), statistics.median(times[k]))
             for k in presets]
    return table(f"CamVid val, {n} images, coarse probabilities from the ground truth, {args.backend} CRF", rows)


def run_model(ds, args, presets) -> str:
    import torch

    from pyseg.inference.evaluation import evaluate_predictions
    from pyseg.inference.inputs import input_size_from_checkpoint, load_trained_model
    from pyseg.inference.predict import predict_dataset

    model, ckpt = load_trained_model(args.checkpoint, "cpu")
    if ckpt.get("num_classes") != ds.num_classes:
        raise SystemExit(f"the checkpoint has {ckpt.get('num_classes')} classes, CamVid has {ds.num_classes}")
    size = args.input_size or input_size_from_checkpoint(ckpt)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    rows = []
    for k, params in [("model", None)] + list(presets.items()):
        t = time.perf_counter()
        res = evaluate_predictions(predict_dataset(model, ds, input_size=size, crf=params, crf_device="cpu",
                                                   batch_size=2, num_threads=args.num_threads,
                                                   limit=args.max_images), ds.num_classes, IGNORE)
        sec = (time.perf_counter() - t) / res["images"]
        m = res["crf"] if params is not None else res["no_crf"]
        rows.append((f"{ckpt.get('model_name')} (no CRF)" if params is None else f"+ CRF {k}", m, sec))
    return table(f"CamVid val, {res['images']} images, model {args.checkpoint} (s/img = forward + CRF)", rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "camvid"))
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--presets", default="krahenbuhl,deeplab")
    ap.add_argument("--iterations", type=int, default=None, help="override the presets' iterations")
    ap.add_argument("--factor", type=int, default=8)
    ap.add_argument("--sigma", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", choices=["pyseg", "pydensecrf"], default="pyseg")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--input-size", type=int, default=None)
    args = ap.parse_args(argv)
    from pyseg.data import MaskFolderSegmentation

    data = Path(args.data)
    ds = MaskFolderSegmentation(data / "val", data / "valannot", "camvid11", ignore_index=IGNORE)
    presets = {}
    for name in [s.strip() for s in args.presets.split(",") if s.strip()]:
        p = CRFParams.preset(name)
        presets[name] = p.replace(iterations=args.iterations) if args.iterations is not None else p
    print(run_gt(ds, args, presets, make_crf(args.backend, args.num_threads)), flush=True)
    if args.checkpoint:
        print()
        print(run_model(ds, args, presets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
