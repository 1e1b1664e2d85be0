"""The environment switches of the compiled CRF (csrc/switches.h, the one place that reads them; listed in
csrc/README.md). PYSEG_CPU_ISA, PYSEG_LATTICE_SIMD and PYSEG_LATTICE_GRID are held by test_crf_api.py,
test_crf_chunks.py and test_crf_lattice_grid.py; PYSEG_CUDA_GRAPHS by test_crf_cuda.py (GPU)."""

from __future__ import annotations

import os
import subprocess
import sys

_CACHED_AFTER_A_CALL = """
import numpy as np, pyseg.crf as crf
from pyseg.crf import _crf_cpu
crf.set_lattice_cache(0)
rng = np.random.default_rng(0)
p = rng.random((11, 300, 300)).astype(np.float32)
p /= p.sum(0, keepdims=True)
crf.dense_crf(p, rng.integers(0, 256, (300, 300, 3), dtype=np.uint8))
print(_crf_cpu.cached_bytes())
"""


def _cached_bytes(cache_mb: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "PYSEG_CRF_CACHE_MB"}
    if cache_mb is not None:
        env["PYSEG_CRF_CACHE_MB"] = cache_mb
    r = subprocess.run([sys.executable, "-P", "-c", _CACHED_AFTER_A_CALL], env=env, capture_output=True, text=True,
                       timeout=300, cwd="/")
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def test_crf_cache_mb_caps_the_kept_work_buffers():
    default = _cached_bytes(None)
    assert default > 1 << 20  # the default cap (1024 MiB) keeps a 300x300 call's big buffers
    assert _cached_bytes("0") == 0
    assert 0 < _cached_bytes("4") <= 4 << 20
