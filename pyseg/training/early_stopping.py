"""Early stopping on a validation value (val_loss: lower is better; val_miou: higher is better)."""

from __future__ import annotations

import math


class EarlyStopping:
    """``step(value)`` returns True once ``patience`` epochs in a row brought no improvement.

    An improvement is a value better than the best so far by more than ``min_delta``. ``patience`` 0
    disables stopping (``step`` then always returns False but still tracks the best value). A NaN value
    never counts as an improvement.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0):
        if monitor not in ("val_loss", "val_miou"):
            raise ValueError(f"monitor must be 'val_loss' or 'val_miou', got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.mode = "min" if monitor == "val_loss" else "max"
        self.best = math.inf if self.mode == "min" else -math.inf
        self.bad_epochs = 0
        self.should_stop = False

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def step(self, value: float) -> bool:
        value = float(value)
        if self._better(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        self.should_stop = self.patience > 0 and self.bad_epochs >= self.patience
        return self.should_stop

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "should_stop": self.should_stop,
                "monitor": self.monitor}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        if state.get("monitor", self.monitor) != self.monitor:
            raise ValueError(f"checkpoint tracked early stopping on {state['monitor']!r}, the config asks for "
                             f"{self.monitor!r}")
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.should_stop = self.patience > 0 and self.bad_epochs >= self.patience
