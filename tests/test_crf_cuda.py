"""The CUDA dense CRF.

Without a GPU: the GPU pipeline's logic runs through the host emulation (csrc/cuda/host_exec.cuh compiled
with g++: the same functors, run in a loop) against the NumPy reference; the CMake switch PYSEG_CUDA; the
backend's errors. With a GPU (marker ``cuda``): CUDA against the CPU, batch against single images,
determinism, bad inputs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import build_host_emulator, edged_image, natural_crop

from pyseg.crf import reference as ref
from pyseg.crf.params import CRFParams

REPO = Path(__file__).resolve().parents[1]

_EMU_MAIN = REPO / "csrc" / "cuda" / "host_emulation_main.cpp"

# scripts/asan_tests.sh sets PYSEG_EMU_SANITIZE=1: the emulation (the GPU's index arithmetic) then runs under
# AddressSanitizer + UBSan, each workspace array in its own heap block (host_exec.cuh).
SANITIZE = os.environ.get("PYSEG_EMU_SANITIZE") == "1"
SANITIZER_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
                   "-g"]


def build_host_program(tmp_path_factory, name: str, source: Path, flags) -> Path:
    exe = build_host_emulator(source, tmp_path_factory.mktemp(name), flags)
    if exe is None:
        pytest.skip("no C++ compiler for the host emulation of the CUDA pipeline")
    return exe


@pytest.fixture(scope="module")
def emulator(tmp_path_factory) -> Path:
    exe = build_host_program(tmp_path_factory, "emu", _EMU_MAIN, SANITIZER_FLAGS if SANITIZE else [])
    if SANITIZE:
        assert b"__asan_report" in exe.read_bytes(), f"{exe} was not built with AddressSanitizer"
    return exe


def run_emulator(exe: Path, probs: np.ndarray, image: np.ndarray, params: CRFParams, iterations: int):
    """(out (B, L, H, W), (M, M0, pieces, launches)) of the emulated GPU pipeline."""
    b, n_labels, h, w = probs.shape
    d = exe.parent
    np.ascontiguousarray(probs, np.float32).tofile(d / "p.bin")
    np.ascontiguousarray(image, np.uint8).tofile(d / "i.bin")
    args = [str(exe), str(b), str(n_labels), str(h), str(w)] + [
        repr(float(v)) for v in (params.gaussian_sxy, params.gaussian_compat, params.bilateral_sxy,
                                 params.bilateral_srgb, params.bilateral_compat)]
    args += [str(iterations), str(d / "p.bin"), str(d / "i.bin"), str(d / "o.bin")]
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode == 4:
        raise ValueError(r.stderr.strip())
    assert r.returncode == 0, r.stderr
    out = np.fromfile(d / "o.bin", np.float32).reshape(b, n_labels, h, w)
    return out, tuple(int(x) for x in r.stdout.split())


def random_probs(rng, b, n_labels, h, w, scale=2.0):
    logits = rng.normal(size=(b, n_labels, h, w)).astype(np.float32) * scale
    p = np.exp(logits - logits.max(1, keepdims=True))
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------- host emulation (no GPU)
@pytest.mark.parametrize("preset", ["krahenbuhl", "deeplab"])
@pytest.mark.parametrize("iterations", [0, 1, 4])
def test_emulated_pipeline_matches_reference(emulator, preset, iterations):
    rng = np.random.default_rng(3 + iterations)
    h, w, n_labels = 23, 31, 5
    image = edged_image(rng, h, w)
    probs = random_probs(rng, 1, n_labels, h, w)
    params = CRFParams.preset(preset)
    out, (m, m0, pieces, _) = run_emulator(emulator, probs, image[None], params, iterations)
    want = ref.dense_crf_reference(probs[0], image, params, iterations)
    assert np.abs(out[0] - want).max() < 1e-5
    if iterations:
        lg = ref.Lattice(ref.gaussian_features(h, w, params.gaussian_sxy))
        lb = ref.Lattice(ref.bilateral_features(image, params.bilateral_sxy, params.bilateral_srgb))
        assert (m0, m - m0) == (lg.m, lb.m)
        assert pieces >= m


@pytest.mark.parametrize("n_labels", [1, 2, 33, 37])
def test_emulated_label_counts(emulator, n_labels):
    # 1..32 labels keep a pixel's row in registers (Update<G>), more use the generic in-memory row.
    rng = np.random.default_rng(n_labels)
    h, w = 13, 18
    image = edged_image(rng, h, w)
    probs = random_probs(rng, 1, n_labels, h, w)
    params = CRFParams.preset("krahenbuhl")
    out, _ = run_emulator(emulator, probs, image[None], params, 3)
    assert np.abs(out[0] - ref.dense_crf_reference(probs[0], image, params, 3)).max() < 1e-5


def test_emulated_natural_image_and_labels_not_multiple_of_4(emulator, shared_data):
    rng = np.random.default_rng(11)
    image = natural_crop(shared_data, 36, 48, y0=90, x0=150, name="im1.png")
    probs = random_probs(rng, 1, 11, 36, 48, scale=1.5)
    params = CRFParams.preset("krahenbuhl")
    out, _ = run_emulator(emulator, probs, image[None], params, 3)
    want = ref.dense_crf_reference(probs[0], image, params, 3)
    assert np.abs(out[0] - want).max() < 1e-5
    assert (out[0].argmax(0) == want.argmax(0)).mean() == 1.0
    np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-5)


def test_emulated_matches_cpu_backend(emulator, shared_data):
    try:
        from pyseg.crf import dense_crf

        from pyseg.crf.backends import load_cpu

        load_cpu()
    except ImportError as e:
        pytest.skip(f"CPU backend not built: {e}")
    rng = np.random.default_rng(4)
    image = natural_crop(shared_data, 96, 128, y0=40, x0=60, name="im2.png")
    coarse = rng.normal(size=(11, 7, 9)) * 3
    logits = np.repeat(np.repeat(coarse, 16, 1), 16, 2)[:, :96, :128] + rng.normal(size=(11, 96, 128))
    probs = np.exp(logits - logits.max(0))
    probs = (probs / probs.sum(0)).astype(np.float32)
    for preset in ("krahenbuhl", "deeplab"):
        params = CRFParams.preset(preset)
        out, _ = run_emulator(emulator, probs[None], image[None], params, 10)
        cpu = dense_crf(probs, image, params, 10, device="cpu")
        assert np.abs(out[0] - cpu).max() < 1e-4
        assert (out[0].argmax(0) == cpu.argmax(0)).mean() >= 0.9995


def test_emulated_batch_equals_single_images(emulator):
    rng = np.random.default_rng(5)
    h, w, n_labels = 17, 21, 6
    images = np.stack([edged_image(rng, h, w), edged_image(rng, h, w)[::-1].copy(),
                       rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)])
    probs = random_probs(rng, 3, n_labels, h, w)
    params = CRFParams.preset("krahenbuhl").replace(bilateral_sxy=9.0, bilateral_srgb=20.0)
    batch, (m, _, _, launches_b) = run_emulator(emulator, probs, images, params, 3)
    total_m = 0
    for i in range(3):
        single, (mi, _, _, launches_1) = run_emulator(emulator, probs[i:i + 1], images[i:i + 1], params, 3)
        np.testing.assert_array_equal(batch[i], single[0])  # same sums in the same order
        total_m += mi
        assert launches_1 == launches_b  # one sequence of launches whatever the batch size
    assert m == total_m  # vertices of different images never merge


def test_emulated_heavy_vertices_and_tiny_sigmas(emulator):
    # A constant image puts hundreds of entries on few bilateral vertices (pieces split them); tiny
    # sigmas make every entry its own vertex (the workspace's worst case).
    rng = np.random.default_rng(8)
    h, w = 24, 40
    flat = np.full((1, h, w, 3), 77, np.uint8)
    probs = random_probs(rng, 1, 3, h, w)
    params = CRFParams.preset("krahenbuhl")
    out, (m, m0, pieces, _) = run_emulator(emulator, probs, flat, params, 2)
    assert pieces > m
    np.testing.assert_allclose(out[0], ref.dense_crf_reference(probs[0], flat[0], params, 2), atol=1e-5)
    tiny = CRFParams(0.05, 3.0, 0.05, 0.05, 10.0, 2)
    out, (m, m0, pieces, _) = run_emulator(emulator, probs, rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8),
                                           tiny, 2)
    assert m == h * w * 9 and pieces == m
    assert np.isfinite(out).all()


def test_emulated_rejects_sigma_too_small_for_lattice(emulator):
    probs = random_probs(np.random.default_rng(0), 1, 2, 8, 8)
    with pytest.raises(ValueError, match="too small"):
        run_emulator(emulator, probs, np.zeros((1, 8, 8, 3), np.uint8), CRFParams(1e-6, 3, 80, 13, 10, 1), 1)


_OVERFLOW_MAIN = r"""
#include <cstdio>
#include <cstdlib>
#include "cuda/host_exec.cuh"
int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const int i = atoi(argv[1]);
  const pyseg::cuda::HostWorkspace ws(pyseg::cuda::make_sizes(2, 5, 7, 3));
  if (i < 0) {
    std::printf("%d\n", pyseg::cuda::kNumBuffers);
    return 0;
  }
  if (ws.bytes[i] == 0) return 5;  // the GPU's sort scratch: no array here
  std::fprintf(stderr, "array %d: %zu bytes\n", i, ws.bytes[i]);
  volatile unsigned char* p = ws.blocks[(size_t)i].get();
  p[ws.bytes[i]] = 1;  // the first byte past array i
  return 0;
}
"""


def test_sanitized_emulation_sees_an_index_past_any_workspace_array(tmp_path_factory):
    """Each array of the emulated workspace is its own heap block: ASan reports a write one past its end (carved
    out of one buffer, as on the GPU, the write would land unseen in the padding or the next array)."""
    source = tmp_path_factory.mktemp("overflow_src") / "overflow.cpp"
    source.write_text(_OVERFLOW_MAIN)
    exe = build_host_program(tmp_path_factory, "overflow", source, SANITIZER_FLAGS)
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    n = int(subprocess.run([str(exe), "-1"], capture_output=True, text=True, env=env, check=True).stdout)
    assert n == 26
    for i in range(n):
        r = subprocess.run([str(exe), str(i)], capture_output=True, text=True, env=env)
        if i == n - 1:  # cub_temp
            assert r.returncode == 5, r.stderr
            continue
        size = re.search(r"array \d+: (\d+) bytes", r.stderr)
        assert r.returncode != 0 and size, f"array {i}: no sanitizer report\n{r.stderr}"
        assert "heap-buffer-overflow" in r.stderr, r.stderr
        assert re.search(rf"0 bytes (after|to the right of) {size.group(1)}-byte region", r.stderr), r.stderr


# --------------------------------------------------------------------------------- CMake switch (no GPU)
def _configure(tmp_path: Path, mode: str, path_env: str) -> subprocess.CompletedProcess:
    cmake = shutil.which("cmake")
    pybind11 = pytest.importorskip("pybind11")
    if cmake is None:
        pytest.skip("cmake not found")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDA_PATH", "CUDAToolkit_ROOT")}
    env["PATH"] = path_env
    return subprocess.run(
        [cmake, "-S", str(REPO), "-B", str(tmp_path / f"build-{mode}"), f"-DPYSEG_CUDA={mode}",
         f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"],
        capture_output=True, text=True, env=env, timeout=300)


def _path_without_nvcc(tmp_path: Path) -> str:
    """PATH with cmake and the C++ compiler but no nvcc (hiding /usr/local/cuda*/bin too)."""
    keep = [p for p in os.environ.get("PATH", "").split(os.pathsep)
            if p and not (Path(p) / "nvcc").exists() and "cuda" not in p]
    tools = tmp_path / "tools"
    tools.mkdir(exist_ok=True)
    for tool in ("cmake", "c++", "g++", "cc", "gcc", "ninja", "make"):
        found = shutil.which(tool)
        if found and not (tools / tool).exists():
            (tools / tool).symlink_to(found)
    return os.pathsep.join([str(tools)] + keep)


@pytest.mark.slow
def test_cmake_cuda_on_without_nvcc_fails_clearly(tmp_path):
    r = _configure(tmp_path, "ON", _path_without_nvcc(tmp_path))
    assert r.returncode != 0, f"CMake found a CUDA compiler although none is on PATH:\n{r.stdout}"
    assert "PYSEG_CUDA=ON but no CUDA compiler (nvcc) was found" in r.stderr + r.stdout


@pytest.mark.slow
def test_cmake_cuda_auto_without_nvcc_builds_cpu_only(tmp_path):
    r = _configure(tmp_path, "AUTO", _path_without_nvcc(tmp_path))
    assert "CUDA module: ON" not in r.stdout, f"CMake found a CUDA compiler although none is on PATH:\n{r.stdout}"
    assert r.returncode == 0, r.stderr
    assert "CUDA module: OFF (PYSEG_CUDA=AUTO and no CUDA compiler found)" in r.stdout


@pytest.mark.slow
def test_cmake_cuda_bad_value(tmp_path):
    r = _configure(tmp_path, "maybe", os.environ.get("PATH", ""))
    assert r.returncode != 0
    assert "PYSEG_CUDA must be AUTO, ON or OFF, got 'maybe'" in r.stderr + r.stdout


# ------------------------------------------------------------------------------ backend errors (no GPU)
def test_backend_rejects_non_cuda_inputs():
    torch = pytest.importorskip("torch")
    from pyseg.crf.cuda_backend import dense_crf_cuda

    probs = torch.full((1, 2, 4, 4), 0.5)
    image = torch.zeros((1, 4, 4, 3), dtype=torch.uint8)
    with pytest.raises(ValueError, match="must be a CUDA tensor.*cpu"):
        dense_crf_cuda(probs, image)
    with pytest.raises(TypeError, match="torch tensor"):
        dense_crf_cuda(probs.numpy(), image)
    with pytest.raises(ValueError, match="iterations"):
        dense_crf_cuda(probs, image, iterations=-1)
    with pytest.raises(TypeError, match="CRFParams"):
        dense_crf_cuda(probs, image, params={"gaussian_sxy": 3})


def test_probability_value_check():
    torch = pytest.importorskip("torch")
    from pyseg.crf.cuda_backend import check_probability_values

    p = torch.from_numpy(random_probs(np.random.default_rng(0), 2, 3, 5, 6))
    check_probability_values(p)
    bad = p.clone()
    bad[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_probability_values(bad)
    bad = p.clone()
    bad[0, :, 0, 0] = torch.tensor([1.5, -0.25, -0.25])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        check_probability_values(bad)
    with pytest.raises(ValueError, match="sum to 1"):
        check_probability_values(p * 0.9)


def test_backend_reports_missing_module(monkeypatch):
    from pyseg.crf import cuda_backend

    monkeypatch.setattr(cuda_backend, "_MODULE", None)
    monkeypatch.setattr(cuda_backend, "_IMPORT_ERROR", None)
    monkeypatch.setitem(sys.modules, "pyseg.crf._crf_cuda", None)  # import raises ImportError
    import pyseg.crf

    # Where the module is built and was imported earlier, `from pyseg.crf import _crf_cuda` would find the
    # package attribute and never look at sys.modules.
    monkeypatch.delattr(pyseg.crf, "_crf_cuda", raising=False)
    with pytest.raises(RuntimeError, match="not built or cannot load.*PYSEG_CUDA=ON"):
        cuda_backend.load_module()
    ok, why = cuda_backend.status()
    assert not ok and "not built" in why


def test_backend_status_without_gpu_says_why():
    torch = pytest.importorskip("torch")
    from pyseg.crf import cuda_backend

    ok, why = cuda_backend.status()
    if torch.cuda.is_available() and ok:
        pytest.skip("a GPU is present")
    assert not ok and why


# --------------------------------------------------------------------------------------------- on a GPU
def _cpu_crf(probs: np.ndarray, images: np.ndarray, params: CRFParams, iterations: int) -> np.ndarray:
    """The CPU backend (or, where it is not built, the NumPy reference), image by image."""
    try:
        from pyseg.crf import dense_crf
    except ImportError:
        dense_crf = None
    outs = []
    for p, im in zip(probs, images):
        if dense_crf is not None:
            outs.append(np.asarray(dense_crf(p, im, params, iterations, device="cpu")))
        else:
            outs.append(ref.dense_crf_reference(p, im, params, iterations))
    return np.stack(outs)


def _cuda(probs, images, params, iterations, **kw):
    import torch

    from pyseg.crf.cuda_backend import dense_crf_cuda

    out = dense_crf_cuda(torch.from_numpy(probs).cuda(), torch.from_numpy(images).cuda(), params, iterations, **kw)
    return out.cpu().numpy()


def _agree(got, want):
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 1e-3
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999


@pytest.mark.cuda
@pytest.mark.parametrize("preset", ["krahenbuhl", "deeplab"])
@pytest.mark.parametrize("n_labels", [1, 5, 11, 37])
def test_cuda_matches_cpu_random(preset, n_labels):
    rng = np.random.default_rng(n_labels)
    h, w = 37, 53
    images = np.stack([edged_image(rng, h, w), rng.integers(0, 256, (h, w, 3), dtype=np.uint8)])
    probs = random_probs(rng, 2, n_labels, h, w)
    params = CRFParams.preset(preset)
    for iterations in (0, 1, 5):
        _agree(_cuda(probs, images, params, iterations), _cpu_crf(probs, images, params, iterations))


@pytest.mark.cuda
def test_cuda_matches_cpu_real_images(shared_data):
    from PIL import Image

    params = CRFParams.preset("krahenbuhl")
    for name, anno in (("im1.png", "anno1.png"), ("im2.png", "anno2.png")):
        image = np.asarray(Image.open(shared_data / "crf_examples" / name).convert("RGB")).copy()
        a = np.asarray(Image.open(shared_data / "crf_examples" / anno).convert("RGB")).astype(np.int64)
        code = a[..., 0] + (a[..., 1] << 8) + (a[..., 2] << 16)
        colours = [c for c in np.unique(code) if c != 0]
        n_labels = len(colours)
        probs = np.full((n_labels,) + code.shape, 1.0 / n_labels, np.float32)
        for i, c in enumerate(colours):
            m = code == c
            probs[:, m] = 0.3 / (n_labels - 1)
            probs[i, m] = 0.7
        _agree(_cuda(probs[None], image[None], params, 5), _cpu_crf(probs[None], image[None], params, 5))


@pytest.mark.cuda
def test_cuda_batch_equals_single_and_is_deterministic():
    rng = np.random.default_rng(1)
    h, w, n_labels = 48, 64, 11
    images = np.stack([edged_image(rng, h, w), rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                       edged_image(rng, h, w)[::-1].copy()])
    probs = random_probs(rng, 3, n_labels, h, w)
    params = CRFParams.preset("deeplab")
    batch = _cuda(probs, images, params, 4)
    for i in range(3):
        np.testing.assert_array_equal(batch[i], _cuda(probs[i:i + 1], images[i:i + 1], params, 4)[0])
    for _ in range(3):
        np.testing.assert_array_equal(batch, _cuda(probs, images, params, 4, deterministic=True))


@pytest.mark.cuda
def test_cuda_single_image_shapes_and_side_stream():
    import torch

    from pyseg.crf.cuda_backend import dense_crf_cuda

    rng = np.random.default_rng(2)
    probs = random_probs(rng, 1, 3, 1, 1)
    image = rng.integers(0, 256, (1, 1, 1, 3), dtype=np.uint8)
    _agree(_cuda(probs, image, CRFParams(), 3), _cpu_crf(probs, image, CRFParams(), 3))
    p = torch.from_numpy(random_probs(rng, 1, 4, 20, 30)[0]).cuda()
    im = torch.from_numpy(edged_image(rng, 20, 30)).cuda()
    want = dense_crf_cuda(p, im, None, 3)
    assert want.shape == (4, 20, 30) and want.dtype == torch.float32 and want.device == p.device
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = dense_crf_cuda(p, im, None, 3)
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(got, want)


@pytest.mark.cuda
def test_cuda_graph_cache_follows_new_tensors_and_shapes(monkeypatch):
    """Calls are replayed from cached CUDA graphs: with new input and output tensors on every call (the
    cached graph is updated), shapes taking turns, and a full cache, the results are bitwise those of
    launching kernel by kernel (PYSEG_CUDA_GRAPHS=0)."""
    import torch

    from pyseg.crf.cuda_backend import dense_crf_cuda

    rng = np.random.default_rng(5)
    params = CRFParams.preset("krahenbuhl")
    cases = []
    for h, w, n_labels in ((24, 40, 5), (31, 17, 11), (9, 13, 2)):
        probs = torch.from_numpy(random_probs(rng, 2, n_labels, h, w)).cuda()
        images = torch.from_numpy(np.stack([edged_image(rng, h, w), edged_image(rng, h, w)[::-1].copy()])).cuda()
        cases.append((probs, images))
    monkeypatch.setenv("PYSEG_CUDA_GRAPHS", "0")
    want = [dense_crf_cuda(p, im, params, 3).cpu() for p, im in cases]
    monkeypatch.delenv("PYSEG_CUDA_GRAPHS")
    for _ in range(3):
        for (p, im), w in zip(cases, want):
            assert torch.equal(dense_crf_cuda(p.clone(), im.clone(), params, 3).cpu(), w)
    for iterations in range(1, 11):  # more shapes/parameters than the cache holds (8)
        dense_crf_cuda(cases[0][0], cases[0][1], params, iterations)
    assert torch.equal(dense_crf_cuda(cases[1][0], cases[1][1], params, 3).cpu(), want[1])


@pytest.mark.cuda
def test_cuda_bad_inputs():
    import torch

    from pyseg.crf.cuda_backend import dense_crf_cuda

    p = torch.full((1, 2, 8, 8), 0.5, device="cuda")
    im = torch.zeros((1, 8, 8, 3), dtype=torch.uint8, device="cuda")
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        dense_crf_cuda(p.cpu(), im)
    with pytest.raises(ValueError, match="must be a CUDA tensor"):
        dense_crf_cuda(p, im.cpu())
    with pytest.raises(TypeError, match="float32"):
        dense_crf_cuda(p.double(), im)
    with pytest.raises(TypeError, match="uint8"):
        dense_crf_cuda(p, im.float())
    with pytest.raises(ValueError, match="to match probs"):
        dense_crf_cuda(p, im[:, :7])
    with pytest.raises(ValueError, match="non-empty"):
        dense_crf_cuda(p[:0], im[:0])
    with pytest.raises(ValueError, match="too small"):
        dense_crf_cuda(p, im, CRFParams(1e-6, 3.0, 80.0, 13.0, 10.0, 1))
    with pytest.raises(ValueError, match="sum to 1"):
        dense_crf_cuda(p * 0.5, im, check_values=True)
    nan = p.clone()
    nan[0, 0, 0, 0] = float("nan")
    assert torch.isnan(dense_crf_cuda(nan, im, iterations=2)).any()  # unchecked: NaN shows, never a finite lie
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="same device"):
            dense_crf_cuda(p, im.to("cuda:1"))
