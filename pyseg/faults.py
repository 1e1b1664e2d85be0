"""Fault injection for the crash tests (tests/test_train_crash.py), inert otherwise.

``PYSEG_FAULT_KILL=POINT@N`` makes the process SIGKILL itself (no clean-up, like the OOM killer or a power cut)
the Nth time it reaches ``kill_point(POINT)``. The points: ``optimizer_step`` (after a training step) and
``commit:<file name>`` (an atomic write whose temp file holds the data, not yet flushed or moved into place).
"""

from __future__ import annotations

import os
import re
import signal

_SPEC = os.environ.get("PYSEG_FAULT_KILL", "")  # read once, here only
_match = re.fullmatch(r"(.+)@([1-9]\d*)", _SPEC)
if _SPEC and _match is None:
    raise ValueError(f"PYSEG_FAULT_KILL must be POINT@N (e.g. optimizer_step@3, commit:last.pt@2), got {_SPEC!r}")
_POINT, _AT = (_match.group(1), int(_match.group(2))) if _match else (None, 0)
_reached = 0


def kill_point(name: str) -> None:
    """SIGKILL this process at the PYSEG_FAULT_KILL point; a no-op when the variable is unset."""
    global _reached
    if name != _POINT:
        return
    _reached += 1
    if _reached == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
