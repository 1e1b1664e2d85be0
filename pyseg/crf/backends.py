"""Which dense-CRF backends are compiled and usable here, and loading them.

The CPU module ``pyseg.crf._crf_cpu`` is always built; the CUDA module ``pyseg.crf._crf_cuda`` only where
nvcc was found at build time (``PYSEG_CUDA``). Nothing here imports torch unless asked about CUDA.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

_CPU: Any = None
_CPU_ERROR: str | None = None


def load_cpu():
    """The compiled CPU module; raises ImportError saying how to build it when it is missing."""
    global _CPU, _CPU_ERROR
    if _CPU is not None:
        return _CPU
    try:
        _CPU = importlib.import_module("pyseg.crf._crf_cpu")
    except ImportError as e:
        _CPU_ERROR = str(e)
        raise ImportError(
            f"the CPU CRF module pyseg.crf._crf_cpu cannot be loaded ({e}); install pyseg with "
            "`pip install .` or build it in place (see README.md)") from e
    return _CPU


def _cuda_status() -> tuple[bool, bool, str]:
    """(compiled, usable, reason)."""
    try:
        importlib.import_module("pyseg.crf._crf_cuda")
    except ImportError as e:
        return False, False, f"pyseg.crf._crf_cuda is not built or cannot load ({e})"
    try:
        import torch
    except ImportError:
        return True, False, "the CUDA backend takes torch CUDA tensors and torch is not installed"
    try:
        ok = bool(torch.cuda.is_available())
    except Exception as e:  # a broken driver install raises here
        return True, False, f"torch.cuda.is_available() failed: {e}"
    if not ok:
        return True, False, "no CUDA GPU visible to torch (torch.cuda.is_available() is False)"
    return True, True, f"{torch.cuda.device_count()} CUDA device(s)"


def backends() -> dict[str, dict[str, Any]]:
    """{"cpu": {...}, "cuda": {...}}, each {"compiled": bool, "usable": bool, "reason": str}."""
    try:
        cpu = load_cpu()
        cpu_info = {"compiled": True, "usable": True,
                    "reason": f"{cpu.get_num_threads()} thread(s); {cpu.isa()} kernels "
                              "(SSE2 for label counts that AVX2 would pad more)"}
    except ImportError as e:
        cpu_info = {"compiled": False, "usable": False, "reason": str(e)}
    compiled, usable, reason = _cuda_status()
    return {"cpu": cpu_info, "cuda": {"compiled": compiled, "usable": usable, "reason": reason}}


def cuda_usable() -> bool:
    return _cuda_status()[1]


def require_cuda():
    """The CUDA entry point ``pyseg.crf.cuda_backend.dense_crf_cuda``, or RuntimeError saying why not."""
    compiled, usable, reason = _cuda_status()
    if not compiled:
        avail = [name for name, info in backends().items() if info["usable"]]
        raise RuntimeError(f"pyseg was not compiled with CUDA support; available: {', '.join(avail) or 'none'} "
                           f"({reason}; rebuild with nvcc on PATH and PYSEG_CUDA=ON)")
    if not usable:
        raise RuntimeError(f"the CUDA backend is compiled but not usable here: {reason}")
    return importlib.import_module("pyseg.crf.cuda_backend").dense_crf_cuda


def torch_module():
    """torch if it is already imported (tensors can only come from an imported torch), else None."""
    return sys.modules.get("torch")
