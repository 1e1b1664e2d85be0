"""Fault injection for the crash tests (tests/test_train_crash.py), inert otherwise.

``PYSEG_FAULT_KILL=POINT@N`` makes the process SIGKILL itself (no clean-up, like the OOM killer) the Nth time it
reaches POINT: ``optimizer_step`` (after a training step) or ``write:<file name>`` (an atomic write of that
file, killed in its first ``write`` call once half of those bytes are in the temp file).
"""

from __future__ import annotations

import os
import re
import signal

_SPEC = os.environ.get("PYSEG_FAULT_KILL", "")  # read once, here only
_match = re.fullmatch(r"(.+)@([1-9]\d*)", _SPEC)
if _SPEC and _match is None:
    raise ValueError(f"PYSEG_FAULT_KILL must be POINT@N (e.g. optimizer_step@3, write:last.pt@2), got {_SPEC!r}")
_POINT, _AT = (_match.group(1), int(_match.group(2))) if _match else (None, 0)
_reached = 0


def _due(name: str) -> bool:
    global _reached
    if name != _POINT:
        return False
    _reached += 1
    return _reached == _AT


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_point(name: str) -> None:
    """SIGKILL this process at the PYSEG_FAULT_KILL point; a no-op when the variable is unset."""
    if _due(name):
        _kill()


class _TornFile:
    """A file whose first write puts half its data into the file, flushed, then kills the process."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        _kill()

    def __getattr__(self, name):
        return getattr(self._f, name)


def tear(f, name: str):
    """``f`` itself; at the PYSEG_FAULT_KILL point ``name``, a wrapper that dies half-way through its first write."""
    return _TornFile(f) if _due(name) else f
