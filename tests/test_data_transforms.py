"""albumentations presets: shapes, image/mask alignment, reproducible seeding, distinct DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyseg.data import IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transform, seed_transform, train_transform
from pyseg.data import worker_init_fn

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)


def sample(h=48, w=64):
    """An image whose colour is a function of its mask (class k = PALETTE[k]) with large flat regions."""
    mask = np.zeros((h, w), np.int64)
    mask[:, : w // 3] = 1
    mask[: h // 2, w // 2 :] = 2
    mask[h // 2 :, 3 * w // 4 :] = 3
    return PALETTE[mask], mask


def test_eval_transform_shapes_and_normalisation():
    img, mask = sample()
    out = eval_transform((24, 32))(image=img, mask=mask)
    assert out["image"].shape == (3, 24, 32) and out["image"].dtype == torch.float32
    assert out["mask"].shape == (24, 32)
    red = out["image"][:, 12, 2]  # class 1 region = pure red
    expect = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(red, expect, atol=1e-5)
    same = eval_transform(None)(image=img, mask=mask)
    assert same["image"].shape == (3, 48, 64) and np.array_equal(same["mask"].numpy(), mask)
    assert np.array_equal(denormalize(same["image"]), img)


@pytest.mark.parametrize("seed", range(6))
def test_train_transform_keeps_image_and_mask_aligned(seed):
    img, mask = sample()
    t = train_transform(32, scale=(0.3, 1.0), color=0.0, seed=seed)
    out = t(image=img, mask=mask)
    im, m = denormalize(out["image"]), out["mask"].numpy()
    assert im.shape == (32, 32, 3) and m.shape == (32, 32)
    assert set(np.unique(m)) <= {0, 1, 2, 3}  # nearest-neighbour masks: no new labels
    # away from label borders the colour still says the class (a flip or crop moved both together)
    inner = np.ones_like(m, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            inner &= np.roll(m, (dy, dx), (0, 1)) == m
    inner[0, :] = inner[-1, :] = inner[:, 0] = inner[:, -1] = False
    err = np.abs(im[inner].astype(int) - PALETTE[m[inner]].astype(int)).max(initial=0)
    assert err <= 2


def test_seeded_transform_is_reproducible_and_seed_dependent():
    img, mask = sample()
    runs = []
    for seed in (5, 5, 6):
        t = train_transform(32, seed=seed)
        runs.append([t(image=img, mask=mask)["image"] for _ in range(4)])
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))
    t = train_transform(32, seed=1)
    first = t(image=img)["image"]
    seed_transform(t, 1)  # reseeding restarts the stream
    assert torch.equal(t(image=img)["image"], first)


def test_plain_resize_and_options():
    img, mask = sample()
    t = train_transform((20, 24), scale=None, hflip=0.0, color=0.0, seed=0)
    out = t(image=img, mask=mask)
    ref = eval_transform((20, 24))(image=img, mask=mask)
    assert torch.equal(out["image"], ref["image"]) and torch.equal(out["mask"], ref["mask"])
    assert train_transform(32, clahe=1.0, seed=0)(image=img)["image"].shape == (3, 32, 32)


def test_bad_arguments():
    with pytest.raises(TypeError, match="size"):
        train_transform("big")
    with pytest.raises(ValueError, match="positive"):
        eval_transform(0)
    with pytest.raises(ValueError, match="hflip"):
        train_transform(32, hflip=1.5)
    with pytest.raises(ValueError, match="scale"):
        train_transform(32, scale=(0.5, 2.0))
    with pytest.raises(TypeError, match="albumentations"):
        seed_transform(object(), 0)
    with pytest.raises(ValueError, match=r"\(3,H,W\)"):
        denormalize(torch.zeros(1, 4, 4))


class _Augmented(torch.utils.data.Dataset):
    """The same image every item: any difference between items comes from the augmentation stream."""

    def __init__(self, n=4):
        self.img, self.mask = sample()
        self.transform = train_transform(32, seed=0)
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.transform(image=self.img, mask=self.mask)["image"]


def _epoch(worker_init, seed):
    loader = torch.utils.data.DataLoader(_Augmented(), batch_size=1, num_workers=2, worker_init_fn=worker_init,
                                         generator=torch.Generator().manual_seed(seed),
                                         multiprocessing_context="fork")
    return [b[0] for b in loader]  # items 0, 2 from worker 0; items 1, 3 from worker 1


def test_workers_get_distinct_reproducible_streams():
    plain = _epoch(None, 0)
    # the problem: forked workers copy one RNG state, so both workers repeat the same stream
    assert torch.equal(plain[0], plain[1]) and torch.equal(plain[2], plain[3])
    a, b, c = _epoch(worker_init_fn, 0), _epoch(worker_init_fn, 0), _epoch(worker_init_fn, 1)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[2], a[3])
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # same loader seed, same epoch
    assert not all(torch.equal(x, y) for x, y in zip(a, c))  # another seed (or epoch), another stream


def test_worker_init_fn_finds_transform_behind_subset(monkeypatch):
    ds = _Augmented()
    sub = torch.utils.data.Subset(ds, [0, 1])

    class Info:
        dataset = sub

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: Info)
    torch.manual_seed(123)
    worker_init_fn(0)
    first = ds[0]
    torch.manual_seed(123)
    worker_init_fn(0)
    assert torch.equal(ds[0], first)
    torch.manual_seed(124)
    worker_init_fn(0)
    assert not torch.equal(ds[0], first)
