"""The CRF layer's filters on the GPU: both pairwise terms' normalised lattice filters of a batch of images,
forward and adjoint, on CUDA tensors (``_crf_cuda.LatticeOp``, csrc/cuda/lattice_op.cuh).

Rows are pixel-major, (B, N, c) float32: the kernels keep a pixel's labels together (a splat gathers one row
per lattice entry, a slice writes one row per pixel). Memory comes from torch's caching allocator on the
current stream: the lattice is built in two steps with one read-back of its vertex count between them, so
that the kept buffers are sized from the real lattice; the build's work buffers go back to the allocator
right after. Deterministic: the same kernels as ``dense_crf_cuda`` (sums in a fixed order, no float atomics).
"""

from __future__ import annotations

import torch

from pyseg.crf.cuda_backend import load_module
from pyseg.crf.params import CRFParams

TERMS = 2  # Gaussian, bilateral


def _bytes(n: int, device) -> torch.Tensor:
    return torch.empty(max(int(n), 1), dtype=torch.uint8, device=device)


class CudaLatticeFilters:
    """The Gaussian and bilateral lattice filters of (B, H, W, 3) uint8 CUDA images, built once and applied
    to (B, H * W, c) float32 CUDA rows by :meth:`apply` (both terms) and :meth:`adjoint`."""

    def __init__(self, images: torch.Tensor, params: CRFParams):
        if not (isinstance(images, torch.Tensor) and images.is_cuda and images.dtype == torch.uint8
                and images.dim() == 4 and images.shape[-1] == 3):
            got = ((tuple(images.shape), str(images.dtype), str(images.device)) if isinstance(images, torch.Tensor)
                   else type(images).__name__)
            raise ValueError(f"images must be a (B, H, W, 3) uint8 CUDA tensor, got {got}")
        b, h, w, _ = (int(v) for v in images.shape)
        self.shape, self.device = (b, h * w), images.device
        index = images.device.index if images.device.index is not None else torch.cuda.current_device()
        images = images.contiguous()
        self._op = load_module().LatticeOp(b, h, w, float(params.gaussian_sxy), float(params.bilateral_sxy),
                                           float(params.bilateral_srgb), index)
        with torch.cuda.device(index):
            stream = torch.cuda.current_stream().cuda_stream
            work, scratch, self._fixed = (_bytes(n, self.device) for n in (self._op.work_bytes,
                                                                           self._op.scratch_bytes,
                                                                           self._op.fixed_bytes))
            self._op.build_vertices(images.data_ptr(), work.data_ptr(), scratch.data_ptr(), self._fixed.data_ptr(),
                                    stream)
            del work  # back to the allocator before the vertex buffers are taken (stream-ordered reuse)
            self._vertex = _bytes(self._op.vertex_bytes, self.device)
            tmp = _bytes(self._op.build_tmp_bytes, self.device)
            self._op.build_finish(self._vertex.data_ptr(), tmp.data_ptr(), stream)
        # scratch and tmp return to the allocator here: later work on this stream is queued after the build
        self.vertices = (int(self._op.gaussian_vertices), int(self._op.vertices - self._op.gaussian_vertices))

    @property
    def kept_bytes(self) -> int:
        """Device bytes the built lattices keep (for every apply, until this object goes)."""
        return self._fixed.numel() + self._vertex.numel()

    def _check(self, x, shape: tuple, name: str) -> torch.Tensor:
        """x, contiguous, after checking it is float32 on this device with this shape."""
        if not isinstance(x, torch.Tensor) or x.device != self.device or x.dtype != torch.float32:
            got = (str(x.dtype), str(x.device)) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a float32 tensor on {self.device}, got {got}")
        if tuple(x.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")
        return x.contiguous()

    def _run(self, in0, in1, ld_in, out0, out1, ld_out, c: int, adjoint: bool) -> None:
        with torch.cuda.device(self.device):
            tmp = _bytes(self._op.apply_bytes(c, in0 != in1), self.device)
            self._op.apply(in0, in1, ld_in, out0, out1, ld_out, c, adjoint, tmp.data_ptr(), tmp.numel(),
                           torch.cuda.current_stream().cuda_stream)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, c) -> (B, N, 2, c): [..., 0, :] the Gaussian filter of x, [..., 1, :] the bilateral one."""
        c = int(x.shape[-1]) if isinstance(x, torch.Tensor) and x.dim() else 0
        x = self._check(x, (*self.shape, c), "values")
        out = torch.empty(*self.shape, TERMS, c, dtype=torch.float32, device=self.device)
        self._run(x.data_ptr(), x.data_ptr(), c, out.data_ptr(), out.data_ptr() + 4 * c, TERMS * c, c, False)
        return out

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`apply`: g (B, N, 2, c) -> (B, N, c), the sum of each term's adjoint."""
        c = int(g.shape[-1]) if isinstance(g, torch.Tensor) and g.dim() else 0
        g = self._check(g, (*self.shape, TERMS, c), "gradient")
        out = torch.empty(*self.shape, c, dtype=torch.float32, device=self.device)
        self._run(g.data_ptr(), g.data_ptr() + 4 * c, TERMS * c, out.data_ptr(), out.data_ptr(), c, c, True)
        return out
