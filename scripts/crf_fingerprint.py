"""A fingerprint of the CRF's outputs: sha256 of the raw output bytes for fixed inputs, per case and in total.

A refactor of csrc/ that claims "behaviour unchanged" must leave the total bitwise the same. It runs the
installed pyseg (CPU backend) under each CPU switch setting (ISA, lattice grid, lattice SIMD: each setting in
its own process, since the switches are read once) and, with a C++ compiler, the CUDA pipeline's host
emulation (csrc/cuda/host_exec.cuh compiled with g++, as tests/test_crf_cuda.py does).

    python scripts/crf_fingerprint.py            # one line per case, then "total <sha256>"
    python scripts/crf_fingerprint.py --no-emulation
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Each CPU switch setting runs in its own process (the switches are read once per process).
ENV_SETTINGS = [
    {},
    {"PYSEG_CPU_ISA": "sse2"},
    {"PYSEG_LATTICE_GRID": "0"},
    {"PYSEG_LATTICE_SIMD": "0"},
]
PRESETS = {"krahenbuhl": (3.0, 3.0, 80.0, 13.0, 10.0, 5), "deeplab": (1.0, 3.0, 67.0, 3.0, 4.0, 10)}


def probs_of(rng, b, n_labels, h, w):
    logits = rng.normal(size=(b, n_labels, h, w)).astype(np.float32) * 2.0
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def image_of(rng, b, h, w):
    """Regions and edges plus noise (a sparse bilateral lattice, like a photo)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                    np.where((xx // 7 + yy // 5) % 2 == 0, 40, 200)], -1)
    img = img[None] + rng.integers(-6, 7, size=(b, h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def cpu_cases() -> dict[str, str]:
    """Every CPU case of this process: dense_crf (uint8 image path) and DenseCRF (float feature path)."""
    import pyseg.crf as crf

    out = {}
    for preset in PRESETS:
        params = crf.CRFParams.preset(preset)
        for threads in (1, 2):
            crf.set_num_threads(threads)
            for b, n_labels, h, w in ((1, 2, 17, 23), (1, 11, 64, 48), (3, 5, 40, 40), (1, 21, 96, 80)):
                rng = np.random.default_rng(b * 1000 + n_labels * 10 + h)
                probs, image = probs_of(rng, b, n_labels, h, w), image_of(rng, b, h, w)
                for rep in (0, 1):  # the second call of a size reuses the cached Gaussian lattice
                    q = crf.dense_crf(probs if b > 1 else probs[0], image if b > 1 else image[0], params)
                    out[f"dense_crf {preset} t{threads} b{b} L{n_labels} {h}x{w} rep{rep}"] = sha(q)
    crf.set_num_threads(2)
    rng = np.random.default_rng(7)
    n_labels, h, w = 6, 30, 37
    probs, image = probs_of(rng, 1, n_labels, h, w)[0], image_of(rng, 1, h, w)[0]
    unary = -np.log(np.clip(probs, 1e-5, 1)).reshape(n_labels, -1).astype(np.float32)
    feats = rng.normal(size=(4, h * w)).astype(np.float32) * 3.0
    matrix = rng.normal(size=(n_labels, n_labels)).astype(np.float32)
    for norm in (crf.NO_NORMALIZATION, crf.NORMALIZE_BEFORE, crf.NORMALIZE_AFTER, crf.NORMALIZE_SYMMETRIC):
        for compat_name, compat in (("potts", 3.0), ("diag", np.linspace(1, 4, n_labels).astype(np.float32)),
                                    ("matrix", matrix)):
            d = crf.DenseCRF2D(w, h, n_labels)
            d.setUnaryEnergy(unary)
            d.addPairwiseGaussian(sxy=3, compat=compat, normalization=norm)
            d.addPairwiseBilateral(sxy=20, srgb=13, rgbim=image, compat=4, normalization=norm)
            g = crf.DenseCRF(h * w, n_labels)
            g.setUnaryEnergy(unary)
            g.addPairwiseEnergy(feats, compat=compat, normalization=norm)
            q = g.startInference()[0]
            g.stepInference(q)
            out[f"DenseCRF2D norm{norm} {compat_name}"] = sha(np.asarray(d.inference(4)))
            out[f"DenseCRF features norm{norm} {compat_name}"] = sha(np.asarray(q)) + \
                f" kl={g.klDivergence(q)!r}"
    return out


EMU_MAIN = ROOT / "csrc" / "cuda" / "host_emulation_main.cpp"  # the program tests/test_crf_cuda.py builds


def emulation_cases() -> dict[str, str]:
    """The CUDA pipeline's host emulation (same functors as the GPU, run in a loop on the CPU)."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        return {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        exe = d / "emu"
        subprocess.run([cxx, "-std=c++17", "-O1", f"-I{ROOT / 'csrc'}", str(EMU_MAIN), "-o", str(exe)], check=True)
        for preset, values in PRESETS.items():
            for b, n_labels, h, w in ((1, 2, 17, 23), (2, 11, 33, 29), (1, 21, 48, 40)):
                rng = np.random.default_rng(b * 1000 + n_labels * 10 + h)
                probs, image = probs_of(rng, b, n_labels, h, w), image_of(rng, b, h, w)
                probs.tofile(d / "p.bin")
                image.tofile(d / "i.bin")
                args = [str(exe), str(b), str(n_labels), str(h), str(w)] + [repr(v) for v in values]
                r = subprocess.run(args + [str(d / "p.bin"), str(d / "i.bin"), str(d / "o.bin")],
                                   capture_output=True, text=True, check=True)
                q = np.fromfile(d / "o.bin", np.float32)
                out[f"emulation {preset} b{b} L{n_labels} {h}x{w}"] = sha(q) + f" counts={r.stdout.split()}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-emulation", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # run the CPU cases of one switch setting, print json
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(cpu_cases()))
        return 0
    cases = {}
    for setting in ENV_SETTINGS:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSEG_")}
        env.update(setting)
        r = subprocess.run([sys.executable, "-P", __file__, "--child", "x"], env=env, capture_output=True,
                           text=True, check=True, cwd="/")
        tag = ",".join(f"{k}={v}" for k, v in setting.items()) or "default"
        cases.update({f"[{tag}] {k}": v for k, v in json.loads(r.stdout).items()})
    if not args.no_emulation:
        cases.update(emulation_cases())
    total = hashlib.sha256()
    for k in sorted(cases):
        print(f"{cases[k][:16]}  {k}  {cases[k][64:]}".rstrip())
        total.update(f"{k}={cases[k]}\n".encode())
    print(f"total {total.hexdigest()} ({len(cases)} cases)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
