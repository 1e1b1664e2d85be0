"""The CRF layer's CUDA filter (csrc/cuda/lattice_op.cuh, pyseg.crf.cuda_layer) and the layer on CUDA tensors.

Without a GPU: the CUDA filter's code runs through the host emulation (the same functors in a loop, built with
g++ from csrc/cuda/host_emulation_filter_main.cpp) against the CPU backend's LatticeFilter, forward and
adjoint, and its adjoint identity. With a GPU (marker ``cuda``): the layer on CUDA tensors against the CPU
layer and the float64 oracle, with no host round trip.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import REPO, build_host_emulator

from pyseg.crf import CRFParams
from pyseg.crf.backends import load_cpu
from pyseg.crf.densecrf import NORMALIZE_SYMMETRIC

# The CUDA filter against the CPU one, relative to the largest output: the same lattice (vertex counts
# checked equal), float32 sums in another order (pieces of 32 entries summed as 4 sub-sums, against one
# running sum per chunk) and the normalisation's 1/sqrt in float instead of double. Measured up to 3.5e-7
# (benchmarks/NOTES_crf_layer.md); a blur in the wrong order is off by 1e-2 or more.
FILTER_RTOL = 3e-6
# Gradients against the float64 oracle: the target (tests/test_crf_layer.py holds the CPU layer to it).
GRAD_RTOL = 1e-4


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    exe = build_host_emulator(REPO / "csrc" / "cuda" / "host_emulation_filter_main.cpp",
                              tmp_path_factory.mktemp("emu_filter"))
    if exe is None:
        pytest.skip("no C++ compiler for the host emulation of the CUDA filter")
    return exe


def emulated_filter(exe: Path, images: np.ndarray, params: CRFParams, x0: np.ndarray, x1: np.ndarray | None,
                    adjoint: bool, vals_budget: int | None = None, summed: bool = False):
    """(out0, out1, counts): the emulated CUDA filter of (B, N, c) x0 (Gaussian) and x1 (bilateral; None: x0
    shared, as the layer's forward passes it); counts = (M, M0, pieces, work, scratch, fixed, vertex, build
    tmp, apply tmp bytes). vals_budget: bytes of vertex values per apply pass (default the op's); summed: one
    output, out0 = the sum of both terms' (out1 None), as the layer's adjoint asks."""
    b, h, w, _ = images.shape
    c = x0.shape[-1]
    d = exe.parent
    np.ascontiguousarray(images, np.uint8).tofile(d / "rgb.bin")
    np.ascontiguousarray(x0, np.float32).tofile(d / "in0.bin")
    in1 = d / "in0.bin"
    if x1 is not None:
        np.ascontiguousarray(x1, np.float32).tofile(d / "in1.bin")
        in1 = d / "in1.bin"
    args = [str(exe), str(b), str(h), str(w), str(c), repr(float(params.gaussian_sxy)),
            repr(float(params.bilateral_sxy)), repr(float(params.bilateral_srgb)), str(int(adjoint)),
            str(d / "rgb.bin"), str(d / "in0.bin"), str(in1), str(d / "out0.bin"),
            str(d / ("out0.bin" if summed else "out1.bin"))]
    args += [] if vals_budget is None else [str(vals_budget)]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode == 4:
        raise ValueError(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    outs = [np.fromfile(d / f"out{k}.bin", np.float32).reshape(b, h * w, c) for k in range(2)]
    if summed:
        outs[1] = None
    return outs[0], outs[1], tuple(int(v) for v in r.stdout.split())


def _images(kind: str, b: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:h, 0:w]
    out = []
    for i in range(b):  # smooth shading, a flat disc, mild noise
        img = np.stack([60 + 100 * xs / w, 80 + 60 * ys / h, 120 + 40 * i + 0 * xs], -1)
        img[(xs - w / 3) ** 2 + (ys - h / 2) ** 2 < (min(h, w) / 4) ** 2] = (200, 40, 30)
        out.append(np.clip(img + rng.normal(0, 4, img.shape), 0, 255))
    return np.stack(out).astype(np.uint8)


def cpu_filters(images: np.ndarray, params: CRFParams) -> list:
    """Each image's [Gaussian, bilateral] LatticeFilter of the CPU backend."""
    cpu = load_cpu()
    h, w = images.shape[1:3]
    return [[cpu.LatticeFilter.gaussian(w, h, float(params.gaussian_sxy), NORMALIZE_SYMMETRIC),
             cpu.LatticeFilter.bilateral(im, float(params.bilateral_sxy), float(params.bilateral_srgb),
                                         NORMALIZE_SYMMETRIC)] for im in images]


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


# ------------------------------------------------------------------------------- host emulation (no GPU)
@pytest.mark.parametrize("b,h,w,c,preset,kind", [
    (1, 9, 13, 2, "deeplab", "noise"),
    (2, 21, 27, 5, "deeplab", "natural"),
    (3, 16, 20, 11, "krahenbuhl", "natural"),
    (2, 12, 40, 8, "krahenbuhl", "noise"),
    (1, 33, 29, 21, "deeplab", "natural"),
    (1, 1, 17, 3, "deeplab", "natural"),
])
def test_emulated_filter_matches_cpu_filter(emulator, b, h, w, c, preset, kind):
    params = CRFParams.preset(preset)
    images = _images(kind, b, h, w, seed=c)
    rng = np.random.default_rng(c)
    x0, x1 = (rng.normal(size=(b, h * w, c)).astype(np.float32) for _ in range(2))
    ops = cpu_filters(images, params)
    fwd0, fwd1, counts = emulated_filter(emulator, images, params, x0, None, adjoint=False)
    adj0, adj1, _ = emulated_filter(emulator, images, params, x0, x1, adjoint=True)
    # one output for both terms' adjoints (the layer's backward): their sum, the same bits as adding them
    assert np.array_equal(emulated_filter(emulator, images, params, x0, x1, True, summed=True)[0], adj0 + adj1)
    # the same lattices: every image's vertices, Gaussian first
    assert counts[1] == sum(o[0].vertices for o in ops)
    assert counts[0] - counts[1] == sum(o[1].vertices for o in ops)
    for i, (g, bl) in enumerate(ops):
        for got, op, x, adjoint in ((fwd0, g, x0, False), (fwd1, bl, x0, False), (adj0, g, x0, True),
                                    (adj1, bl, x1, True)):
            want = op.apply(x[i], adjoint=adjoint)
            assert _rel(got[i], want) < FILTER_RTOL, (i, op.d, adjoint, _rel(got[i], want))


@pytest.mark.parametrize("preset", ["krahenbuhl", "deeplab"])
def test_emulated_adjoint_identity(emulator, preset):
    # <K x, y> = <x, K^T y> for both terms, in float64 over float32 results; the blurs in forward order
    # break it by 3e-5 or more of the sum of the terms' magnitudes (benchmarks/NOTES_crf_layer.md).
    params = CRFParams.preset(preset)
    images = _images("noise", 2, 14, 19, seed=1)
    rng = np.random.default_rng(2)
    x, y = (rng.normal(size=(2, 14 * 19, 4)).astype(np.float32) for _ in range(2))
    kx = emulated_filter(emulator, images, params, x, None, adjoint=False)[:2]
    kty = emulated_filter(emulator, images, params, y, y, adjoint=True)[:2]
    ky = emulated_filter(emulator, images, params, y, None, adjoint=False)[:2]
    for k in range(2):
        lhs = (kx[k].astype(np.float64) * y).sum()
        rhs = (x.astype(np.float64) * kty[k]).sum()
        assert abs(lhs - rhs) <= 1e-6 * np.abs(kx[k].astype(np.float64) * y).sum(), (k, lhs, rhs)
        assert _rel(kty[k], ky[k]) > 1e-3  # the filter is not symmetric: the test can tell the orders apart


def test_emulated_buffers_follow_the_real_lattice(emulator):
    # The kept and per-apply buffers are sized by the vertex and piece counts (read back), not by the
    # worst case of one vertex per entry: a flat image's lattice is far smaller than a noise image's.
    params = CRFParams.preset("deeplab")
    x = np.zeros((1, 24 * 32, 11), np.float32)
    flat = np.full((1, 24, 32, 3), 90, np.uint8)
    _, _, small = emulated_filter(emulator, flat, params, x, None, adjoint=False)
    _, _, big = emulated_filter(emulator, _images("noise", 1, 24, 32, 0), params, x, None, adjoint=False)
    assert small[3:6] == big[3:6]  # work, scratch and fixed: sized by the entries, the same for both
    assert big[0] > 3 * small[0]
    assert big[6] > 2 * small[6] and big[8] > 2 * small[8]  # vertex and apply tmp bytes follow M


@pytest.mark.parametrize("adjoint", [False, True])
def test_emulated_label_passes_give_the_same_bits(emulator, adjoint):
    # A budget too small for the vertex values of all 11 labels filters them in passes of 4 (1 float4 group):
    # less memory, the same bits; 2 inputs so that each lattice's pass reads its own.
    params = CRFParams.preset("deeplab")
    images = _images("natural", 2, 15, 18, 0)
    rng = np.random.default_rng(0)
    x0, x1 = (rng.normal(size=(2, 15 * 18, 11)).astype(np.float32) for _ in range(2))
    whole = emulated_filter(emulator, images, params, x0, x1, adjoint)
    passes = emulated_filter(emulator, images, params, x0, x1, adjoint, vals_budget=1)
    assert np.array_equal(whole[0], passes[0]) and np.array_equal(whole[1], passes[1])
    assert 3 * passes[2][8] < whole[2][8] + 3 * 256 * 4  # a third of the tmp, up to alignment


def test_emulated_filter_rejects_sigmas_too_small(emulator):
    x = np.zeros((1, 64, 2), np.float32)
    with pytest.raises(ValueError, match="too small"):
        emulated_filter(emulator, np.zeros((1, 8, 8, 3), np.uint8), CRFParams(1e-6, 3, 80, 13, 10, 1), x, None,
                        False)
    bad = SimpleNamespace(gaussian_sxy=3.0, bilateral_sxy=80.0, bilateral_srgb=0.0)  # CRFParams refuses it
    with pytest.raises(ValueError, match="bilateral_srgb must be finite and > 0, got 0"):
        emulated_filter(emulator, np.zeros((1, 8, 8, 3), np.uint8), bad, x, None, False)


class EmulatedFilters:
    """CudaLatticeFilters' interface on CPU tensors, run by the host emulation (each call rebuilds the same
    lattice): the layer's CUDA mean field (layer.meanfield_cuda) with the CUDA kernels, without a GPU."""

    def __init__(self, exe: Path, images: np.ndarray, params: CRFParams):
        self.exe, self.images, self.params = exe, images, params

    def apply(self, x):
        import torch

        out0, out1, _ = emulated_filter(self.exe, self.images, self.params, x.numpy(), None, adjoint=False)
        return torch.from_numpy(np.stack([out0, out1], 2))

    def adjoint(self, g):
        import torch

        g = g.numpy()
        out0, out1, _ = emulated_filter(self.exe, self.images, self.params, g[:, :, 0], g[:, :, 1], adjoint=True)
        return torch.from_numpy(out0 + out1)


@pytest.mark.parametrize("labels,iterations,kind,preset", [
    (2, 1, "natural", "krahenbuhl"), (11, 5, "natural", "deeplab"), (21, 3, "noise", "krahenbuhl")])
def test_emulated_layer_gradients_match_the_oracle(emulator, labels, iterations, kind, preset):
    torch = pytest.importorskip("torch")
    from pyseg.crf import layer as CL
    from pyseg.crf import layer_reference as LR

    params = CRFParams.preset(preset)
    images, logits, compat, weights = _layer_case(2, labels, 12, 14, kind)
    g = torch.from_numpy(np.random.default_rng(5).normal(size=tuple(logits.shape)))
    filters = EmulatedFilters(emulator, images, params)
    oracle_filters = [[LR.filter_matrix(LR.image_features(im, params.gaussian_sxy)),
                       LR.filter_matrix(LR.image_features(im, params.bilateral_sxy, params.bilateral_srgb))]
                      for im in images]
    fast = _grads(lambda x, c, w: CL.meanfield_cuda(x.float(), filters, c.float(), w.float(), iterations),
                  (logits, compat, weights), g)
    slow = _grads(lambda x, c, w: LR.meanfield(x, oracle_filters, c, w, iterations), (logits, compat, weights), g)
    for name, a, b in zip(("forward", "d logits", "d compat", "d weights"), fast, slow):
        assert _rel(a, b) < GRAD_RTOL, f"{name}: relative error {_rel(a, b):.2e}"


# ---------------------------------------------------------------------------------------------- GPU
def _layer_case(b, labels, h, w, kind, seed=0):
    import torch

    rng = np.random.default_rng(seed + 1)
    images = _images(kind, b, h, w, seed)
    logits = torch.from_numpy(rng.normal(0, 2, (b, labels, h * w)))
    compat = torch.from_numpy(-np.eye(labels)[None].repeat(2, 0) + rng.normal(0, 0.3, (2, labels, labels)))
    return images, logits, compat, torch.tensor([3.0, 5.0], dtype=torch.float64)


def _grads(fn, tensors, g):
    import torch

    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    (out * g.to(out.device, out.dtype)).sum().backward()
    return [t.detach().double().cpu().numpy() for t in [out] + [v.grad for v in leaves]]


@pytest.mark.cuda
def test_cuda_filters_match_cpu_filter():
    import torch

    from pyseg.crf.cuda_layer import CudaLatticeFilters

    params = CRFParams.preset("deeplab")
    images = _images("natural", 3, 40, 52, seed=0)
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(3, 40 * 52, 11)).astype(np.float32), rng.normal(size=(3, 40 * 52, 2, 11))
    f = CudaLatticeFilters(torch.from_numpy(images).cuda(), params)
    fwd = f.apply(torch.from_numpy(x).cuda()).cpu().numpy()
    adj = f.adjoint(torch.from_numpy(g.astype(np.float32)).cuda()).cpu().numpy()
    for i, ops in enumerate(cpu_filters(images, params)):
        for k, op in enumerate(ops):
            assert _rel(fwd[i, :, k], op.apply(x[i])) < FILTER_RTOL
        want = sum(op.apply(np.ascontiguousarray(g[i, :, k], np.float32), adjoint=True) for k, op in enumerate(ops))
        assert _rel(adj[i], want) < FILTER_RTOL
    assert f.vertices == (sum(o[0].vertices for o in cpu_filters(images, params)),
                          sum(o[1].vertices for o in cpu_filters(images, params)))


@pytest.mark.cuda
@pytest.mark.parametrize("labels,iterations,kind,preset", [
    (2, 1, "natural", "krahenbuhl"), (5, 5, "noise", "deeplab"), (11, 5, "natural", "deeplab"),
    (21, 3, "natural", "krahenbuhl"), (4, 10, "noise", "krahenbuhl")])
def test_cuda_layer_matches_cpu_layer_and_oracle(labels, iterations, kind, preset):
    import torch

    from pyseg.crf import layer as CL
    from pyseg.crf import layer_reference as LR

    params = CRFParams.preset(preset)
    images, logits, compat, weights = _layer_case(2, labels, 12, 14, kind)
    g = torch.from_numpy(np.random.default_rng(5).normal(size=(2, labels, 12, 14)))
    imt = torch.from_numpy(images)

    def layer_on(device):
        return lambda x, c, w: CL.crf_layer(x.float().reshape(2, labels, 12, 14).to(device), imt.to(device),
                                            c.float().to(device), w.float().to(device), params, iterations)

    def oracle(x, c, w):
        filters = [[LR.filter_matrix(LR.image_features(im, params.gaussian_sxy)),
                    LR.filter_matrix(LR.image_features(im, params.bilateral_sxy, params.bilateral_srgb))]
                   for im in images]
        return LR.meanfield(x, filters, c, w, iterations).reshape(2, labels, 12, 14)

    gpu = _grads(layer_on("cuda"), (logits, compat, weights), g)
    cpu = _grads(layer_on("cpu"), (logits, compat, weights), g)
    slow = _grads(oracle, (logits, compat, weights), g)
    for name, a, b, c in zip(("forward", "d logits", "d compat", "d weights"), gpu, cpu, slow):
        assert _rel(a, c) < GRAD_RTOL, f"{name} against the oracle: {_rel(a, c):.2e}"
        assert _rel(a, b) < GRAD_RTOL, f"{name} against the CPU layer: {_rel(a, b):.2e}"


@pytest.mark.cuda
def test_cuda_layer_makes_no_host_round_trip(monkeypatch):
    import torch

    from pyseg.crf import cuda_layer
    from pyseg.crf import layer as CL

    def no_cpu(*a, **k):
        raise AssertionError("the CPU filter was used for CUDA tensors")

    monkeypatch.setattr(CL, "image_filters", no_cpu)
    built = []
    real = cuda_layer.CudaLatticeFilters
    monkeypatch.setattr(cuda_layer, "CudaLatticeFilters", lambda *a: built.append(real(*a)) or built[-1])
    layer = CL.CRFLayer(6, CRFParams.preset("deeplab"), iterations=3).cuda()
    images = torch.from_numpy(_images("natural", 2, 48, 64, 0)).cuda()
    x = torch.randn(2, 6, 48, 64, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        layer(x, images).square().sum().backward()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    assert any("lattice" in n or "k_for" in n for n in names), "the profiler saw no CUDA kernel: check vacuous"
    # one read-back of the vertex counts, the finiteness checks of logits, compat and weights; no upload
    assert sum("DtoH" in n for n in names) <= 4 and not any("HtoD" in n for n in names), \
        [n for n in names if "Memcpy" in n]
    assert len(built) == 1 and x.grad is not None and layer.compat.grad.is_cuda


@pytest.mark.cuda
def test_cuda_layer_deterministic_mixed_devices_and_autocast(monkeypatch, caplog):
    import torch

    from pyseg.crf import layer as CL

    layer = CL.CRFLayer(5, CRFParams.preset("deeplab"), iterations=4).cuda()
    images = torch.from_numpy(_images("natural", 3, 30, 34, 0)).cuda()
    x = torch.randn(3, 5, 30, 34, device="cuda")
    runs = []
    for _ in range(2):
        xi = x.clone().requires_grad_(True)
        layer.zero_grad()
        out = layer(xi, images)
        out.square().sum().backward()
        runs.append((out.detach(), xi.grad, layer.compat.grad.clone(), layer.weights.grad.clone()))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    with pytest.raises(ValueError, match="image must be on the logits' device cuda:0, got a tensor on cpu"):
        layer(x, images.cpu())
    with torch.autocast("cuda", dtype=torch.float16):
        half = layer(x.half(), images)
    assert half.dtype == torch.float16 and float((half.float() - runs[0][0]).abs().max()) < 5e-2
    monkeypatch.setattr(CL, "_said", set())
    with caplog.at_level(logging.WARNING, logger="pyseg.crf.layer"):
        double = layer(x.double(), images)  # float32 kernels: float32 results in a float64 tensor, said once
    assert double.dtype == torch.float64 and torch.equal(double.float(), runs[0][0])
    assert "float64 logits on CUDA are refined in float32" in caplog.text
