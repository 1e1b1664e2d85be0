"""Argument checks shared by the CRF's two front ends (``api`` and the pydensecrf-style ``densecrf``)."""

from __future__ import annotations

import numbers


def check_int(value, name: str, minimum: int) -> int:
    """``value`` as an int; TypeError for a non-integer (bools included), ValueError below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
