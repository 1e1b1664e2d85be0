"""Speed of the CUDA dense CRF (pyseg.crf.cuda_backend), timed with CUDA events after warm-up.

    python benchmarks/crf_speed_cuda.py                  # the issue's cases + a size sweep
    python benchmarks/crf_speed_cuda.py --quick          # just the two target cases
    python benchmarks/crf_speed_cuda.py --json out.json  # also write the numbers

Cases: one 512x512 image, 11 labels, 10 iterations, Kraehenbuehl preset, lattice build included (target
<= 1 ms on an H100); a batch of 64 images at 256x256 (target >= 2000 images/s). Images are natural
(crf_examples, resized and tiled) when PYSEG_SHARED_DATA or ../shared/data has them, else smooth synthetic
images with edges; probabilities are a softmax of smoothed random logits (not noise). Also reports the
lattice build and per-iteration time (from runs at 1 and N iterations), the device-to-device copy
bandwidth, and the per-iteration memory-traffic floor (see benchmarks/NOTES_cuda.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def natural_images(b: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(b, h, w, 3) uint8: crops of the crf_examples images when available, else synthetic regions."""
    root = Path(os.environ.get("PYSEG_SHARED_DATA", REPO.parent / "shared" / "data")) / "crf_examples"
    rng = np.random.default_rng(seed)
    srcs = []
    if root.is_dir():
        from PIL import Image

        for name in ("im1.png", "im2.png", "im3.png"):
            if (root / name).exists():
                srcs.append(np.asarray(Image.open(root / name).convert("RGB").resize((w, h), Image.BILINEAR)))
    out = np.empty((b, h, w, 3), np.uint8)
    for i in range(b):
        if srcs:
            im = srcs[i % len(srcs)]
            out[i] = im[:, ::-1] if (i // len(srcs)) % 2 else im
        else:
            yy, xx = np.mgrid[0:h, 0:w]
            cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.2, 0.5) * min(h, w)
            disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
            base = np.stack([xx * 200 // w + 20, yy * 180 // h + 30, np.full_like(xx, 90)], -1)
            base[disc] = rng.integers(0, 256, 3)
            out[i] = np.clip(base + rng.integers(-8, 9, base.shape), 0, 255)
    return out


def smooth_probs(b: int, n_labels: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gh, gw = max(h // 32, 2), max(w // 32, 2)
    coarse = rng.normal(size=(b, n_labels, gh, gw)).astype(np.float32) * 3
    yi = np.minimum(np.arange(h) * gh // h, gh - 1)
    xi = np.minimum(np.arange(w) * gw // w, gw - 1)
    logits = coarse[:, :, yi][:, :, :, xi] + rng.normal(size=(b, n_labels, h, w)).astype(np.float32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def time_call(fn, warmup: int, repeats: int) -> float:
    """Median milliseconds of fn() between CUDA events on the current stream."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    return statistics.median(times)


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy, bytes read + written per second (GB/s)."""
    import torch

    n = 1 << 28  # 1 GiB of float32
    a = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
    b = torch.empty_like(a)
    ms = time_call(lambda: b.copy_(a), 3, 10)
    del a, b
    return 2 * 4 * n / (ms * 1e-3) / 1e9


def floor_us(n_pixels: int, n_labels: int, bandwidth_gbs: float) -> tuple[float, float]:
    """(strict floor, this design's floor) per iteration in microseconds; see NOTES_cuda.md."""
    lp = (n_labels + 3) // 4 * 4
    strict = 3 * n_pixels * n_labels * 4  # read -U and Q, write Q
    design = 3 * n_pixels * lp * 4 + 2 * n_pixels * 9 * 8  # + slice and splat descriptors (9 entries x 8 B)
    return strict / (bandwidth_gbs * 1e3), design / (bandwidth_gbs * 1e3)


def run_case(b, h, w, n_labels, iterations, preset, warmup, repeats):
    import torch

    from pyseg.crf.cuda_backend import dense_crf_cuda
    from pyseg.crf.params import CRFParams

    params = CRFParams.preset(preset)
    probs = torch.from_numpy(smooth_probs(b, n_labels, h, w)).cuda()
    images = torch.from_numpy(natural_images(b, h, w)).cuda()
    t_n = time_call(lambda: dense_crf_cuda(probs, images, params, iterations), warmup, repeats)
    t_1 = time_call(lambda: dense_crf_cuda(probs, images, params, 1), warmup, repeats)
    t_0 = time_call(lambda: dense_crf_cuda(probs, images, params, 0), warmup, repeats)
    per_it = (t_n - t_1) / max(iterations - 1, 1)
    return {"batch": b, "h": h, "w": w, "labels": n_labels, "iterations": iterations, "preset": preset,
            "total_ms": t_n, "build_ms": t_1 - per_it - t_0, "prepare_ms": t_0, "per_iteration_us": per_it * 1e3,
            "images_per_s": b / (t_n * 1e-3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="only the two target cases")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", type=Path, help="also write the results here (atomically)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to time", file=sys.stderr)
        return 2
    bw = copy_bandwidth_gbs()
    print(f"device: {torch.cuda.get_device_name()}  copy bandwidth (read+write): {bw:.0f} GB/s")
    cases = [(1, 512, 512, 11, 10, "krahenbuhl"), (64, 256, 256, 11, 10, "krahenbuhl")]
    if not args.quick:
        cases += [(1, 256, 256, 11, 10, "krahenbuhl"), (1, 1024, 1024, 11, 10, "krahenbuhl"),
                  (1, 512, 512, 21, 10, "krahenbuhl"), (1, 512, 512, 21, 10, "deeplab"),
                  (8, 512, 512, 21, 10, "deeplab")]
    rows = []
    hdr = (f"{'case':34s} {'total ms':>9s} {'build ms':>9s} {'per-it us':>10s} {'floor us':>13s} "
           f"{'x floor':>8s} {'images/s':>9s}")
    lines = [hdr]
    for b, h, w, n_labels, its, preset in cases:
        r = run_case(b, h, w, n_labels, its, preset, args.warmup, args.repeats)
        strict, design = floor_us(b * h * w, n_labels, bw)
        r.update(floor_strict_us=strict, floor_design_us=design, copy_gbs=bw)
        rows.append(r)
        name = f"{b}x{h}x{w} L={n_labels} it={its} {preset}"
        lines.append(f"{name:34s} {r['total_ms']:9.3f} {r['build_ms']:9.3f} {r['per_iteration_us']:10.1f} "
                     f"{strict:6.1f}/{design:6.1f} {r['per_iteration_us'] / strict:8.1f} {r['images_per_s']:9.0f}")
    print("\n".join(lines))
    t1, t64 = rows[0], rows[1]
    print(f"target 512x512x11 10 it <= 1 ms: {t1['total_ms']:.3f} ms -> {'MET' if t1['total_ms'] <= 1 else 'MISSED'}")
    print(f"target batch 64 @256 >= 2000 images/s: {t64['images_per_s']:.0f} -> "
          f"{'MET' if t64['images_per_s'] >= 2000 else 'MISSED'}")
    if args.json:
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
