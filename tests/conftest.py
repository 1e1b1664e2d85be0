"""Shared fixtures and markers. Tests that need ../shared/data, pydensecrf2 or a GPU skip with a reason."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


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


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip saying where it was looked for."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set PYSEG_SHARED_DATA to point elsewhere)")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    cuda_ok = None
    have_pydensecrf = importlib.util.find_spec("pydensecrf") is not None
    for item in items:
        if "cuda" in item.keywords:
            if cuda_ok is None:
                cuda_ok = _cuda_usable()
            if not cuda_ok:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU and pyseg built with CUDA"))
        if "pydensecrf" in item.keywords and not have_pydensecrf:
            item.add_marker(pytest.mark.skip(reason="pydensecrf2 is not installed (pip install pydensecrf2)"))
