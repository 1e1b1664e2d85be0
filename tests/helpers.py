"""Inputs shared by the tests: synthetic and natural images, network-like probabilities (the CRF tests); a
tiny dataset, model and stand-in CRF (the inference tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build_host_emulator(main_cpp: Path, out_dir: Path, flags=()) -> Path | None:
    """A program running the CUDA code's host emulation (csrc/cuda/host_exec.cuh), built with g++ from
    main_cpp into out_dir with extra compiler flags (e.g. sanitizers); None without a C++ compiler."""
    cxx = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if cxx is None:
        return None
    exe = out_dir / main_cpp.stem
    r = subprocess.run([cxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", *flags,
                        f"-I{REPO / 'csrc'}", str(main_cpp), "-o", str(exe)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return exe


def smooth_image(h: int, w: int, seed: int = 0, periods=(7.0, 5.0, 11.0), noise: float = 6.0) -> np.ndarray:
    """Smooth synthetic RGB (H, W, 3) uint8 with a little noise: regions the bilateral kernel can follow."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    px, py, pxy = periods
    img = np.stack([128 + 100 * np.sin(xx / px + seed), 128 + 100 * np.cos(yy / py),
                    128 + 90 * np.sin((xx + yy) / pxy)], -1)
    img += rng.normal(0, noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def edged_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Ramps and a checkerboard with a little noise (H, W, 3) uint8: regions and edges, a sparse lattice."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                    np.where((xx // 7 + yy // 5) % 2 == 0, 40, 200)], -1)
    return np.clip(img + rng.integers(-6, 7, size=img.shape), 0, 255).astype(np.uint8)


def load_rgb(path) -> np.ndarray:
    """An image file as a writable, C-contiguous (H, W, 3) uint8 RGB array."""
    from PIL import Image

    return np.array(Image.open(path).convert("RGB"))


def natural_crop(shared_data, h: int, w: int, *, y0: int, x0: int, name: str = "im1.png") -> np.ndarray:
    """The (h, w) crop at (y0, x0) of ../shared/data/crf_examples/<name>, C-contiguous uint8 RGB."""
    img = load_rgb(shared_data / "crf_examples" / name)
    if y0 + h > img.shape[0] or x0 + w > img.shape[1]:
        raise ValueError(f"crop {h}x{w} at ({y0}, {x0}) does not fit {name} of shape {img.shape[:2]}")
    return np.ascontiguousarray(img[y0:y0 + h, x0:x0 + w])


def blocky_probs(n_labels: int, h: int, w: int, seed: int = 0, block=(9, 13)) -> np.ndarray:
    """Noisy per-region probabilities, like a network's output: mostly confident, sometimes wrong."""
    rng = np.random.default_rng(seed)
    lab = (np.add.outer(np.arange(h) // block[0], np.arange(w) // block[1]) + seed) % n_labels
    p = np.full((n_labels, h, w), 0.2 / max(n_labels - 1, 1))
    np.put_along_axis(p, lab[None], 0.8, axis=0)
    p = 0.6 * p + 0.4 * rng.dirichlet(np.ones(n_labels), size=(h, w)).transpose(2, 0, 1)
    return (p / p.sum(0, keepdims=True)).astype(np.float32)


def crf_test_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """The smooth image of the CRF API, lattice-grid and lattice-cache tests."""
    return smooth_image(h, w, seed, periods=(6.0, 4.0, 9.0), noise=5.0)


def crf_test_probs(n_labels: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """The blocky probabilities of the same tests."""
    return blocky_probs(n_labels, h, w, seed, block=(7, 9))


# ---------------------------------------------------------------------------------- inference tests
class TinyDataset:
    """Items as pyseg.data datasets give them without a transform; images of two sizes."""

    def __init__(self, n=5, num_classes=3, sizes=((12, 16), (10, 10)), labelled=True, seed=0):
        rng = np.random.default_rng(seed)
        self.items = []
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            mask = np.zeros((h, w), np.int64)
            mask[:, w // 2:] = 1 + i % (num_classes - 1)
            img = (rng.integers(0, 40, (h, w, 3)) + 60 * mask[..., None]).astype(np.uint8)
            item = {"image": img, "image_id": f"imgs/{i:03d}.jpg", "id": 100 + i}
            if labelled:
                item["mask"] = mask
            self.items.append(item)
        self.num_classes = num_classes
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]][:num_classes], np.uint8)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return dict(self.items[i])

    @property
    def image_ids(self):
        return [it["image_id"] for it in self.items]


def tiny_model(num_classes=3, seed=0):
    """Two convolutions, seeded, in eval mode: a model the inference code can run in milliseconds."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, num_classes, 3, padding=1)).eval()


class FakeCRF:
    """Stands in for dense_crf: records its inputs; 'refines' to the brightness threshold of the image."""

    def __init__(self):
        self.calls = []

    def __call__(self, probs, image, params=None, device="auto", num_threads=None):
        self.calls.append((probs.shape, image.dtype, image.shape, device))
        assert probs.dtype == np.float32 and probs.ndim == 4 and image.ndim == 4
        labels = (image.mean(-1) > 60).astype(np.int64)  # raw 0..255 image: the right half is brighter
        out = np.zeros_like(probs)
        np.put_along_axis(out, labels[:, None], 1.0, axis=1)
        return out
