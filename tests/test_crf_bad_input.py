"""Bad input to pyseg.crf: a ValueError / TypeError that says what was expected and what came, never a crash.

Each case checks the exception type and that the message names both the expectation and the offending
value (as regular expressions, case-insensitive). Inputs that pydensecrf crashes on (sigma 0 / NaN / tiny,
0 labels, NaN unaries, negative iterations) are included.

Where the issue leaves a choice (non-contiguous, negative-stride or read-only arrays, float64 input): either
a clean error that names the problem, or a result identical to the one for a well-formed copy of the input;
never a silently different result.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import pyseg.crf as dcrf
from pyseg.crf import utils as cutils
from pyseg.crf.params import CRFParams

H, W, L = 12, 15, 3


def expect_error(fn, *needles, types=(ValueError, TypeError)):
    """fn() must raise one of ``types`` whose message matches every regex in ``needles``."""
    with pytest.raises(types) as info:
        fn()
    msg = str(info.value)
    for needle in needles:
        assert re.search(needle, msg, re.IGNORECASE), f"message {msg!r} does not mention {needle!r}"
    return msg


def either_error_or_same(fn, reference, needles, what):
    """fn() raises a clean error naming ``needles``, or returns exactly ``reference``."""
    try:
        got = fn()
    except (ValueError, TypeError) as e:
        for needle in needles:
            assert re.search(needle, str(e), re.IGNORECASE), f"{what}: message {str(e)!r} lacks {needle!r}"
        return "error"
    np.testing.assert_allclose(np.asarray(got), np.asarray(reference), atol=1e-6, err_msg=what)
    return "same"


def good_probs(l=L, h=H, w=W, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(l), size=(h, w)).transpose(2, 0, 1).astype(np.float32).copy()


def good_image(h=H, w=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def good_unary(l=L, n=H * W):
    return (-np.log(good_probs(l, 1, n).reshape(l, n))).astype(np.float32)


def crf2d(l=L):
    d = dcrf.DenseCRF2D(W, H, l)
    d.setUnaryEnergy(good_unary(l))
    return d


# ------------------------------------------------------------------------------------------ dense_crf
@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.bool_, np.complex64, object])
def test_dense_crf_probs_wrong_dtype(dtype):
    probs = good_probs().astype(dtype)
    expect_error(lambda: dcrf.dense_crf(probs, good_image()), "float32", np.dtype(dtype).name)


def test_dense_crf_probs_float64_or_float16():
    for dtype in (np.float64, np.float16):
        probs = good_probs()
        either_error_or_same(lambda: dcrf.dense_crf(probs.astype(dtype), good_image()),
                             dcrf.dense_crf(probs.astype(dtype).astype(np.float32), good_image()),
                             ["float32", np.dtype(dtype).name], f"{np.dtype(dtype).name} probs")


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint16, np.int8])
def test_dense_crf_image_wrong_dtype(dtype):
    img = good_image().astype(dtype)
    expect_error(lambda: dcrf.dense_crf(good_probs(), img), "uint8", np.dtype(dtype).name)


@pytest.mark.parametrize("shape", [(H, W), (1, 1, L, H, W), (H * W,)])
def test_dense_crf_probs_wrong_ndim(shape):
    probs = np.full(shape, 1.0 / L, dtype=np.float32) if len(shape) != 2 else np.full(shape, 1.0, np.float32)
    expect_error(lambda: dcrf.dense_crf(probs, good_image()), r"\(L, H, W\)|L, H, W", re.escape(str(shape)))


@pytest.mark.parametrize("shape", [(H, W), (H, W, 4), (H, W, 1), (3, H, W)])
def test_dense_crf_image_wrong_shape(shape):
    img = np.zeros(shape, dtype=np.uint8)
    expect_error(lambda: dcrf.dense_crf(good_probs(), img), r"image must have shape \(H, W, 3\)",
                 "got " + re.escape(str(shape)))


def test_dense_crf_size_mismatch():
    want = re.escape(f"(H, W, 3) = ({H}, {W}, 3)")
    expect_error(lambda: dcrf.dense_crf(good_probs(), good_image(H + 1, W)), want, re.escape(f"got ({H + 1}, {W}, 3)"))
    expect_error(lambda: dcrf.dense_crf(good_probs(), good_image(H, W - 2)), want, re.escape(f"got ({H}, {W - 2}, 3)"))
    # batch sizes
    probs = np.stack([good_probs()] * 2)
    imgs = np.stack([good_image()] * 3)
    expect_error(lambda: dcrf.dense_crf(probs, imgs), re.escape(f"(B, H, W, 3) = (2, {H}, {W}, 3)"),
                 re.escape(f"got (3, {H}, {W}, 3)"))
    # batched probs with a single image
    expect_error(lambda: dcrf.dense_crf(probs, good_image()), re.escape(f"(B, H, W, 3) = (2, {H}, {W}, 3)"),
                 re.escape(f"got ({H}, {W}, 3)"))


@pytest.mark.parametrize("shape", [(0, H, W), (L, 0, W), (L, H, 0), (0, L, H, W)])
def test_dense_crf_empty(shape):
    probs = np.zeros(shape, dtype=np.float32)
    hh, ww = shape[-2], shape[-1]
    img = np.zeros((shape[0], hh, ww, 3) if len(shape) == 4 else (hh, ww, 3), dtype=np.uint8)
    expect_error(lambda: dcrf.dense_crf(probs, img), r"empty|at least 1|>= ?1", re.escape(str(shape)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_dense_crf_nonfinite_probs(bad):
    probs = good_probs()
    probs[1, 3, 4] = bad
    expect_error(lambda: dcrf.dense_crf(probs, good_image()), r"finite", re.escape(str(bad)))


def test_dense_crf_negative_and_unnormalised_probs():
    probs = good_probs()
    probs[0, 0, 0] = -0.25
    probs[1, 0, 0] += 0.25
    expect_error(lambda: dcrf.dense_crf(probs, good_image()), r"negative|>= ?0|\[0, 1\]", r"-0\.25|negative")
    expect_error(lambda: dcrf.dense_crf(good_probs() * 2, good_image()), r"must sum to 1 over the labels", r"got 2\b")
    expect_error(lambda: dcrf.dense_crf(good_probs() * 0.5, good_image()), r"must sum to 1 over the labels",
                 r"got 0\.5")


@pytest.mark.parametrize("iterations", [-1, -100])
def test_dense_crf_negative_iterations(iterations):
    expect_error(lambda: dcrf.dense_crf(good_probs(), good_image(), iterations=iterations),
                 "iterations must be an integer >= 0", f"got {iterations}$")


@pytest.mark.parametrize("iterations", [2.5, "5", [5]])
def test_dense_crf_non_integer_iterations(iterations):
    expect_error(lambda: dcrf.dense_crf(good_probs(), good_image(), iterations=iterations), "iterations",
                 re.escape(repr(iterations)) + "|" + type(iterations).__name__)


def test_dense_crf_bad_params_device_threads():
    expect_error(lambda: dcrf.dense_crf(good_probs(), good_image(), params=42), "CRFParams|params", "int|42")
    expect_error(lambda: dcrf.dense_crf(good_probs(), good_image(), device="tpu"), "device", "tpu")
    for n in (0, -2):
        expect_error(lambda: dcrf.dense_crf(good_probs(), good_image(), num_threads=n),
                     "num_threads must be an integer >= 1", f"got {n}$")
    expect_error(lambda: dcrf.dense_crf(good_probs(), good_image(), num_threads=1.5), "num_threads|threads",
                 r"1\.5|float")
    expect_error(lambda: dcrf.dense_crf(good_probs(), "image.png"), r"array|ndarray|tensor", "str")
    expect_error(lambda: dcrf.dense_crf(None, good_image()), r"array|ndarray|tensor", "None")


@pytest.mark.parametrize("field", ["gaussian_sxy", "bilateral_sxy", "bilateral_srgb"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_params_bad_sigma(field, value):
    expect_error(lambda: CRFParams(**{field: value}), field, re.escape(repr(value)))


@pytest.mark.parametrize("field", ["gaussian_sxy", "bilateral_sxy", "bilateral_srgb"])
def test_dense_crf_tiny_sigma_is_handled(field):
    """1e-30 crashes pydensecrf (int16 keys); pyseg gives a valid result or a clean error naming the sigma."""
    params = CRFParams(**{field: 1e-30})
    try:
        out = dcrf.dense_crf(good_probs(), good_image(), params)
    except (ValueError, TypeError) as e:
        assert re.search(r"sigma|sxy|srgb|small|large|range", str(e), re.IGNORECASE), str(e)
        return
    assert out.shape == (L, H, W) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-4)


def test_dense_crf_non_contiguous_and_negative_stride():
    probs, img = good_probs(), good_image()
    ref = dcrf.dense_crf(probs, img)
    big = np.zeros((L, H, 2 * W), np.float32)
    big[:, :, ::2] = probs
    either_error_or_same(lambda: dcrf.dense_crf(big[:, :, ::2], img), ref, ["contiguous"], "strided probs")
    flipped = np.ascontiguousarray(probs[:, ::-1])
    either_error_or_same(lambda: dcrf.dense_crf(flipped[:, ::-1], img), ref, ["contiguous|stride"],
                         "negative-stride probs")
    img_flipped = np.ascontiguousarray(img[:, ::-1])
    either_error_or_same(lambda: dcrf.dense_crf(probs, img_flipped[:, ::-1]), ref, ["contiguous|stride"],
                         "negative-stride image")
    either_error_or_same(lambda: dcrf.dense_crf(np.asfortranarray(probs), np.asfortranarray(img)), ref,
                         ["contiguous"], "Fortran-order inputs")
    ro_p, ro_i = probs.copy(), img.copy()
    ro_p.flags.writeable = False
    ro_i.flags.writeable = False
    either_error_or_same(lambda: dcrf.dense_crf(ro_p, ro_i), ref, ["read-only|writ"], "read-only inputs")


def test_dense_crf_torch_wrong_dtypes():
    torch = pytest.importorskip("torch")
    probs, img = good_probs(), good_image()
    expect_error(lambda: dcrf.dense_crf(torch.from_numpy(probs).to(torch.int64), torch.from_numpy(img)),
                 "float32", "int64")
    expect_error(lambda: dcrf.dense_crf(torch.from_numpy(probs), torch.from_numpy(img).float()), "uint8",
                 "float32")
    expect_error(lambda: dcrf.dense_crf(torch.from_numpy(probs), torch.from_numpy(img[:-1])),
                 re.escape(f"(H, W, 3) = ({H}, {W}, 3)"), re.escape(f"got ({H - 1}, {W}, 3)"))
    bad = torch.from_numpy(probs).clone()
    bad[0, 0, 0] = float("nan")
    expect_error(lambda: dcrf.dense_crf(bad, torch.from_numpy(img)), r"finite|nan")


# ------------------------------------------------------------------------------------------ drop-in
@pytest.mark.parametrize("args", [(0, H, L), (W, 0, L), (W, H, 0), (-1, H, L), (W, H, -2)])
def test_densecrf2d_bad_sizes(args):
    name, bad = [(n, a) for n, a in zip(("width", "height", "n_labels"), args) if a <= 0][0]
    expect_error(lambda: dcrf.DenseCRF2D(*args), f"{name} must be an integer >= 1", f"got {bad}$")


def test_densecrf_bad_sizes_and_types():
    expect_error(lambda: dcrf.DenseCRF(0, L), "n_points must be an integer >= 1", "got 0$")
    expect_error(lambda: dcrf.DenseCRF(10, 0), "n_labels must be an integer >= 1", "got 0$")
    expect_error(lambda: dcrf.DenseCRF2D(2.5, H, L), r"int", r"2\.5|float")
    expect_error(lambda: dcrf.DenseCRF2D(W, H, "3"), r"int", r"str|'3'")


def test_set_unary_energy_bad():
    d = dcrf.DenseCRF2D(W, H, L)
    expect_error(lambda: d.setUnaryEnergy(good_unary(L, H * W + 1)), re.escape(f"shape ({L}, {H * W}) (n_labels"),
                 re.escape(f"got ({L}, {H * W + 1})"))
    expect_error(lambda: d.setUnaryEnergy(good_unary(L + 1)), re.escape(f"shape ({L}, {H * W}) (n_labels"),
                 re.escape(f"got ({L + 1}, {H * W})"))
    expect_error(lambda: d.setUnaryEnergy(good_unary().reshape(-1)), re.escape(f"2-D array of shape ({L}, {H * W})"),
                 re.escape(f"got shape ({L * H * W},)"))
    expect_error(lambda: d.setUnaryEnergy(good_unary().astype(np.int32)), "float32", "int32")
    expect_error(lambda: d.setUnaryEnergy(np.zeros((L, 0), np.float32)), re.escape(f"shape ({L}, {H * W}) (n_labels"),
                 re.escape(f"got ({L}, 0)"))
    for bad in (np.nan, np.inf):
        u = good_unary()
        u[1, 5] = bad
        expect_error(lambda: d.setUnaryEnergy(u), r"finite", re.escape(str(bad)))
    expect_error(lambda: d.setUnaryEnergy([[1.0, 2.0]]), r"\(3, 180\)|float32|array", r"list|\(1, 2\)")


def test_set_unary_energy_layout_choices():
    u = good_unary()
    ref_crf = crf2d()
    ref = np.array(ref_crf.inference(2))

    def run(unary):
        d = dcrf.DenseCRF2D(W, H, L)
        d.setUnaryEnergy(unary)
        return np.array(d.inference(2))

    either_error_or_same(lambda: run(u.astype(np.float64)), ref, ["float32", "float64"], "float64 unary")
    either_error_or_same(lambda: run(np.asfortranarray(u)), ref, ["contiguous"], "Fortran-order unary")
    big = np.zeros((L, 2 * H * W), np.float32)
    big[:, ::2] = u
    either_error_or_same(lambda: run(big[:, ::2]), ref, ["contiguous"], "strided unary")
    flipped = np.ascontiguousarray(u[:, ::-1])
    either_error_or_same(lambda: run(flipped[:, ::-1]), ref, ["contiguous|stride"], "negative-stride unary")


@pytest.mark.parametrize("sxy", [0, -3, math.nan, math.inf, (3, 0), (math.nan, 3)])
def test_gaussian_bad_sigma(sxy):
    d = crf2d()
    expect_error(lambda: d.addPairwiseGaussian(sxy=sxy, compat=3), re.escape("sxy (sigma) must be finite and > 0"),
                 "got " + re.escape(str(sxy)) + "$")


@pytest.mark.parametrize("sxy,srgb", [(0, 13), (80, 0), (80, -1), (80, math.nan), (math.inf, 13), (80, (13, 0, 13)),
                                      (80, (13, 13))])
def test_bilateral_bad_sigma(sxy, srgb):
    d = crf2d()
    name, bad = ("srgb", srgb) if sxy == 80 else ("sxy", sxy)
    want = f"{name} must be a number or 3 numbers" if np.size(bad) == 2 else f"{name} \\(sigma\\) must be finite"
    expect_error(lambda: d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=good_image(), compat=10),
                 want, re.escape(str(bad)) + "$")


@pytest.mark.parametrize("sigma", [1e-30, 1e-12])
def test_tiny_sigma_dropin_is_handled(sigma):
    d = crf2d()
    try:
        d.addPairwiseGaussian(sxy=sigma, compat=3)
        d.addPairwiseBilateral(sxy=sigma, srgb=sigma, rgbim=good_image(), compat=10)
        q = np.array(d.inference(3))
    except (ValueError, TypeError) as e:
        assert re.search(r"sigma|sxy|srgb|small|large|range", str(e), re.IGNORECASE), str(e)
        return
    assert q.shape == (L, H * W) and np.all(np.isfinite(q))
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)


def test_bilateral_bad_image():
    d = crf2d()
    want = re.escape(f"rgbim must have shape (height, width, 3) = ({H}, {W}, 3)")
    expect_error(lambda: d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=good_image(H + 1), compat=10),
                 want, re.escape(f"got ({H + 1}, {W}, 3)"))
    expect_error(lambda: d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=np.zeros((H, W, 4), np.uint8), compat=10),
                 want, re.escape(f"got ({H}, {W}, 4)"))
    expect_error(lambda: d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=good_image().astype(np.float32),
                                                compat=10), "uint8", "float32")
    img = good_image()
    ref_d = crf2d()
    ref_d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)
    ref = np.array(ref_d.inference(2))

    def run(im):
        dd = crf2d()
        dd.addPairwiseBilateral(sxy=80, srgb=13, rgbim=im, compat=10)
        return np.array(dd.inference(2))

    flipped = np.ascontiguousarray(img[::-1])
    either_error_or_same(lambda: run(flipped[::-1]), ref, ["contiguous|stride"], "negative-stride rgbim")
    big = np.zeros((H, 2 * W, 3), np.uint8)
    big[:, ::2] = img
    either_error_or_same(lambda: run(big[:, ::2]), ref, ["contiguous"], "strided rgbim")
    ro = img.copy()
    ro.flags.writeable = False
    either_error_or_same(lambda: run(ro), ref, ["read-only|writ"], "read-only rgbim")


def test_bad_compat():
    d = crf2d()
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat=np.ones(L + 1, np.float32)),
                 f"compat vector must have n_labels = {L} entries", f"got {L + 1}$")
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat=np.ones((L, L + 1), np.float32)),
                 re.escape(f"compat matrix must have shape ({L}, {L})"), re.escape(f"got ({L}, {L + 1})"))
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat=np.ones((L, L, L), np.float32)),
                 "compat must be a scalar, a 1-D vector or a 2-D matrix",
                 re.escape(f"got ndim 3 (shape ({L}, {L}, {L}))"))
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat=math.nan), r"compat", r"finite|nan")
    v = np.ones(L, np.float32)
    v[1] = np.inf
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat=v), r"compat", r"finite|inf")
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat="potts"), r"compat", r"str|potts")


def test_bad_kernel_normalization():
    d = crf2d()
    norms = r"normalization must be NO_NORMALIZATION \(0\), .* or NORMALIZE_SYMMETRIC \(3\)"
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat=3, normalization=7), norms, "got 7$")
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat=3, kernel=9),
                 r"kernel must be CONST_KERNEL \(0\), .* or FULL_KERNEL \(2\)", "got 9$")
    expect_error(lambda: d.addPairwiseGaussian(sxy=3, compat=3, normalization=-1), norms, "got -1$")


@pytest.mark.parametrize("n", [-1, -10])
def test_inference_negative_iterations(n):
    d = crf2d()
    expect_error(lambda: d.inference(n), "iterations must be an integer >= 0", f"got {n}$")


def test_inference_non_integer_iterations():
    d = crf2d()
    expect_error(lambda: d.inference(2.5), "iteration", r"2\.5|float")


def test_add_pairwise_energy_bad_features():
    n = H * W
    d = dcrf.DenseCRF(n, L)
    d.setUnaryEnergy(good_unary(L, n))
    feats = np.random.default_rng(0).normal(size=(3, n)).astype(np.float32)
    expect_error(lambda: d.addPairwiseEnergy(feats[:, :-1].copy(), compat=3),
                 re.escape(f"features must have shape (d, {n})"), re.escape(f"got (3, {n - 1})"))
    expect_error(lambda: d.addPairwiseEnergy(feats[0].copy(), compat=3),
                 re.escape(f"2-D array of shape (d, N) = (d, {n})"), re.escape(f"got shape ({n},)"))
    expect_error(lambda: d.addPairwiseEnergy(np.zeros((0, n), np.float32), compat=3), r"feature",
                 r"\(0, %d\)|d ?= ?0" % n)
    for bad in (np.nan, np.inf):
        f = feats.copy()
        f[1, 2] = bad
        expect_error(lambda: d.addPairwiseEnergy(f, compat=3), r"finite", re.escape(str(bad)))
    expect_error(lambda: d.addPairwiseEnergy(feats.astype(np.int32), compat=3), "float32", "int32")


def test_kl_divergence_and_step_bad():
    d = crf2d()
    d.addPairwiseGaussian(sxy=3, compat=3)
    q = np.full((L + 1, H * W), 1.0 / (L + 1), np.float32)
    expect_error(lambda: d.klDivergence(q), re.escape(f"Q must have shape ({L}, {H * W})"),
                 re.escape(f"got ({L + 1}, {H * W})"))


# ------------------------------------------------------------------------------------------ helpers
def test_unary_from_labels_bad():
    labels = np.random.default_rng(0).integers(0, 3, (H, W))
    for gt in (0.0, 1.0, 1.5, -0.1, math.nan):
        expect_error(lambda: cutils.unary_from_labels(labels, 3, gt_prob=gt), "gt_prob", re.escape(repr(gt)))
    expect_error(lambda: cutils.unary_from_labels(labels, 0, gt_prob=0.7), "n_labels must be an integer >= 2",
                 "got 0$")
    # a label value beyond n_labels
    expect_error(lambda: cutils.unary_from_labels(labels + 5, 3, gt_prob=0.7),
                 re.escape("labels must be in [0, 3] (0 = unsure) for n_labels = 3"), re.escape("got values in [5, 7]"))
    expect_error(lambda: cutils.unary_from_labels(labels - 1, 3, gt_prob=0.7, zero_unsure=False),
                 re.escape("labels must be in [0, 2] for n_labels = 3"), re.escape("got values in [-1, 1]"))


def test_unary_from_softmax_bad():
    p = good_probs()
    expect_error(lambda: cutils.unary_from_softmax(p, scale=1.5), "scale", r"1\.5")
    expect_error(lambda: cutils.unary_from_softmax(p, scale=0.0), re.escape("scale must be in (0, 1]"), r"got 0\.0$")
    bad = p.copy()
    bad[0, 0, 0] = np.nan
    expect_error(lambda: cutils.unary_from_softmax(bad), r"finite|nan")
    expect_error(lambda: cutils.unary_from_softmax(np.zeros((0, H, W), np.float32)), "sm must be a non-empty array",
                 re.escape(f"got shape (0, {H}, {W})"))


def test_create_pairwise_bad():
    expect_error(lambda: cutils.create_pairwise_gaussian(sdims=(3, 0), shape=(H, W)),
                 re.escape("sdims must hold finite numbers > 0"), re.escape("got (3, 0)"))
    expect_error(lambda: cutils.create_pairwise_gaussian(sdims=(3,), shape=(H, W)),
                 re.escape("sdims must have one sigma per dimension of shape (2)"), "got 1$")
    img = good_image()
    expect_error(lambda: cutils.create_pairwise_bilateral(sdims=(3, 3), schan=(13, 13), img=img, chdim=2),
                 re.escape("schan must have one sigma per channel (3 channels)"), "got 2$")
    expect_error(lambda: cutils.create_pairwise_bilateral(sdims=(3, 3), schan=(13, math.nan, 13), img=img, chdim=2),
                 r"schan|sigma", r"nan|finite")
