"""Learning-rate schedules stepped once per optimizer step, built from ``torch.optim.lr_scheduler``.

``build_scheduler(optimizer, cfg, total_steps)`` returns one scheduler whose curve, with ``peak`` the
LR of a parameter group, N = ``warmup_steps``, f0 = ``warmup_start_factor``, k = s - N and
K = total_steps - N, is at step s (0-based; the LR used by the s-th optimizer step):

    s < N:    peak * (f0 + (1 - f0) * s / N)                       (LambdaLR)
    s >= N:   constant     peak                                     (ConstantLR factor 1)
              exponential  peak * gamma ** k                        (ExponentialLR)
              step         peak * gamma ** (k // step_size)         (StepLR)
              poly         peak * (1 - min(k, K) / K) ** power      (PolynomialLR)
              cosine       min_lr + (peak - min_lr) * (1 + cos(pi * min(k, K) / K)) / 2   (CosineAnnealingLR)

The warm-up and the decay are joined by ``SequentialLR`` at milestone N, which restarts the decay
scheduler at its step 0 (so step N is exactly the peak, unlike the ``warmup_scheduler`` package whose
hand-over repeats or skips a value). ``lr_at(cfg, peak, s, total_steps)`` is the same curve in closed
form, used by tests and plots.
"""

from __future__ import annotations

import math

import torch
from torch.optim import lr_scheduler as lrs

from pyseg.config import ScheduleConfig


class _Warmup:
    """Picklable LambdaLR multiplier: linear from ``start`` at step 0 to 1 at step ``steps``."""

    def __init__(self, steps: int, start: float):
        self.steps = steps
        self.start = start

    def __call__(self, step: int) -> float:
        if step >= self.steps:
            return 1.0
        return self.start + (1.0 - self.start) * step / self.steps


def _decay(optimizer, cfg: ScheduleConfig, decay_steps: int):
    if cfg.name == "constant":
        return lrs.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.name == "exponential":
        return lrs.ExponentialLR(optimizer, gamma=cfg.gamma)
    if cfg.name == "step":
        return lrs.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    if cfg.name == "poly":
        return lrs.PolynomialLR(optimizer, total_iters=decay_steps, power=cfg.power)
    if cfg.name == "cosine":
        return lrs.CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=cfg.min_lr)
    raise ValueError(f"unknown schedule {cfg.name!r}; expected constant, exponential, step, poly or cosine")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int):
    """Scheduler for ``total_steps`` optimizer steps (call ``.step()`` after each optimizer step)."""
    if not isinstance(cfg, ScheduleConfig):
        raise TypeError(f"cfg must be a ScheduleConfig, got {type(cfg).__name__}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if cfg.warmup_steps >= total_steps and cfg.name in ("poly", "cosine"):
        raise ValueError(f"schedule.warmup_steps ({cfg.warmup_steps}) must be smaller than the total number "
                         f"of optimizer steps ({total_steps}) for a {cfg.name} decay")
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    if cfg.warmup_steps == 0:
        return _decay(optimizer, cfg, decay_steps)
    warm = lrs.LambdaLR(optimizer, _Warmup(cfg.warmup_steps, cfg.warmup_start_factor))
    decay = _decay(optimizer, cfg, decay_steps)
    return lrs.SequentialLR(optimizer, [warm, decay], milestones=[cfg.warmup_steps])


def lr_at(cfg: ScheduleConfig, peak: float, step: int, total_steps: int) -> float:
    """Closed-form LR at 0-based optimizer step ``step`` (see the module docstring)."""
    n, f0 = cfg.warmup_steps, cfg.warmup_start_factor
    if step < n:
        return peak * (f0 + (1 - f0) * step / n)
    k = step - n
    big_k = max(total_steps - n, 1)
    if cfg.name == "constant":
        return peak
    if cfg.name == "exponential":
        return peak * cfg.gamma ** k
    if cfg.name == "step":
        return peak * cfg.gamma ** (k // cfg.step_size)
    if cfg.name == "poly":
        return peak * (1 - min(k, big_k) / big_k) ** cfg.power
    if cfg.name == "cosine":
        return cfg.min_lr + (peak - cfg.min_lr) * (1 + math.cos(math.pi * min(k, big_k) / big_k)) / 2
    raise ValueError(f"unknown schedule {cfg.name!r}")
