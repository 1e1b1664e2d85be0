"""Data loaders built once per run, whose augmentation depends only on (run seed, epoch, image index).

Each training item is fetched as ``(index, seed)``: :class:`SeededSampler` pairs the sampler's indices with a
seed derived from the epoch and the index, and :class:`SeededItems` seeds the albumentations pipeline with
it before loading the item. An image is therefore augmented the same way whichever worker loads it, with
any number of workers, and after a resume; so the workers can persist across epochs (no re-forking, no
re-decoding of a RAM cache) without losing reproducibility.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A distinct, reproducible seed for each (run seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch * 1009 + rank) % 2**63


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of dataset item ``index`` in ``epoch`` (the same on every rank and worker)."""
    return int(np.random.SeedSequence([seed % 2**63, epoch, index]).generate_state(1, np.uint64)[0] % 2**63)


def _transforms_of(dataset):
    """Albumentations-like transforms reachable from ``dataset`` (through Subset / ConcatDataset)."""
    out = []
    stack = [dataset]
    while stack:
        ds = stack.pop()
        t = getattr(ds, "transform", None)
        if callable(getattr(t, "set_random_state", None)) or callable(getattr(t, "set_random_seed", None)):
            out.append(t)
        if hasattr(ds, "dataset"):
            stack.append(ds.dataset)
        stack.extend(getattr(ds, "datasets", []))
    return out


def seed_transforms(dataset, seed: int) -> None:
    """Re-seed the dataset's augmentation pipeline (albumentations keeps its own generators).

    One shared stream for the whole Compose (``set_random_state``), not one equal seed per child transform
    (``set_random_seed``), whose coin flips would be correlated.
    """
    for i, t in enumerate(_transforms_of(dataset)):
        s = (int(seed) + 7919 * i) % 2**32
        if callable(getattr(t, "set_random_state", None)):
            t.set_random_state(np.random.default_rng(s), random.Random(s))
        else:
            t.set_random_seed(s)


class SeededSampler(torch.utils.data.Sampler):
    """Yields ``(index, item_seed(seed, epoch, index))`` for every index of ``sampler``; ``set_epoch`` is passed on."""

    def __init__(self, sampler, seed: int):
        self.sampler, self.seed, self.epoch = sampler, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        for index in self.sampler:
            yield int(index), item_seed(self.seed, self.epoch, int(index))

    def __len__(self) -> int:
        return len(self.sampler)


class SeededItems(torch.utils.data.Dataset):
    """``dataset`` indexed by ``(index, seed)``: the augmentation (and, in a worker process, Python's, NumPy's
    and torch's global generators, which the worker owns) is seeded with ``seed`` before the item is loaded."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        seed_transforms(self.dataset, seed)
        if torch.utils.data.get_worker_info() is not None:  # the main process's generators stay the caller's
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
        return self.dataset[index]


def make_loader(dataset, batch_size: int, *, sampler, num_workers: int, seed: int, pin_memory: bool = False,
                drop_last: bool = False, seeded: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader to build once and iterate every epoch (call ``loader.sampler.set_epoch`` first).

    ``seeded``: augmentation seeded per item (training); False for evaluation. Workers persist across epochs.
    """
    if seeded:
        dataset, sampler = SeededItems(dataset), SeededSampler(sampler, seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
        drop_last=drop_last, generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0)
