"""The CI guard of tests/conftest.py, run on generated test files in a subprocess: under CI=true a skip for any
reason but the GPU fails the run, a missing pydensecrf2 fails its tests, and every run lists its skips."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

_TESTS = """
import pytest

def test_runs():
    pass

def test_gpu_only():
    pytest.skip("needs a CUDA GPU and pyseg built with CUDA")

def test_cpu_only():
    pytest.skip("a GPU is present")
"""
_UNEXPECTED = """
def test_lacks_something():
    pytest.skip("no overlapping annotations of different classes found")
"""
_PYDENSECRF = """
@pytest.mark.pydensecrf
def test_needs_reference():
    pass
"""
# Loaded with -p before collection: pydensecrf looks absent to importlib.util.find_spec.
_HIDE_PYDENSECRF = "import sys\nsys.modules['pydensecrf'] = None\n"


def _run(tmp_path: Path, body: str, ci: bool, data: bool = True, hide_pydensecrf: bool = False):
    d = tmp_path / "suite"
    d.mkdir(parents=True)
    shutil.copy(CONFTEST, d / "conftest.py")
    (d / "test_generated.py").write_text(body)
    (d / "hide_pydensecrf.py").write_text(_HIDE_PYDENSECRF)
    (d / "pytest.ini").write_text("[pytest]\nmarkers =\n    pydensecrf: needs pydensecrf2\n")
    shared = tmp_path / "shared_data"
    if data:
        shared.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env.update(PYSEG_SHARED_DATA=str(shared), PYTHONPATH=str(d))
    if ci:
        env["CI"] = "true"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-c", str(d / "pytest.ini"),
           str(d)]
    if hide_pydensecrf:
        cmd[3:3] = ["-p", "hide_pydensecrf"]
    r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def test_gpu_skips_pass_under_ci_and_are_listed(tmp_path):
    rc, out = _run(tmp_path, _TESTS, ci=True)
    assert rc == 0, out
    assert "skipped tests (2, 0 not for the GPU)" in out
    assert "test_generated.py::test_gpu_only: needs a CUDA GPU" in out
    assert "test_generated.py::test_cpu_only: a GPU is present" in out


def test_unexpected_skip_fails_under_ci(tmp_path):
    rc, out = _run(tmp_path, _TESTS + _UNEXPECTED, ci=True)
    assert rc == pytest.ExitCode.TESTS_FAILED, out
    assert "SKIP test_generated.py::test_lacks_something: no overlapping annotations" in out
    assert "CI=true: 1 test(s) skipped for a reason other than the GPU" in out


def test_unexpected_skip_is_listed_but_passes_outside_ci(tmp_path):
    rc, out = _run(tmp_path, _TESTS + _UNEXPECTED, ci=False)
    assert rc == 0, out
    assert "SKIP test_generated.py::test_lacks_something" in out


def test_missing_data_is_accepted_only_where_the_data_is_absent(tmp_path):
    body = _TESTS + "\ndef test_real_data(shared_data):\n    pass\n"
    rc, out = _run(tmp_path, body, ci=True, data=False)
    assert rc == 0, out
    assert "test_real_data: real data not found at" in out


def test_missing_pydensecrf_fails_under_ci_and_skips_outside(tmp_path):
    rc, out = _run(tmp_path / "ci", _TESTS + _PYDENSECRF, ci=True, hide_pydensecrf=True)
    assert rc == pytest.ExitCode.TESTS_FAILED, out
    assert "pydensecrf2 is not installed, and CI=true needs it" in out
    rc, out = _run(tmp_path / "local", _TESTS + _PYDENSECRF, ci=False, hide_pydensecrf=True)
    assert rc == 0, out
    assert "test_needs_reference: pydensecrf2 is not installed (pip install pydensecrf2)" in out
    rc, out = _run(tmp_path / "present", _TESTS + _PYDENSECRF, ci=True)
    assert rc == 0 and "2 passed, 2 skipped" in out, out
