"""The dense CRF as a differentiable layer (CRF-as-RNN, Zheng et al. 2015): mean-field iterations unrolled,
with a learnable label compatibility per pairwise term and learnable term weights.

``CRFLayer(num_classes, params, iterations, learn)`` refines (B, L, H, W) logits given the raw RGB images and
returns the last iteration's logits, so a cross-entropy loss applies directly; ``crf_layer(...)`` is the
functional form. This module imports torch (``import pyseg.crf`` does not import it).

One iteration, for pairwise terms k (Gaussian over position, bilateral over position and colour):

    Q = softmax(E)            (E = the input logits before the first iteration)
    E = logits - sum_k w_k C_k F_k(Q)

with ``F_k`` the symmetric-normalised lattice filter of term k (``docs/crf.md``), ``C_k`` an (L, L)
compatibility in energy form (initialised to the Potts matrix -I, so that ``w_k C_k`` is pydensecrf's
``compat=w_k``) and ``w_k`` initialised to the preset's weight. With those initial values and
``logits = log(p)``, ``softmax`` of the output equals ``pyseg.crf.dense_crf(p, image, params)``.

Gradients: the filter is a fixed linear map per image (the lattice depends on the image only), so its
backward is its adjoint, the same splat, blur with the lattice axes in reverse order, and slice
(``_crf_cpu.LatticeFilter.apply(adjoint=True)``); softmax and the compatibility products are torch
operations. Each image's lattices are built once per forward and reused by every iteration and by the
backward. Autograd keeps, per iteration, Q and each term's filtered Q: (1 + 2 * terms) tensors of
the logits' size. The sigmas are fixed (the lattice is not differentiable in them).

Backends (chosen in one place, ``_uses_cuda``): CPU tensors run image by image through
``_crf_cpu.LatticeFilter``; CUDA tensors, where the CUDA backend is usable, run the whole batch on the device
through ``pyseg.crf.cuda_layer.CudaLatticeFilters`` (both terms' filters of every image in one call, rows
pixel-major: (B, N, L)), with no host round trip but one read-back of the lattice's size per forward. There
autograd keeps, per iteration, Q alone (one float32 tensor of the logits' size; the backward filters Q again,
one more filter per iteration, rather than keep both terms' filtered Q) and the lattices
(``CudaLatticeFilters.kept_bytes``). Without the CUDA backend, CUDA tensors are filtered by the CPU
backend (copied to the host and back, with a one-time warning).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import torch

from pyseg.crf.backends import load_cpu
from pyseg.crf.densecrf import NORMALIZE_SYMMETRIC
from pyseg.crf.params import CRFParams

log = logging.getLogger(__name__)

TERMS = ("gaussian", "bilateral")
LEARNABLE = ("compat", "weights")
_warned_cuda = False
_said: set = set()  # the precision notes logged so far (_say_precision)


class _Filter(torch.autograd.Function):
    """(N, c) float32 or float64 -> one term's normalised lattice filter of it; backward: the adjoint."""

    @staticmethod
    def forward(ctx, x, op, threads):
        ctx.op, ctx.threads = op, threads
        out = op.apply(x.detach().contiguous().numpy(), adjoint=False, threads=threads)
        return torch.from_numpy(out)

    @staticmethod
    def backward(ctx, grad):
        g = ctx.op.apply(grad.detach().contiguous().numpy(), adjoint=True, threads=ctx.threads)
        return torch.from_numpy(g), None, None


class _CudaMessage(torch.autograd.Function):
    """q (B, N, L) float32 CUDA, m (K L, L) -> [F_0(q) | F_1(q)] m: both terms' filtered q times their
    weighted compatibilities. Saves q alone (the softmax before it keeps q anyway) and filters it again in
    the backward, whose gradient for q is the filters' adjoint."""

    @staticmethod
    def forward(ctx, q, m, filters):
        ctx.filters = filters
        ctx.save_for_backward(q, m)
        return filters.apply(q).reshape(q.shape[0], q.shape[1], -1) @ m

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, m = ctx.saved_tensors
        b, n, l = q.shape
        g = grad.reshape(b * n, l)
        d_m = ctx.filters.apply(q).reshape(b * n, -1).t() @ g if ctx.needs_input_grad[1] else None
        d_q = ctx.filters.adjoint((g @ m.t()).reshape(b, n, len(TERMS), l)) if ctx.needs_input_grad[0] else None
        return d_q, d_m, None


def image_filters(image: np.ndarray, params: CRFParams, threads: int = 0) -> list:
    """The lattice filters of one (H, W, 3) uint8 RGB image: [Gaussian, bilateral], a term whose weight is 0
    included (its weight may be learned away from 0)."""
    cpu = load_cpu()
    h, w = image.shape[:2]
    return [cpu.LatticeFilter.gaussian(w, h, float(params.gaussian_sxy), NORMALIZE_SYMMETRIC, threads),
            cpu.LatticeFilter.bilateral(image, float(params.bilateral_sxy), float(params.bilateral_srgb),
                                        NORMALIZE_SYMMETRIC, threads)]


def meanfield(logits: torch.Tensor, filters: Sequence[Sequence], compat: torch.Tensor, weights: torch.Tensor,
              iterations: int, threads: int = 0) -> torch.Tensor:
    """Unrolled mean field on CPU float32 or float64 tensors (all of one dtype).

    logits (B, L, N); filters[b][k] the LatticeFilter of term k of image b (each over N points);
    compat (K, L, L); weights (K,). Returns the last iteration's logits (B, L, N) (``logits`` itself when
    ``iterations`` is 0)."""
    # image by image: softmax over a batch rounds differently from softmax over one image
    out = []
    for b in range(logits.shape[0]):
        e = logits[b]
        for _ in range(iterations):
            q = torch.softmax(e, dim=0)
            e = logits[b] - sum(weights[k] * (compat[k] @ _Filter.apply(q.t(), filters[b][k], threads).t())
                                for k in range(compat.shape[0]))
        out.append(e)
    return torch.stack(out)


def meanfield_cuda(logits: torch.Tensor, filters, compat: torch.Tensor, weights: torch.Tensor,
                   iterations: int) -> torch.Tensor:
    """Unrolled mean field on CUDA float32 tensors, the batch at once: logits (B, L, N); filters the
    ``CudaLatticeFilters`` of the batch; compat (K, L, L); weights (K,). Returns (B, L, N) as ``meanfield``."""
    x = logits.transpose(1, 2).contiguous()  # (B, N, L): the filters' pixel-major rows
    # sum_k w_k F_k C_k^T as one product: [F_0 | F_1] (B, N, K L) times the stacked (w_k C_k)^T (K L, L)
    m = (weights[:, None, None] * compat).transpose(1, 2).reshape(-1, logits.shape[1])
    e = x
    for _ in range(iterations):
        e = x - _CudaMessage.apply(torch.softmax(e, dim=-1), m, filters)
    return e.transpose(1, 2)


def _uses_cuda(logits: torch.Tensor) -> bool:
    """Whether the layer runs on the CUDA backend: CUDA logits and a usable backend (else, for CUDA logits,
    the CPU backend with a one-time warning)."""
    global _warned_cuda
    if logits.device.type != "cuda":
        return False
    from pyseg.crf import cuda_backend

    usable, why = cuda_backend.status()
    if not usable and not _warned_cuda:
        log.warning("CRF layer: CUDA tensors are filtered by the CPU backend (%s)", why)
        _warned_cuda = True
    return usable


def _say_precision(dtype: torch.dtype, cuda: bool) -> None:
    """Logs once per process and case when the layer computes in another precision than the logits' (float32
    for half-precision logits, and for float64 ones on CUDA, whose kernels are float32)."""
    if dtype in (torch.float16, torch.bfloat16) and "half" not in _said:
        log.info("CRF layer: %s logits are refined in float32 (the result is cast back)", dtype)
        _said.add("half")
    elif cuda and dtype == torch.float64 and "float64" not in _said:
        log.warning("CRF layer: float64 logits on CUDA are refined in float32 (CPU tensors run in float64)")
        _said.add("float64")


def _check_inputs(logits: torch.Tensor, image) -> torch.Tensor:
    """image as (B, H, W, 3) uint8 on the logits' device, after checking logits and image agree."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        raise ValueError(f"logits must be a (B, L, H, W) tensor, got "
                         f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
    if not logits.dtype.is_floating_point:
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    b, _, h, w = logits.shape
    if not isinstance(image, torch.Tensor):
        image = torch.as_tensor(np.asarray(image), device=logits.device)
    if image.device != logits.device:
        raise ValueError(f"image must be on the logits' device {logits.device}, got a tensor on {image.device}")
    if image.dim() != 4:
        raise ValueError(f"image must be (B, 3, H, W) or (B, H, W, 3), got shape {tuple(image.shape)}")
    if image.shape[1] == 3 and image.shape[-1] != 3:
        image = image.permute(0, 2, 3, 1)
    if tuple(image.shape) != (b, h, w, 3):
        raise ValueError(f"image must match the logits (B, H, W) = {(b, h, w)} with 3 channels, got shape "
                         f"{tuple(image.shape)}")
    if image.dtype != torch.uint8:
        if not image.dtype.is_floating_point:
            raise TypeError(f"image must be uint8 or float RGB in 0..255, got {image.dtype}")
        lo, hi = (float(image.min()), float(image.max())) if bool(torch.isfinite(image).all()) else (-1.0, 0.0)
        if lo < -1e-3 or hi > 255.5 or hi <= 1.0:  # a 0..1 or normalised image would pass silently as near-black
            raise ValueError(f"a float image must hold raw RGB values in 0..255 (not the normalised network "
                             f"input), got values in [{lo:.3g}, {hi:.3g}]")
        image = image.round().clamp(0, 255).to(torch.uint8)
    if not bool(torch.isfinite(logits.detach()).all()):
        raise ValueError("logits contain NaN or infinity")
    return image.detach().contiguous()


def crf_layer(logits: torch.Tensor, image, compat: torch.Tensor, weights: torch.Tensor,
              params: CRFParams | None = None, iterations: int | None = None,
              num_threads: int | None = None) -> torch.Tensor:
    """Functional CRF layer: (B, L, H, W) logits, (B, 3, H, W) or (B, H, W, 3) uint8 (or float 0..255) RGB
    images, compat (2, L, L), weights (2,) [Gaussian, bilateral] -> refined (B, L, H, W) logits, on the
    logits' device and dtype. Differentiable in logits, compat and weights.

    Precision: float32, whatever the logits' dtype (float16/bfloat16 logits and autocast included), except
    float64 logits on the CPU, which run in float64 throughout (the same lattice; for gradient checks and
    for many iterations, where float32 rounding grows: ``benchmarks/NOTES_crf_layer.md``)."""
    params = params if params is not None else CRFParams.preset("krahenbuhl")
    iterations = params.iterations if iterations is None else iterations
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
    threads = 0 if num_threads is None else int(num_threads)
    img = _check_inputs(logits, image)
    b, l, h, w = logits.shape
    if tuple(compat.shape) != (len(TERMS), l, l) or tuple(weights.shape) != (len(TERMS),):
        raise ValueError(f"compat must be ({len(TERMS)}, {l}, {l}) and weights ({len(TERMS)},), got "
                         f"{tuple(compat.shape)} and {tuple(weights.shape)}")
    if not (bool(torch.isfinite(compat.detach()).all()) and bool(torch.isfinite(weights.detach()).all())):
        raise ValueError("the CRF layer's compatibility or weights are not finite (learning rate too high?)")
    if iterations == 0:
        return logits
    device, dtype = logits.device, logits.dtype
    cuda = _uses_cuda(logits)
    _say_precision(dtype, cuda)
    if cuda:
        for name, t in (("compat", compat), ("weights", weights)):
            if t.device != device:
                raise ValueError(f"{name} must be on the logits' device {device}, got {t.device}")
        from pyseg.crf.cuda_layer import CudaLatticeFilters

        with torch.autocast("cuda", enabled=False):  # the layer runs in float32 under autocast
            out = meanfield_cuda(logits.float().reshape(b, l, h * w), CudaLatticeFilters(img, params),
                                 compat.float(), weights.float(), iterations)
        return out.reshape(b, l, h, w).to(dtype)
    images = img.cpu().numpy()
    filters = [image_filters(images[i], params, threads) for i in range(b)]
    work = torch.float64 if dtype == torch.float64 else torch.float32
    with torch.autocast("cpu", enabled=False):  # CPU autocast would run the compatibility products in bfloat16
        x = logits.to("cpu", work).reshape(b, l, h * w)
        out = meanfield(x, filters, compat.to("cpu", work), weights.to("cpu", work), iterations, threads)
    return out.reshape(b, l, h, w).to(device, dtype)


class CRFLayer(torch.nn.Module):
    """Dense-CRF mean field as a layer: ``forward(logits, image)`` -> refined logits of the same shape.

    Args:
        num_classes: L.
        params: sigmas (fixed) and initial weights; None -> the ``krahenbuhl`` preset.
        iterations: mean-field iterations (default: 5).
        learn: which of ``("compat", "weights")`` are trainable parameters (the others are buffers).
        num_threads: CPU threads for the filters (None: ``pyseg.crf.set_num_threads``' default).
    """

    def __init__(self, num_classes: int, params: CRFParams | None = None, iterations: int = 5,
                 learn: Sequence[str] = LEARNABLE, num_threads: int | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise ValueError(f"iterations must be an integer >= 0, got {iterations!r}")
        learn = tuple(learn)
        unknown = [x for x in learn if x not in LEARNABLE]
        if unknown:
            raise ValueError(f"learn takes some of {list(LEARNABLE)}, got {unknown}")
        self.num_classes, self.iterations, self.learn = num_classes, iterations, learn
        self.params = params if params is not None else CRFParams.preset("krahenbuhl")
        self.num_threads = num_threads
        compat = -torch.eye(num_classes).repeat(len(TERMS), 1, 1)
        weights = torch.tensor([self.params.gaussian_compat, self.params.bilateral_compat], dtype=torch.float32)
        for name, value in (("compat", compat), ("weights", weights)):
            if name in learn:
                self.register_parameter(name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def forward(self, logits: torch.Tensor, image) -> torch.Tensor:
        if isinstance(logits, torch.Tensor) and logits.dim() == 4 and logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have {logits.shape[1]} classes, the layer was built for {self.num_classes}")
        return crf_layer(logits, image, self.compat, self.weights, self.params, self.iterations, self.num_threads)

    def summary(self) -> dict:
        """The learned values in plain numbers: per term its weight, the compatibility's diagonal mean and
        off-diagonal mean (a Potts matrix scaled by the weight has diagonal -w and off-diagonal 0)."""
        out = {}
        eye = torch.eye(self.num_classes, dtype=torch.bool)
        for k, term in enumerate(TERMS):
            c = (self.compat[k].detach() * self.weights[k].detach()).cpu()
            off = c[~eye]
            out[term] = {"weight": float(self.weights[k].detach()), "diagonal_mean": float(c.diagonal().mean()),
                         "off_diagonal_mean": float(off.mean()) if off.numel() else math.nan}
        return out

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, iterations={self.iterations}, learn={list(self.learn)}"
