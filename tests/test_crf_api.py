"""Functional tests of pyseg.crf's API and CPU binding: shapes, batches, threads, the pydensecrf drop-in's
methods, drop-in vs dense_crf, torch in / torch out, backends, generic feature dimensions, ISA paths.
(Parity with pydensecrf and the NumPy oracle lives in test_crf_parity.py; bad input in test_crf_bad_input.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import crf_test_image as image
from helpers import crf_test_probs as probs

import pyseg.crf as dcrf
from pyseg.crf import reference as R
from pyseg.crf import utils as cutils
from pyseg.crf.params import CRFParams

# The folder holding the pyseg package this test imports (installed, or the source tree with an in-place build),
# so that subprocesses import the same one.
PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(dcrf.__file__))))


P = CRFParams(gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=20, bilateral_srgb=13, bilateral_compat=10,
              iterations=5)


@pytest.mark.parametrize("n_labels", [1, 2, 5, 11, 21, 40])
def test_shapes_dtype_and_normalisation(n_labels):
    pr, img = probs(n_labels, 23, 31, seed=n_labels), image(23, 31)
    out = dcrf.dense_crf(pr, img, P)
    assert out.shape == pr.shape and out.dtype == np.float32
    assert np.all(np.isfinite(out)) and out.min() >= 0
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    if n_labels == 1:
        np.testing.assert_array_equal(out, 1.0)


def test_crf_cleans_noisy_labels_along_image_edges():
    """The CRF must act: on a two-region image with 15% of the labels flipped, it recovers the regions."""
    h, w = 40, 48
    rng = np.random.default_rng(3)
    truth = (np.arange(w)[None, :] >= w // 2).repeat(h, 0).astype(np.int64)
    img = np.where(truth[..., None] == 1, 200, 40).astype(np.float64) + rng.normal(0, 4, (h, w, 3))
    img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    noisy = np.where(rng.random((h, w)) < 0.15, 1 - truth, truth)
    pr = np.where(np.arange(2)[:, None, None] == noisy[None], 0.65, 0.35).astype(np.float32)
    out = dcrf.dense_crf(pr, img, P.replace(iterations=10))
    assert (pr.argmax(0) == truth).mean() < 0.9
    assert (out.argmax(0) == truth).mean() > 0.99


def test_zero_iterations_is_clipped_normalised_input():
    pr, img = probs(5, 17, 19), image(17, 19)
    pr[0, 0, 0], pr[1, 0, 0] = 0.0, pr[1, 0, 0] + pr[0, 0, 0]
    out = dcrf.dense_crf(pr, img, P, iterations=0)
    c = np.clip(pr, 1e-5, 1.0)
    np.testing.assert_allclose(out, c / c.sum(0), rtol=2e-6, atol=1e-7)


def test_batch_equals_per_image_and_threads_are_bitwise_equal():
    b, n_labels, h, w = 5, 6, 21, 27
    pr = np.stack([probs(n_labels, h, w, seed=i) for i in range(b)])
    imgs = np.stack([image(h, w, seed=i) for i in range(b)])
    batch = dcrf.dense_crf(pr, imgs, P)
    assert batch.shape == (b, n_labels, h, w)
    for i in range(b):
        np.testing.assert_array_equal(batch[i], dcrf.dense_crf(pr[i], imgs[i], P))
    for t in (1, 2, 3, 7):
        np.testing.assert_array_equal(dcrf.dense_crf(pr, imgs, P, num_threads=t), batch)
        np.testing.assert_array_equal(dcrf.dense_crf(pr[1], imgs[1], P, num_threads=t), batch[1])


def test_threads_bitwise_equal_on_a_larger_image():
    """Big enough that the lattice build and iterations are split across threads inside one image."""
    pr, img = probs(7, 130, 170, seed=5), image(130, 170, seed=5)
    one = dcrf.dense_crf(pr, img, P, num_threads=1)
    for t in (2, 4):
        np.testing.assert_array_equal(dcrf.dense_crf(pr, img, P, num_threads=t), one)


def test_set_num_threads():
    old = dcrf.get_num_threads()
    try:
        dcrf.set_num_threads(1)
        assert dcrf.get_num_threads() == 1
        dcrf.set_num_threads(3)
        assert dcrf.get_num_threads() == 3
        dcrf.set_num_threads(None)
        assert dcrf.get_num_threads() >= 1
        with pytest.raises(ValueError, match="set_num_threads.*-1"):
            dcrf.set_num_threads(-1)
    finally:
        dcrf.set_num_threads(old)


def test_compat_zero_switches_a_kernel_off():
    n_labels, h, w = 4, 19, 22
    pr, img = probs(n_labels, h, w), image(h, w)
    out = dcrf.dense_crf(pr, img, P.replace(gaussian_compat=0.0))
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(cutils.unary_from_softmax(pr))
    d.addPairwiseBilateral(sxy=P.bilateral_sxy, srgb=P.bilateral_srgb, rgbim=img, compat=P.bilateral_compat)
    # Rounding apart (dense_crf starts from clip(p) / sum, the drop-in from softmax(-U); without FMA, as with
    # PYSEG_CPU_ISA=sse2, they differed by 2.3e-6), the same: with the Gaussian kernel left in, 0.97 apart.
    np.testing.assert_allclose(out.reshape(n_labels, -1), d.inference(P.iterations), atol=1e-5)


def test_dropin_equals_dense_crf():
    n_labels, h, w = 6, 25, 33
    pr, img = probs(n_labels, h, w, seed=2), image(h, w, seed=2)
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(cutils.unary_from_softmax(pr))
    d.addPairwiseGaussian(sxy=P.gaussian_sxy, compat=P.gaussian_compat)
    d.addPairwiseBilateral(sxy=P.bilateral_sxy, srgb=P.bilateral_srgb, rgbim=img, compat=P.bilateral_compat)
    q = d.inference(P.iterations)
    assert q.shape == (n_labels, h * w) and q.dtype == np.float32
    np.testing.assert_allclose(dcrf.dense_crf(pr, img, P).reshape(n_labels, -1), q, atol=2e-6)


def test_dropin_step_inference_and_kl():
    n_labels, h, w = 4, 20, 24
    pr, img = probs(n_labels, h, w, seed=1), image(h, w, seed=1)
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(cutils.unary_from_softmax(pr))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=30, srgb=13, rgbim=img, compat=10)
    q, tmp1, tmp2 = d.startInference()
    np.testing.assert_allclose(q, d.inference(0), atol=1e-7)
    kls = []
    for _ in range(4):
        kls.append(d.klDivergence(q))
        d.stepInference(q, tmp1, tmp2)
    np.testing.assert_allclose(q, d.inference(4), atol=1e-6)
    assert all(np.isfinite(kls)) and kls[-1] < kls[0]  # mean field lowers the KL here
    with pytest.raises(TypeError, match="in place"):
        d.stepInference(q.astype(np.float64), tmp1, tmp2)


def test_dropin_compat_forms_agree():
    """Potts w == diagonal -w == matrix -w * I (the sign conventions of pydensecrf)."""
    n_labels, h, w = 5, 16, 18
    pr, img = probs(n_labels, h, w, seed=4), image(h, w, seed=4)
    outs = []
    for compat in (4.0, np.full(n_labels, -4.0, np.float32), -4.0 * np.eye(n_labels, dtype=np.float32)):
        d = dcrf.DenseCRF2D(w, h, n_labels)
        d.setUnaryEnergy(cutils.unary_from_softmax(pr))
        d.addPairwiseBilateral(sxy=10, srgb=13, rgbim=img, compat=compat)
        outs.append(d.inference(3))
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-6)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-6)


def test_dropin_without_unary_is_uniform_start():
    d = dcrf.DenseCRF2D(6, 5, 3)
    np.testing.assert_allclose(d.inference(0), 1.0 / 3, atol=1e-7)


@pytest.mark.parametrize("dim", [1, 2, 3, 5, 7, 32])
def test_generic_feature_dimensions(dim):
    """Compile-time (2, 3, 5) and run-time (others) lattice dimensions give valid, deterministic results;
    d = 2 features equal DenseCRF2D's Gaussian kernel."""
    n, n_labels = 300, 4
    rng = np.random.default_rng(dim)
    feats = rng.normal(size=(dim, n)).astype(np.float32) * 2
    u = cutils.unary_from_softmax(rng.dirichlet(np.ones(n_labels), size=n).T.astype(np.float32))
    outs = []
    for threads in (1, 2):
        dcrf.set_num_threads(threads)
        d = dcrf.DenseCRF(n, n_labels)
        d.setUnaryEnergy(u)
        d.addPairwiseEnergy(feats, compat=3)
        outs.append(d.inference(3))
    dcrf.set_num_threads(None)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.all(np.isfinite(outs[0]))
    np.testing.assert_allclose(outs[0].sum(0), 1.0, atol=1e-5)
    if dim == 2:
        h, w = 15, 20
        pr = probs(n_labels, h, w)
        u2 = cutils.unary_from_softmax(pr)
        a = dcrf.DenseCRF2D(w, h, n_labels)
        a.setUnaryEnergy(u2)
        a.addPairwiseGaussian(sxy=3, compat=3)
        b = dcrf.DenseCRF(h * w, n_labels)
        b.setUnaryEnergy(u2)
        b.addPairwiseEnergy(cutils.create_pairwise_gaussian((3, 3), (h, w))[::-1].copy(), compat=3)
        np.testing.assert_allclose(b.inference(4), a.inference(4), atol=1e-6)


def clustered_points(dim: int, n: int, n_labels: int, seed: int):
    """``n`` points in ``dim``-D around 6 centres (spread 0.5 lattice units in all, so neighbours interact
    at any d) and a noisy unary (n_labels, n)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(dim, 6)) * 6 / np.sqrt(dim)
    feats = centres[:, rng.integers(0, 6, n)] + rng.normal(size=(dim, n)) * 0.5 / np.sqrt(dim)
    p = rng.dirichlet(np.ones(n_labels) * 0.7, size=n).T
    return feats.astype(np.float32), (-np.log(np.clip(p, 1e-5, 1.0))).astype(np.float32)


@pytest.mark.parametrize("dim", [1, 4, 7, 16, 32])
def test_runtime_feature_dimensions_match_the_reference(dim):
    """The run-time-dimension lattice (d other than 2, 3, 5) against the NumPy oracle, every normalisation;
    the tolerance is from the errors measured in benchmarks/NOTES_tolerances.md."""
    feats, u = clustered_points(dim, 400 if dim < 32 else 100, 4, seed=dim)
    for norm in (dcrf.NORMALIZE_SYMMETRIC, dcrf.NO_NORMALIZATION, dcrf.NORMALIZE_BEFORE, dcrf.NORMALIZE_AFTER):
        compat = 0.3 if norm == dcrf.NO_NORMALIZATION else 4.0  # unnormalised messages carry the blur gain
        d = dcrf.DenseCRF(feats.shape[1], u.shape[0])
        d.setUnaryEnergy(u.copy())
        d.addPairwiseEnergy(feats.copy(), compat=compat, normalization=norm)
        got = np.array(d.inference(5))
        want = R.meanfield(u, [R.Pairwise(feats, compat, norm)], 5)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"d = {dim}, normalization {norm}")
        if norm == dcrf.NORMALIZE_SYMMETRIC:  # the points' neighbours change labels: the blur is exercised
            alone = np.exp(-u) / np.exp(-u).sum(0)
            assert (want.argmax(0) != alone.argmax(0)).mean() > 0.1


def test_feature_dimension_limit():
    d = dcrf.DenseCRF(10, 2)
    with pytest.raises(ValueError, match="1..32.*33"):
        d.addPairwiseEnergy(np.zeros((33, 10), np.float32), compat=1)


def test_huge_coordinates_are_a_clean_error():
    d = dcrf.DenseCRF(4, 2)
    feats = np.array([[0, 1e8, 2e8, 3e8]], np.float32)
    with pytest.raises(ValueError, match="out of range.*sigma"):
        d.addPairwiseEnergy(feats, compat=1)


@pytest.mark.slow
def test_4096_square_image():
    """Issue #2: a 4096x4096 image works (pydensecrf aborts on very large images): 16.8 M pixels, so n (d+1) is
    1e8 offsets in the bilateral lattice and the vertex tables span many chunks. A noisy unary on an image
    of two halves (a vertical edge, a vertical colour ramp) is cleaned to the halves, and the drop-in gives what
    dense_crf gives. About 3 GB and 10 s here."""
    h = w = 4096
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    right = xx >= w // 2
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = np.where(right, 210, 40)
    img[..., 1] = 90
    img[..., 2] = yy * 255 // (h - 1)
    del yy, xx
    p_right = np.where(right, 0.62, 0.38) + rng.uniform(-0.2, 0.2, (h, w))  # a fifth lean the wrong way
    pr = np.stack([1 - p_right, p_right]).astype(np.float32)
    del p_right
    assert 0.75 < (pr.argmax(0) == right).mean() < 0.85
    params = CRFParams.preset("krahenbuhl")
    out = dcrf.dense_crf(pr, img, params, iterations=2)
    assert out.shape == (2, h, w) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
    assert (out.argmax(0) == right).mean() > 0.999
    d = dcrf.DenseCRF2D(w, h, 2)
    d.setUnaryEnergy(cutils.unary_from_softmax(pr))
    d.addPairwiseGaussian(sxy=params.gaussian_sxy, compat=params.gaussian_compat)
    d.addPairwiseBilateral(sxy=params.bilateral_sxy, srgb=params.bilateral_srgb, rgbim=img,
                           compat=params.bilateral_compat)
    del img, pr
    np.testing.assert_allclose(d.inference(2), out.reshape(2, -1), atol=2e-6)


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    pr, img = probs(3, 14, 16), image(14, 16)
    ref = dcrf.dense_crf(pr, img, P)
    out = dcrf.dense_crf(torch.from_numpy(pr), torch.from_numpy(img), P, device="cpu")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    np.testing.assert_array_equal(out.numpy(), ref)
    outb = dcrf.dense_crf(torch.from_numpy(pr)[None], torch.from_numpy(img)[None], P)
    assert tuple(outb.shape) == (1, 3, 14, 16)
    np.testing.assert_array_equal(outb[0].numpy(), ref)
    # a non-contiguous tensor and float64 probabilities are accepted (copied / cast)
    out64 = dcrf.dense_crf(torch.from_numpy(pr).double(), torch.from_numpy(img), P)
    np.testing.assert_array_equal(out64.numpy(), dcrf.dense_crf(pr.astype(np.float64).astype(np.float32), img, P))


def test_backends_and_missing_cuda():
    info = dcrf.backends()
    assert info["cpu"]["compiled"] and info["cpu"]["usable"]
    assert set(info["cuda"]) >= {"compiled", "usable", "reason"}
    if not info["cuda"]["usable"]:
        assert info["cuda"]["reason"]
        with pytest.raises(RuntimeError, match="CUDA"):
            dcrf.dense_crf(probs(2, 4, 4), image(4, 4), device="cuda")
        # auto falls back to the CPU for CPU inputs
        dcrf.dense_crf(probs(2, 4, 4), image(4, 4), device="auto")


def test_baseline_isa_matches_best_isa():
    """The SSE2 kernels (any x86-64) and the AVX2 ones agree closely (FMA and lane order differ); the counts of
    pixels through each set's update show that each run used the set it claims."""
    code = ("import json, numpy as np, sys; sys.path.insert(0, %r); import pyseg.crf as c; "
            "from pyseg.crf import _crf_cpu as m; d = np.load(sys.argv[1]); "
            "np.save(sys.argv[2], c.dense_crf(d['p'], d['i'])); "
            "print(json.dumps(dict(m._fast_path_counts(), isa=m.isa())))") % PKG_PARENT
    outs, runs = [], []
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.npz")
        np.savez(inp, p=probs(16, 40, 50, seed=9), i=image(40, 50, seed=9))
        for isa in ("sse2", ""):
            env = dict(os.environ, PYSEG_CPU_ISA=isa)
            out = os.path.join(tmp, f"out{isa}.npy")
            r = subprocess.run([sys.executable, "-c", code, inp, out], env=env, capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, r.stderr
            runs.append(json.loads(r.stdout))
            outs.append(np.load(out))
    sse2, best = runs
    assert sse2["isa"] == "sse2" and sse2["update_pixels_sse2"] > 0 and sse2["update_pixels_avx2"] == 0, sse2
    assert best["isa"] == "avx2", f"this CPU runs the SSE2 kernels only: nothing to compare them with ({best})"
    assert best["update_pixels_avx2"] > 0 and best["update_pixels_sse2"] == 0, best
    np.testing.assert_allclose(outs[0], outs[1], atol=2e-5)
    assert (outs[0].argmax(0) == outs[1].argmax(0)).mean() > 0.999


def test_release_memory_returns_cached_buffers():
    pr, img = probs(11, 300, 300), image(300, 300)
    ref = dcrf.dense_crf(pr, img, P)
    from pyseg.crf import _crf_cpu

    assert _crf_cpu.cached_bytes() > 0  # big buffers are kept for the next call
    assert dcrf.release_memory() > 0
    assert _crf_cpu.cached_bytes() == 0
    np.testing.assert_array_equal(dcrf.dense_crf(pr, img, P), ref)
