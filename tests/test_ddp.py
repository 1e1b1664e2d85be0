"""Distributed data parallel on CPU: two processes with gloo; metrics reduced across ranks, rank-0 files."""

from __future__ import annotations

import json
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pyseg.config import Config, apply_overrides
from pyseg.training.engine import fit, validate


class Blobs(torch.utils.data.Dataset):
    num_classes = 3
    class_names = ["a", "b", "c"]

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 12, 12, generator=g)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0.8).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "mask": self.y[i]}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.head = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


def _cfg():
    return apply_overrides(Config(name="ddp"), [
        "train.epochs=2", "data.batch_size=3", "data.num_workers=0", "optim.lr=0.01", "train.plots=false",
        "train.tensorboard=false", "train.device=cpu", "train.dist_backend=gloo", "model.sync_bn=true"])


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    try:
        result = fit(_cfg(), os.path.join(out_dir, f"run_rank{rank}"), model=Net(),
                     datasets=(Blobs(20, 0), Blobs(7, 1)))  # 7 val images: unequal shards (4 + 3)
        with open(os.path.join(out_dir, f"history{rank}.json"), "w") as f:
            json.dump(result["history"], f)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_fit(tmp_path):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        assert key not in os.environ, "run this test outside torchrun"
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    h0 = json.loads((tmp_path / "history0.json").read_text())
    h1 = json.loads((tmp_path / "history1.json").read_text())
    assert len(h0) == 2
    for r0, r1 in zip(h0, h1):  # every rank sees the reduced numbers
        for k in r0:
            if k != "seconds":
                assert r0[k] == pytest.approx(r1[k], rel=1e-12, nan_ok=True), k
    # rank 0 alone writes files
    assert (tmp_path / "run_rank0" / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "run_rank1").exists()

    # the reduced validation metrics equal one process evaluating all 7 images with the saved weights
    from pyseg.training.checkpoint import load_checkpoint

    ckpt = load_checkpoint(tmp_path / "run_rank0" / "checkpoints" / "last.pt")
    net = Net()
    net.load_state_dict(ckpt["model"])  # SyncBatchNorm keeps BatchNorm's state-dict keys
    loader = torch.utils.data.DataLoader(Blobs(7, 1), batch_size=2)
    ref = validate(net, loader, device=torch.device("cpu"), num_classes=3)
    last = h0[-1]
    assert last["val_loss"] == pytest.approx(ref["loss"], rel=1e-5)
    assert last["val_miou"] == pytest.approx(ref["miou"], rel=1e-9)
    assert last["val_miou_per_image"] == pytest.approx(ref["miou_per_image"], rel=1e-9)
    assert last["val_pixel_acc"] == pytest.approx(ref["pixel_acc"], rel=1e-9)
    assert ckpt["metrics"]["val"]["miou"] == pytest.approx(ref["miou"], rel=1e-9)
    assert all(math.isfinite(r["train_loss"]) for r in h0)
