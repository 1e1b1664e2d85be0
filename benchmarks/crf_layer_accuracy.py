"""How close the CRF layer's gradients come to the float64 oracle, and how much of the gap float32 alone makes.

    python benchmarks/crf_layer_accuracy.py                                  # 11 labels, 10 deeplab iterations
    python benchmarks/crf_layer_accuracy.py --labels 21 --iterations 5 --preset krahenbuhl --seeds 0 1 2

For each seed: a batch of 2 random-noise images (or --image natural: smooth shading with a flat disc), logits
N(0, 2), compatibilities -I + N(0, 0.3), weights (3, 5), and the loss sum(out * G) with a fixed random G.
Prints the relative error (largest |difference| over the largest |oracle entry|) of the forward and of the
gradients for logits, compatibilities and weights, against ``pyseg.crf.layer_reference`` (float64, explicit
filter matrices off ``pyseg.crf.reference``'s lattice), for:

    rounding   the oracle itself at the inputs rounded to float32: the floor any float32 layer starts from
    torch32    the same mean field in float32 torch with the oracle's matrices
    layer32    the layer (float32 logits)
    layer64    the layer with float64 logits (float64 sums over the same float32-weighted lattice)
    exact64    layer64 against autograd through its own filters' matrices: the backward's own error

CPU only; small images (dense N x N matrices). Not part of the tests (tests/test_crf_layer.py holds the
tolerances).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pyseg.crf import CRFParams
from pyseg.crf import layer as CL
from pyseg.crf import layer_reference as LR

NAMES = ("forward", "d logits", "d compat", "d weights")


def make_case(labels: int, h: int, w: int, image: str, seed: int):
    rng = np.random.default_rng(seed)
    if image == "noise":
        images = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    else:
        ys, xs = np.mgrid[0:h, 0:w]
        base = np.stack([60 + 100 * xs / w, 80 + 60 * ys / h, 120 + 0 * xs], -1)
        base[(xs - w / 3) ** 2 + (ys - h / 2) ** 2 < (min(h, w) / 4) ** 2] = (200, 40, 30)
        images = np.clip(base + rng.normal(0, 4, (2, h, w, 3)), 0, 255).astype(np.uint8)
    logits = torch.from_numpy(rng.normal(0, 2, (2, labels, h * w)))
    compat = torch.from_numpy(-np.eye(labels)[None].repeat(2, 0) + rng.normal(0, 0.3, (2, labels, labels)))
    g = torch.from_numpy(rng.normal(size=(2, labels, h * w)))
    return images, logits, compat, torch.tensor([3.0, 5.0], dtype=torch.float64), g


def grads(fn, tensors, g):
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    (out * g.to(out.dtype)).sum().backward()
    return [t.detach().double() for t in [out] + [v.grad for v in leaves]]


def rel(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def measure(args, seed: int) -> dict:
    params = CRFParams.preset(args.preset)
    images, logits, compat, weights, g = make_case(args.labels, args.height, args.width, args.image, seed)
    n, its = args.height * args.width, args.iterations
    native = [CL.image_filters(im, params) for im in images]
    mats = [[LR.filter_matrix(LR.image_features(im, params.gaussian_sxy)),
             LR.filter_matrix(LR.image_features(im, params.bilateral_sxy, params.bilateral_srgb))] for im in images]
    own = [[torch.from_numpy(op.apply(np.eye(n))) for op in ops] for ops in native]
    m32 = [[m.float() for m in ms] for ms in mats]
    inputs = (logits, compat, weights)
    oracle = grads(lambda x, c, w: LR.meanfield(x, mats, c, w, its), inputs, g)
    runs = {
        "rounding": grads(lambda x, c, w: LR.meanfield(x, mats, c, w, its),
                          (logits.float().double(), compat.float().double(), weights.float().double()), g),
        "torch32": grads(lambda x, c, w: LR.meanfield(x.float(), m32, c.float(), w.float(), its), inputs, g),
        "layer32": grads(lambda x, c, w: CL.meanfield(x.float(), native, c.float(), w.float(), its), inputs, g),
        "layer64": grads(lambda x, c, w: CL.meanfield(x, native, c, w, its), inputs, g),
    }
    out = {k: [rel(a, b) for a, b in zip(v, oracle)] for k, v in runs.items()}
    exact = grads(lambda x, c, w: LR.meanfield(x, own, c, w, its), inputs, g)
    out["exact64"] = [rel(a, b) for a, b in zip(runs["layer64"], exact)]
    out["largest d logits"] = float(oracle[1].abs().max())
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=11)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--preset", default="deeplab", choices=["deeplab", "krahenbuhl"])
    ap.add_argument("--image", default="noise", choices=["noise", "natural"])
    ap.add_argument("--height", type=int, default=12)
    ap.add_argument("--width", type=int, default=14)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = ap.parse_args(argv)
    if args.height * args.width > 2500:
        ap.error(f"--height x --width must be at most 2500 pixels (dense N x N matrices), got "
                 f"{args.height * args.width}")
    print(f"{args.labels} labels, {args.iterations} {args.preset} iterations, {args.image} {args.height}x"
          f"{args.width}; relative error against the float64 oracle ({', '.join(NAMES)})")
    for seed in args.seeds:
        r = measure(args, seed)
        print(f"seed {seed} (largest d logits {r.pop('largest d logits'):.3g})")
        for name, errs in r.items():
            print(f"  {name:9s} " + "  ".join(f"{e:.1e}" for e in errs))


if __name__ == "__main__":
    main()
