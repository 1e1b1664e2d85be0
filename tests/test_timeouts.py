"""pytest-timeout for the whole suite: a hung test ends the run with a failure in minutes, not at the CI limit."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_test_has_a_limit_of_minutes(pytestconfig):
    # pyproject.toml sets it; the thread method also ends a hang inside C++ code, which SIGALRM cannot interrupt
    assert 60 <= float(pytestconfig.getini("timeout")) <= 600
    assert pytestconfig.getini("timeout_method") == "thread"


def test_a_hang_fails_the_run(tmp_path):
    """The suite's pytest settings, the limit shortened to 3 s: a test that waits forever fails the run."""
    (tmp_path / "test_hang.py").write_text("import threading\n\ndef test_hangs():\n    threading.Event().wait()\n")
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-c", str(REPO / "pyproject.toml"),
                        "-o", "timeout=3", str(tmp_path / "test_hang.py")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, r.stdout
    out = r.stdout + r.stderr
    assert "+ Timeout +" in out and "in test_hangs" in out, out  # the hung test, named in its stack
    assert time.monotonic() - t < 60
