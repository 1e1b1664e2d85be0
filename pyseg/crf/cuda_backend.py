"""CUDA backend of the dense CRF: torch CUDA tensors in, a torch CUDA tensor out, no host round trip.

``pyseg.crf.dense_crf(..., device="cuda")`` validates its inputs and calls :func:`dense_crf_cuda`. The
compiled part is the ``pyseg.crf._crf_cuda`` module (built when nvcc is found, see ``PYSEG_CUDA``); it
takes device pointers, so it never links libtorch. All work is queued on ``torch.cuda.current_stream()``
of the inputs' device; scratch memory comes from torch's caching allocator (one buffer per call).

The whole batch runs in one sequence of launches (about 30 to build both lattices of every image, then 9
per iteration), captured once into a CUDA graph per (shapes, parameters, workspace) and replayed with one
launch; new input or output tensors update the cached graph in place. ``PYSEG_CUDA_GRAPHS=0`` launches
kernel by kernel instead, and a call made while the current stream is being captured (``torch.cuda.graph``)
goes into the caller's graph. Results are deterministic: the splat is a gather in a fixed order (no float
atomics), so the same inputs give bitwise-identical outputs run to run, whatever ``deterministic`` says.
"""

from __future__ import annotations

import logging
from typing import Any

from pyseg.crf.params import CRFParams, resolve_params

log = logging.getLogger(__name__)

_MODULE: Any = None
_IMPORT_ERROR: str | None = None


def load_module():
    """The compiled ``_crf_cuda`` module; raises RuntimeError saying why it is unavailable."""
    global _MODULE, _IMPORT_ERROR
    if _MODULE is not None:
        return _MODULE
    if _IMPORT_ERROR is None:
        try:
            from pyseg.crf import _crf_cuda  # type: ignore[attr-defined]
        except ImportError as e:
            _IMPORT_ERROR = (
                f"the CUDA CRF module pyseg.crf._crf_cuda is not built or cannot load ({e}); rebuild with "
                "nvcc on PATH: PYSEG_CUDA=ON pip install --no-build-isolation .")
        else:
            _MODULE = _crf_cuda
            return _MODULE
    raise RuntimeError(_IMPORT_ERROR)


def status() -> tuple[bool, str]:
    """(usable, reason): whether the CUDA backend can run here, and why not when it cannot."""
    try:
        load_module()
    except RuntimeError as e:
        return False, str(e)
    try:
        import torch
    except ImportError:
        return False, "the CUDA CRF takes torch CUDA tensors, and torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
    return True, f"{torch.cuda.device_count()} CUDA device(s); module built"


def _check_tensor(torch, x, name: str, dtype, ndims: tuple[int, ...]):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch tensor on a CUDA device, got {type(x).__name__}")
    if not x.is_cuda:
        raise ValueError(f"{name} must be a CUDA tensor for the CUDA CRF, got a tensor on {x.device}; "
                         f"move it with .cuda() or use device='cpu'")
    if x.dtype != dtype:
        raise TypeError(f"{name} must be {dtype}, got {x.dtype}")
    if x.dim() not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} dimensions, got shape {tuple(x.shape)}")


def check_probability_values(probs, sum_tol: float = 1e-3) -> None:
    """ValueError unless probs (B, L, H, W) are finite, in [0, 1] and sum to 1 (within sum_tol) per pixel.

    One reduction on the GPU and one host synchronisation (a few tensor-sized passes): the CUDA CRF does
    not run it unless asked (``check_values=True``).
    """
    import torch

    finite = torch.isfinite(probs).all()
    in_range = ((probs >= 0) & (probs <= 1)).all()
    sums = probs.sum(dim=1, dtype=torch.float32)
    normalised = ((sums - 1).abs() <= sum_tol).all()
    flags = torch.stack([finite, in_range, normalised]).cpu().tolist()
    if not flags[0]:
        raise ValueError("probs contain NaN or Inf")
    if not flags[1]:
        raise ValueError(f"probs must be in [0, 1], got values in [{probs.min().item():.4g}, "
                         f"{probs.max().item():.4g}]")
    if not flags[2]:
        worst = (sums - 1).abs().max().item()
        raise ValueError(f"probs must sum to 1 over the label axis (within {sum_tol}), worst pixel is off by "
                         f"{worst:.4g}")


def dense_crf_cuda(probs, image, params: CRFParams | None = None, iterations: int | None = None,
                   deterministic: bool = True, check_values: bool = False):
    """Mean-field dense CRF of a batch on the GPU.

    probs: torch float32 CUDA tensor (B, L, H, W) (or (L, H, W)) of probabilities; image: torch uint8 CUDA
    tensor (B, H, W, 3) (or (H, W, 3)) RGB, on the same device. Returns a new torch float32 tensor of the
    probs' shape on that device: Q after ``iterations`` (default ``params.iterations``) mean-field steps
    with a Gaussian and a bilateral Potts kernel, both symmetrically normalised (as pydensecrf). Runs on the
    current CUDA stream and returns without waiting for the GPU. Values are not inspected here (that would
    need a host synchronisation) unless ``check_values`` is set.
    ``check_values=True`` runs :func:`check_probability_values` first (one host synchronisation).
    ``deterministic`` is accepted for API symmetry: this backend is always bitwise reproducible.
    """
    try:
        import torch
    except ImportError:
        raise RuntimeError("the CUDA CRF takes torch CUDA tensors, and torch is not installed") from None
    params, iterations = resolve_params(params, iterations)
    _check_tensor(torch, probs, "probs", torch.float32, (3, 4))
    _check_tensor(torch, image, "image", torch.uint8, (3, 4))
    if probs.device != image.device:
        raise ValueError(f"probs and image must be on the same device, got {probs.device} and {image.device}")
    single = probs.dim() == 3
    if image.dim() != probs.dim():
        raise ValueError(f"probs {tuple(probs.shape)} and image {tuple(image.shape)}: give both batched "
                         "((B, L, H, W) and (B, H, W, 3)) or both single ((L, H, W) and (H, W, 3))")
    p4 = probs.unsqueeze(0) if single else probs
    i4 = image.unsqueeze(0) if single else image
    b, n_labels, h, w = (int(v) for v in p4.shape)
    if tuple(i4.shape) != (b, h, w, 3):
        raise ValueError(f"image must be ({b}, {h}, {w}, 3) to match probs {tuple(p4.shape)}, "
                         f"got {tuple(i4.shape)}")
    if b < 1 or n_labels < 1 or h < 1 or w < 1:
        raise ValueError(f"probs must be non-empty with at least 1 label, got shape {tuple(p4.shape)}")
    mod = load_module()
    if check_values:
        check_probability_values(p4)
    p4 = p4.contiguous()
    i4 = i4.contiguous()
    device = p4.device
    index = device.index if device.index is not None else torch.cuda.current_device()
    with torch.cuda.device(index):
        stream = torch.cuda.current_stream(index)
        out = torch.empty((b, n_labels, h, w), dtype=torch.float32, device=device)
        nbytes = int(mod.workspace_bytes(b, n_labels, h, w, index))
        workspace = torch.empty(nbytes, dtype=torch.uint8, device=device)
        mod.dense_crf(p4.data_ptr(), i4.data_ptr(), out.data_ptr(), workspace.data_ptr(), nbytes, b, n_labels, h,
                      w, float(params.gaussian_sxy), float(params.gaussian_compat), float(params.bilateral_sxy),
                      float(params.bilateral_srgb), float(params.bilateral_compat), int(iterations),
                      int(stream.cuda_stream), int(index))
        # The inputs and the workspace must outlive the queued kernels: tell the caching allocator.
        for t in (p4, i4, workspace):
            t.record_stream(stream)
    return out[0] if single else out
