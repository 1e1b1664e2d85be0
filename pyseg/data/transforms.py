"""albumentations 2.0.8 presets and per-worker seeding.

``train_transform`` / ``eval_transform`` return ``A.Compose`` objects called as ``t(image=HxWx3 uint8,
mask=HxW int)`` and giving ``image`` float tensor (3,h,w) normalised and ``mask`` tensor (h,w) (the datasets cast
it to int64).

Seeding. albumentations 2 keeps its own RNGs inside the Compose (``np.random.Generator`` + ``random.Random``,
set by ``Compose(seed=...)`` / ``set_random_seed``); global ``np.random.seed``/``torch.manual_seed`` do not touch
them, and a DataLoader's forked workers all inherit copies of the same state, so without reseeding every worker
repeats the same augmentation stream. :func:`worker_init_fn` reseeds the dataset's transform in each worker from
``torch.initial_seed()`` (= the loader's base seed + worker id: distinct per worker and per epoch, reproducible
when the loader's generator / torch's seed is fixed). :func:`seed_transform` gives all transforms in a Compose
one shared stream (``Compose(seed=s)`` would give each child its own generator with the *same* seed, so their
coin flips would be correlated).
"""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _hw(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = (int(s) for s in size)
    else:
        raise TypeError(f"size must be an int or (height, width), got {size!r}")
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return h, w


def train_transform(size=256, *, scale=(0.5, 1.0), hflip: float = 0.5, color: float = 0.5, clahe: float = 0.0,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD, seed: int | None = None) -> A.Compose:
    """Training preset: random resized crop (or plain resize), horizontal flip, colour jitter, CLAHE, normalise.

    Args:
        size: output size, int or (h, w) (e.g. 256 for the competition's 512x512 images).
        scale: area range of ``RandomResizedCrop`` relative to the image; None = plain resize to ``size``.
        hflip: probability of a horizontal flip (vertical flips hurt in the competition; none here).
        color: probability of ``ColorJitter(0.2, 0.2, 0.2, 0.02)``; 0 disables it.
        clahe: probability of CLAHE (reported to help in the competition); 0 disables it.
        mean, std: normalisation (RGB, 0..1 scale).
        seed: seed of the Compose's RNG (see :func:`seed_transform`); None = nondeterministic.
    """
    h, w = _hw(size)
    for name, p in (("hflip", hflip), ("color", color), ("clahe", clahe)):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    ops: list = []
    if scale is None:
        ops.append(A.Resize(h, w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST))
    else:
        lo, hi = scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"scale must satisfy 0 < min <= max <= 1, got {scale!r}")
        ops.append(A.RandomResizedCrop(size=(h, w), scale=(lo, hi), mask_interpolation=cv2.INTER_NEAREST))
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    if clahe > 0:
        ops.append(A.CLAHE(p=clahe))
    if color > 0:
        ops.append(A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02, p=color))
    ops += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    t = A.Compose(ops)
    seed_transform(t, seed)
    return t


def eval_transform(size=256, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> A.Compose:
    """Evaluation preset: resize to ``size`` (int or (h, w); None keeps the image size), normalise, to tensor."""
    ops: list = []
    if size is not None:
        h, w = _hw(size)
        ops.append(A.Resize(h, w, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST))
    ops += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    return A.Compose(ops)


def denormalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Normalised (3,H,W) float tensor -> (H,W,3) uint8 RGB (e.g. for the dense CRF or plots)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"denormalize expects a (3,H,W) tensor, got {getattr(image, 'shape', type(image))}")
    m = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype).view(3, 1, 1)
    x = (image.detach().cpu() * s + m).clamp(0, 1) * 255.0
    return x.round().to(torch.uint8).permute(1, 2, 0).numpy()


def seed_transform(transform, seed: int | None) -> None:
    """Give an albumentations Compose (and all its children) one shared RNG stream seeded by ``seed``."""
    if transform is None:
        return
    if not hasattr(transform, "set_random_state"):
        raise TypeError(f"seed_transform expects an albumentations transform, got {type(transform).__name__}")
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    transform.seed = seed


def _find_transform_owner(dataset):
    """Walk Subset/ConcatDataset-like wrappers; yield every object with a ``transform`` attribute."""
    stack, seen = [dataset], set()
    while stack:
        d = stack.pop()
        if d is None or id(d) in seen:
            continue
        seen.add(id(d))
        if getattr(d, "transform", None) is not None:
            yield d
        stack.extend(getattr(d, "datasets", []) or [])
        stack.append(getattr(d, "dataset", None))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: reseed Python/NumPy and the dataset's albumentations transform.

    Seed = ``torch.initial_seed()`` inside the worker (the loader's base seed + ``worker_id``), so streams are
    distinct per worker and per epoch, and reproducible from ``torch.manual_seed`` or the loader's ``generator``.
    In the main process (``num_workers=0``) call :func:`seed_transform` yourself.
    """
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**63
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if info is None:
        return
    for i, owner in enumerate(_find_transform_owner(info.dataset)):
        t = owner.transform
        if hasattr(t, "set_random_state"):
            seed_transform(t, seed + 7919 * i)
