"""``pyseg-train --epochs 1`` on every shipped config is a valid smoke run: the warm-up, the schedule and the
optimizer that fit() builds accept the short run (a warm-up longer than it is shortened with a warning), and
every learning rate of the run is finite and the head's peaks above zero."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pyseg.config import load_config  # noqa: E402
from pyseg.training.build import build_optimizer  # noqa: E402
from pyseg.training.engine import fit_warmup  # noqa: E402
from pyseg.training.schedules import build_scheduler  # noqa: E402

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
TRASHCAN_TRAIN_IMAGES = 2617  # the competition's train.json


class _TwoPart(torch.nn.Module):
    """Backbone and head parameters, as build_optimizer splits a real model."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 2)


def test_every_shipped_config_is_found():
    assert len(CONFIGS) >= 10, CONFIGS


@pytest.mark.parametrize("images", [1, 8, TRASHCAN_TRAIN_IMAGES])
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_one_epoch_is_a_valid_run(path, images, caplog):
    cfg = load_config(path, ["train.epochs=1"])
    warmup = cfg.schedule.warmup_steps
    steps = math.ceil(math.ceil(images / cfg.data.batch_size) / cfg.train.accum_steps) * cfg.train.epochs
    with caplog.at_level(logging.WARNING, logger="pyseg.training.engine"):
        fit_warmup(cfg, steps)
    if warmup >= steps:
        assert cfg.schedule.warmup_steps == steps // 2
        assert f"schedule.warmup_steps={warmup} is not shorter than the run" in caplog.text
    else:
        assert cfg.schedule.warmup_steps == warmup and not caplog.text
    optimizer = build_optimizer(_TwoPart(), cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps)
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert all(math.isfinite(v) and v >= 0 for row in lrs for v in row)
    assert max(row[-1] for row in lrs) > 0, "the head never learns in a one-epoch run"
