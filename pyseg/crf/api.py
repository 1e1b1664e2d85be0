"""``dense_crf``: the pyseg way to run the dense CRF on one image or a batch (numpy or torch, CPU or CUDA)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from pyseg.crf.backends import load_cpu, require_cuda, torch_module, cuda_usable
from pyseg.crf.checks import check_int
from pyseg.crf.params import CRFParams, resolve_params

_DEVICES = ("auto", "cpu", "cuda")


def set_num_threads(n: int | None) -> None:
    """Default number of CPU threads of the CRF (None or 0: all cores). ``dense_crf(num_threads=...)`` wins."""
    if n is None:
        n = 0
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
        raise ValueError(f"set_num_threads expects an integer >= 0 (0 = all cores), got {n!r}")
    load_cpu().set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads the CPU backend uses when ``num_threads`` is not given."""
    return int(load_cpu().get_num_threads())


def release_memory() -> int:
    """Return the CPU backend's cached work buffers and Gaussian lattices to the OS; returns the bytes released.

    Large buffers (lattices, Q) are kept after a call for the next one (up to PYSEG_CRF_CACHE_MB, default
    1024 MiB), because fresh memory costs a page fault per 4 KiB page; so are the last Gaussian lattices
    (see :func:`set_lattice_cache`).
    """
    return int(load_cpu().release_memory())


def set_lattice_cache(entries: int, max_mb: int = 256) -> None:
    """Keep up to ``entries`` Gaussian (position-only) lattices for reuse (default 4; 0 turns reuse off), of at
    most ``max_mb`` MiB in all (default 256: a lattice bigger than that, e.g. a 4096x4096 image's, is not kept).

    That lattice depends on the image size, ``gaussian_sxy`` and the normalisation alone, not on the pixels, so
    a call on another image of a size seen before skips its build (about a tenth of a 512x512 call); results
    are bitwise the same either way. A kept lattice holds about 37 bytes per pixel at ``gaussian_sxy`` 3 and 74
    at 1 (9.6 and 19 MB at 512x512).
    """
    entries = check_int(entries, "entries", 0)
    max_mb = check_int(max_mb, "max_mb", 0)
    load_cpu().set_lattice_cache_limits(entries, max_mb << 20)


def _is_tensor(x) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


def _kind(x, name: str) -> str:
    if isinstance(x, np.ndarray):
        return "numpy"
    if _is_tensor(x):
        return "torch"
    raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__} ({x!r:.60})")


def _shape(shape) -> str:
    return str(tuple(int(s) for s in shape))


def _to_numpy(x, name: str, want: np.dtype) -> np.ndarray:
    """C-contiguous numpy array of dtype ``want`` (floats are cast to float32; others are an error)."""
    if _is_tensor(x):
        tdt = str(x.dtype).replace("torch.", "")
        if np.dtype(want) == np.float32 and tdt not in ("float32", "float64", "float16", "bfloat16"):
            raise TypeError(f"{name} must be float32 probabilities, got a {tdt} tensor")
        if np.dtype(want) == np.uint8 and tdt != "uint8":
            raise TypeError(f"{name} must be a uint8 RGB image, got a {tdt} tensor")
        x = x.detach()
        if x.dtype != getattr(torch_module(), "float32") and np.dtype(want) == np.float32:
            x = x.float()
        x = x.cpu().numpy()
    a = np.asarray(x)
    if a.dtype != want:
        if np.dtype(want) == np.float32 and a.dtype.kind == "f":
            a = a.astype(np.float32)
        elif np.dtype(want) == np.float32:
            raise TypeError(f"{name} must be float32 probabilities, got dtype {a.dtype.name}")
        else:
            raise TypeError(f"{name} must be a uint8 RGB image, got dtype {a.dtype.name}")
    return np.ascontiguousarray(a)


def _check_shapes(probs_shape, image_shape) -> None:
    if len(probs_shape) not in (3, 4):
        raise ValueError(f"probs must have shape (L, H, W) or (B, L, H, W), got shape {_shape(probs_shape)}")
    if any(s == 0 for s in probs_shape):
        raise ValueError("probs must not be empty (at least 1 image, 1 label and 1 pixel), got shape "
                         f"{_shape(probs_shape)}")
    if len(probs_shape) == 3:
        _, h, w = probs_shape
        want, what = (h, w, 3), "(H, W, 3)"
    else:
        b, _, h, w = probs_shape
        want, what = (b, h, w, 3), "(B, H, W, 3)"
    if tuple(image_shape) != want:
        raise ValueError(f"image must have shape {what} = {_shape(want)} to match probs {_shape(probs_shape)}, "
                         f"got {_shape(image_shape)}")


def dense_crf(probs: Any, image: Any, params: CRFParams | None = None, iterations: int | None = None,
              device: str = "auto", num_threads: int | None = None, deterministic: bool = False):
    """Dense-CRF mean-field inference (Kraehenbuehl & Koltun) on one image or a batch.

    Args:
        probs: (L, H, W) or (B, L, H, W) float32 class probabilities (each pixel's L values in [0, 1], summing
            to 1 within 1e-3), numpy array or torch tensor. Other float dtypes are cast to float32.
        image: (H, W, 3) or (B, H, W, 3) uint8 RGB image(s), raw 0..255 (not normalised), same kind.
        params: :class:`CRFParams`; None -> ``CRFParams.preset("krahenbuhl")``.
        iterations: mean-field iterations (>= 0); None -> ``params.iterations``.
        device: "cpu", "cuda", or "auto" (CUDA when the inputs are CUDA tensors and the CUDA backend is
            usable, else CPU).
        num_threads: CPU threads (>= 1); None -> ``set_num_threads`` / all cores. A batch is spread across
            threads image by image; a single image uses the threads inside its lattice and iterations.
        deterministic: passed to the CUDA backend. The CPU path is always deterministic: the same inputs
            give bitwise-identical outputs whatever the number of threads.

    Returns:
        Probabilities of the same shape as ``probs``, float32, as a numpy array for numpy input or a torch
        tensor (on the input's device) for tensor input.

    Same as pydensecrf's ``DenseCRF2D`` with ``unary_from_softmax(probs)`` (-log of probs clipped to
    [1e-5, 1]), ``addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)``,
    ``addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=image, compat=bilateral_compat)``
    (both NORMALIZE_SYMMETRIC; a kernel whose compat is 0 is left out) and ``inference(iterations)``.
    """
    params, iterations = resolve_params(params, iterations)
    if num_threads is not None:
        num_threads = check_int(num_threads, "num_threads", 1)
    dev = str(device) if not isinstance(device, str) else device  # torch.device -> "cuda:0"
    dev_type = dev.split(":", 1)[0]
    if dev_type not in _DEVICES:
        raise ValueError(f"device must be one of {_DEVICES}, got {device!r}")
    kind_p = _kind(probs, "probs")
    kind_i = _kind(image, "image")
    _check_shapes(tuple(probs.shape), tuple(image.shape))

    on_cuda = kind_p == "torch" and probs.is_cuda
    use_cuda = dev_type == "cuda" or (dev_type == "auto" and on_cuda and cuda_usable())
    if use_cuda:
        return _dense_crf_cuda(probs, image, params, iterations, bool(deterministic), dev, kind_p, kind_i)

    p = _to_numpy(probs, "probs", np.float32)
    im = _to_numpy(image, "image", np.uint8)
    single = p.ndim == 3
    if single:
        p, im = p[None], im[None]
    out = load_cpu().dense_crf(p, im, float(params.gaussian_sxy), float(params.gaussian_compat),
                               float(params.bilateral_sxy), float(params.bilateral_srgb),
                               float(params.bilateral_compat), iterations, num_threads or 0)
    if single:
        out = out[0]
    if kind_p == "torch":
        torch = torch_module()
        return torch.from_numpy(out).to(probs.device)
    return out


def _dense_crf_cuda(probs, image, params, iterations, deterministic, dev, kind_p, kind_i):
    fn = require_cuda()
    torch = torch_module()
    if torch is None:
        import torch  # noqa: F811  (numpy input with device="cuda")
    target = torch.device(dev if dev.startswith("cuda") else "cuda")
    if kind_p == "torch" and probs.is_cuda and dev == "cuda":
        target = probs.device
    tp = probs if kind_p == "torch" else torch.from_numpy(np.ascontiguousarray(probs))
    ti = image if kind_i == "torch" else torch.from_numpy(np.ascontiguousarray(image))
    if tp.dtype != torch.float32:
        if not tp.dtype.is_floating_point:
            raise TypeError(f"probs must be float32 probabilities, got {str(tp.dtype).replace('torch.', '')}")
        tp = tp.float()
    if ti.dtype != torch.uint8:
        raise TypeError(f"image must be a uint8 RGB image, got {str(ti.dtype).replace('torch.', '')}")
    tp = tp.to(target).contiguous()
    ti = ti.to(target).contiguous()
    single = tp.dim() == 3
    if single:
        tp, ti = tp.unsqueeze(0), ti.unsqueeze(0)
    out = fn(tp, ti, params, iterations, deterministic)
    if single:
        out = out[0]
    if kind_p == "numpy":
        return out.cpu().numpy()
    return out
