"""LR schedules: the curve stepped per iteration matches the closed-form formulas value by value."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from pyseg.config import ScheduleConfig
from pyseg.training.schedules import build_scheduler, lr_at

PEAK, BACKBONE = 0.1, 0.01


def _curve(cfg, total, groups=(PEAK, BACKBONE)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in groups]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, groups)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation / order warnings from torch
        sched = build_scheduler(opt, cfg, total)
        out = []
        for _ in range(total):
            out.append([g["lr"] for g in opt.param_groups])
            opt.step()
            sched.step()
    return out


def _formula(name, s, n, f0, total, gamma=0.9, step_size=3, power=0.9, min_lr=0.0, peak=PEAK):
    """Independent closed form (written out again on purpose, not calling lr_at)."""
    if s < n:
        return peak * (f0 + (1 - f0) * s / n)
    k, big = s - n, total - n
    return {
        "constant": peak,
        "exponential": peak * gamma ** k,
        "step": peak * gamma ** (k // step_size),
        "poly": peak * (1 - k / big) ** power,
        "cosine": min_lr + (peak - min_lr) * (1 + math.cos(math.pi * k / big)) / 2,
    }[name]


@pytest.mark.parametrize("name", ["constant", "exponential", "step", "poly", "cosine"])
@pytest.mark.parametrize("warmup, f0", [(0, 0.0), (5, 0.0), (4, 0.25), (1, 0.0)])
def test_curve_matches_closed_form(name, warmup, f0):
    total = 23
    cfg = ScheduleConfig(name=name, warmup_steps=warmup, warmup_start_factor=f0, gamma=0.9, step_size=3,
                         power=0.9, min_lr=0.0)
    got = _curve(cfg, total)
    for s, (lr_head, lr_bb) in enumerate(got):
        assert lr_head == pytest.approx(_formula(name, s, warmup, f0, total), rel=1e-9, abs=1e-15), (s, got)
        assert lr_bb == pytest.approx(_formula(name, s, warmup, f0, total, peak=BACKBONE), rel=1e-9, abs=1e-16)
        assert lr_head == pytest.approx(lr_at(cfg, PEAK, s, total), rel=1e-9, abs=1e-15)


def test_warmup_hand_over_has_no_off_by_one():
    """Gradual warmup from 0 over 4 steps then x0.996 per step: 0, .25, .5, .75, 1, .996, .996^2."""
    cfg = ScheduleConfig(name="exponential", warmup_steps=4, gamma=0.996)
    got = [g[0] / PEAK for g in _curve(cfg, 7)]
    assert got == pytest.approx([0, 0.25, 0.5, 0.75, 1.0, 0.996, 0.996 ** 2], abs=1e-12)


def test_cosine_with_floor_ends_near_min_lr():
    cfg = ScheduleConfig(name="cosine", warmup_steps=2, min_lr=1e-3)
    got = [g[0] for g in _curve(cfg, 12)]
    for s, v in enumerate(got):
        assert v == pytest.approx(_formula("cosine", s, 2, 0.0, 12, min_lr=1e-3), rel=1e-9)
    assert min(got[2:]) > 1e-3


def test_state_dict_round_trip_continues_the_curve():
    cfg = ScheduleConfig(name="poly", warmup_steps=3, power=2.0)
    total = 15
    full = [g[0] for g in _curve(cfg, total, groups=(PEAK,))]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=PEAK)
    sched = build_scheduler(opt, cfg, total)
    for _ in range(6):  # interrupted after 6 steps, in the middle of the decay
        opt.step()
        sched.step()
    state_opt, state_sched = opt.state_dict(), sched.state_dict()
    p2 = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([p2], lr=PEAK)
    sched2 = build_scheduler(opt2, cfg, total)
    opt2.load_state_dict(state_opt)
    sched2.load_state_dict(state_sched)
    rest = []
    for _ in range(6, total):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert rest == pytest.approx(full[6:], rel=1e-12)


def test_bad_arguments():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="total_steps"):
        build_scheduler(opt, ScheduleConfig(), 0)
    with pytest.raises(ValueError, match="warmup_steps"):
        build_scheduler(opt, ScheduleConfig(name="cosine", warmup_steps=10), 10)
    with pytest.raises(TypeError, match="ScheduleConfig"):
        build_scheduler(opt, {"name": "constant"}, 10)
