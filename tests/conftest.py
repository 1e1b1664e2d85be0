"""Shared fixtures and markers. Tests that need ../shared/data, pydensecrf2 or a GPU skip with a reason.

Under CI=true a missing pydensecrf2 fails its tests instead, and the run fails if any test skipped for a
reason other than the machine's GPU (while ../shared/data is present). Every run lists its skips at the end.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
CI = os.environ.get("CI", "").lower() == "true"
# The only skips CI accepts: the ones that say this machine has no GPU (or has one, for CPU-only checks).
GPU_SKIP = re.compile(r"needs a CUDA GPU|a GPU is present")
DATA_MISSING = "real data not found at"
_SKIPS: list[tuple[str, str]] = []  # (test id, reason) of every skip in this session


def _cuda_usable() -> bool:
    try:
        import torch
    except ImportError:
        return False
    if not torch.cuda.is_available():  # the call, not the function object
        return False
    try:
        from pyseg.crf import _crf_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def _have_pydensecrf() -> bool:
    return importlib.util.find_spec("pydensecrf") is not None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip saying where it was looked for."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{DATA_MISSING} {SHARED_DATA} (set PYSEG_SHARED_DATA to point elsewhere)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    cuda_ok = None
    have_pydensecrf = _have_pydensecrf()
    for item in items:
        if "cuda" in item.keywords:
            if cuda_ok is None:
                cuda_ok = _cuda_usable()
            if not cuda_ok:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU and pyseg built with CUDA"))
        if "pydensecrf" in item.keywords and not have_pydensecrf and not CI:
            item.add_marker(pytest.mark.skip(reason="pydensecrf2 is not installed (pip install pydensecrf2)"))


def pytest_runtest_setup(item):
    if CI and "pydensecrf" in item.keywords and not _have_pydensecrf():  # the parity reference must not vanish
        pytest.fail("pydensecrf2 is not installed, and CI=true needs it as the parity reference "
                    "(scripts/setup.sh installs it: see its output)", pytrace=False)


def _record_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _SKIPS.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_collectreport(report):
    _record_skip(report)


def unexpected_skips(skips: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The skips CI does not accept: all but the GPU ones (and the missing-data one where the data is absent)."""
    return [(node, why) for node, why in skips
            if not GPU_SKIP.search(why) and not (why.startswith(DATA_MISSING) and not SHARED_DATA.is_dir())]


def pytest_sessionfinish(session, exitstatus):
    if CI and exitstatus == pytest.ExitCode.OK and unexpected_skips(_SKIPS):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _SKIPS:
        return
    bad = unexpected_skips(_SKIPS)
    terminalreporter.section(f"skipped tests ({len(_SKIPS)}, {len(bad)} not for the GPU)")
    for node, why in _SKIPS:
        terminalreporter.line(f"{'GPU ' if (node, why) not in bad else 'SKIP'} {node}: {why}")
    if CI and bad:
        terminalreporter.line(f"CI=true: {len(bad)} test(s) skipped for a reason other than the GPU; the run fails "
                              "(make them run here, or fix what they lack)", red=True)
