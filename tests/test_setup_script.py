"""scripts/setup.sh and pydensecrf2: a failed install is retried on the next run, and fails the set-up under CI.

Runs the real script against a stand-in venv whose python logs its calls (pydensecrf2 never installs), so no
package is installed and no network is used.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_FAKE_PYTHON = """#!/usr/bin/env bash
echo "$*" >> "$(dirname "$0")/../calls.log"
case "$*" in
  *"import pydensecrf"*) exit 1 ;;           # the reference is not importable
  *"install -q pydensecrf2"*) exit 1 ;;      # and does not install
  *) exit 0 ;;                               # the build and install of pyseg itself
esac
"""


def _venv(tmp_path: Path) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    py = venv / "bin" / "python"
    py.write_text(_FAKE_PYTHON)
    py.chmod(0o755)
    (venv / ".pyseg-deps-v1").touch()  # the dependencies are "installed": only pyseg and the reference remain
    return venv


def _setup(venv: Path, ci: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PYSEG_VENV=str(venv), CI=ci)
    return subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], env=env, capture_output=True, text=True,
                          timeout=60)


def _pydensecrf_installs(venv: Path) -> int:
    return sum("install -q pydensecrf2" in line for line in (venv / "calls.log").read_text().splitlines())


def test_failed_reference_install_is_retried_on_the_next_run(tmp_path):
    venv = _venv(tmp_path)
    for run in (1, 2):
        r = _setup(venv, ci="")
        assert r.returncode == 0, r.stderr
        assert "warning: pydensecrf2 did not install" in r.stderr
        assert _pydensecrf_installs(venv) == run, f"run {run}: the install of pydensecrf2 was not tried again"


def test_failed_reference_install_fails_setup_under_ci(tmp_path):
    venv = _venv(tmp_path)
    r = _setup(venv, ci="true")
    assert r.returncode != 0
    assert "error: pydensecrf2 did not install, and CI needs it" in r.stderr
    assert "ready" not in r.stdout
