"""The fast CRF (pyseg.crf) against pydensecrf2 and against the NumPy oracle (pyseg.crf.reference).

Targets: argmax equal on >= 99.9% of pixels and probabilities within PROB_TOL; on crf_examples at least
99.5% of pixels equal to pydensecrf's out*.png. The drop-in API is used exactly as pydensecrf code
uses it (``import pyseg.crf as dcrf``).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import blocky_probs, load_rgb, natural_crop, smooth_image

import pyseg.crf as dcrf
from pyseg.crf import reference as R
from pyseg.crf.params import CRFParams

ARGMAX_MIN = 0.999
# the largest |dQ| measured here on the AVX2 and SSE2 paths (benchmarks/NOTES_tolerances.md), with a margin
PROB_TOL = 5e-5
NORMS = [dcrf.NO_NORMALIZATION, dcrf.NORMALIZE_BEFORE, dcrf.NORMALIZE_AFTER, dcrf.NORMALIZE_SYMMETRIC]


# --------------------------------------------------------------------------------------------- inputs
def random_probs(n_labels: int, h: int, w: int, seed: int = 0, concentration: float = 0.7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n_labels) * concentration, size=h * w).T
    return p.reshape(n_labels, h, w).astype(np.float32)


def compat_of(form: str, n_labels: int, scale: float, seed: int = 0):
    rng = np.random.default_rng(seed + 100)
    if form == "scalar":
        return float(scale)
    if form == "vector":
        return (-scale * rng.uniform(0.5, 1.5, n_labels)).astype(np.float32)
    m = rng.normal(0, scale / 2, (n_labels, n_labels)).astype(np.float32)
    return m - np.eye(n_labels, dtype=np.float32) * scale


def unary_of(probs: np.ndarray) -> np.ndarray:
    return (-np.log(np.clip(probs, 1e-5, 1.0))).reshape(probs.shape[0], -1).astype(np.float32)


def run_2d(module, u, img, gauss, bilat, iterations):
    """The same pydensecrf-style code run with ``module`` = pydensecrf.densecrf or pyseg.crf."""
    h, w = img.shape[:2]
    d = module.DenseCRF2D(w, h, u.shape[0])
    d.setUnaryEnergy(u.copy())
    if gauss is not None:
        sxy, compat, norm = gauss
        d.addPairwiseGaussian(sxy=sxy, compat=compat, kernel=module.DIAG_KERNEL, normalization=norm)
    if bilat is not None:
        sxy, srgb, compat, norm = bilat
        d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=img, compat=compat, kernel=module.DIAG_KERNEL,
                               normalization=norm)
    q = d.inference(iterations)
    return np.array(q)


def oracle_2d(u, img, gauss, bilat, iterations):
    h, w = img.shape[:2]
    terms = []
    if gauss is not None:
        sxy, compat, norm = gauss
        terms.append(R.Pairwise(R.gaussian_features(h, w, sxy), compat, norm))
    if bilat is not None:
        sxy, srgb, compat, norm = bilat
        terms.append(R.Pairwise(R.bilateral_features(img, sxy, srgb), compat, norm))
    return R.meanfield(u, terms, iterations)


def assert_parity(got, ref, what, prob_tol=PROB_TOL, argmax_min=ARGMAX_MIN):
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    assert np.all(np.isfinite(got)), f"{what}: non-finite probabilities"
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    agree = float((got.argmax(0) == ref.argmax(0)).mean())
    assert agree >= argmax_min and diff <= prob_tol, (
        f"{what}: argmax agreement {agree:.5f} (need >= {argmax_min}), max |dQ| {diff:.3g} (need <= {prob_tol})")
    return agree, diff


@pytest.fixture(scope="module")
def pdcrf():
    return pytest.importorskip("pydensecrf.densecrf")


# ------------------------------------------------- drop-in: every normalisation x compat form x iterations
def dropin_case(norm, form):
    """Unary, image and the two kernels (sxy, compat, norm) / (sxy, srgb, compat, norm) of one drop-in case."""
    h, w, n_labels = 36, 52, 5
    img = smooth_image(h, w, seed=3)
    u = unary_of(blocky_probs(n_labels, h, w, seed=1))
    # NO_NORMALIZATION's messages carry the blur gain: keep its weights in the range people use with it
    scale = 0.05 if norm == dcrf.NO_NORMALIZATION else 1.0
    gauss = (3, compat_of(form, n_labels, 3.0 * scale), norm)
    bilat = (20, 13, compat_of(form, n_labels, 5.0 * scale, seed=1), norm)
    return u, img, gauss, bilat


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("form", ["scalar", "vector", "matrix"])
@pytest.mark.parametrize("iterations", [0, 1, 5, 10])
def test_dropin_matches_oracle(norm, form, iterations):
    u, img, gauss, bilat = dropin_case(norm, form)
    got = run_2d(dcrf, u, img, gauss, bilat, iterations)
    assert_parity(got, oracle_2d(u, img, gauss, bilat, iterations), f"pyseg vs oracle (norm {norm}, {form}, "
                                                                        f"{iterations} it)")


@pytest.mark.pydensecrf
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("form", ["scalar", "vector", "matrix"])
@pytest.mark.parametrize("iterations", [0, 1, 5, 10])
def test_dropin_matches_pydensecrf(pdcrf, norm, form, iterations):
    u, img, gauss, bilat = dropin_case(norm, form)
    ref = run_2d(pdcrf, u, img, gauss, bilat, iterations)
    got = run_2d(dcrf, u, img, gauss, bilat, iterations)
    assert_parity(got, ref, f"pyseg vs pydensecrf2 (norm {norm}, {form}, {iterations} it)")


@pytest.mark.pydensecrf
@pytest.mark.parametrize("kernels", ["gaussian", "bilateral", "both"])
@pytest.mark.parametrize("n_labels", [2, 3, 21])
def test_dropin_single_kernels_and_label_counts(pdcrf, kernels, n_labels):
    h, w = 40, 48
    img = smooth_image(h, w, seed=n_labels)
    u = unary_of(random_probs(n_labels, h, w, seed=n_labels))
    gauss = (3, 3.0, dcrf.NORMALIZE_SYMMETRIC) if kernels in ("gaussian", "both") else None
    bilat = (30, 13, 10.0, dcrf.NORMALIZE_SYMMETRIC) if kernels in ("bilateral", "both") else None
    for it in (1, 5):
        ref = run_2d(pdcrf, u, img, gauss, bilat, it)
        got = run_2d(dcrf, u, img, gauss, bilat, it)
        assert_parity(got, ref, f"{kernels}, {n_labels} labels, {it} it")


@pytest.mark.pydensecrf
def test_dropin_anisotropic_sigmas_and_tuples(pdcrf):
    """sxy as (sx, sy) and srgb as (sr, sg, sb), as pydensecrf's examples write them."""
    h, w, n_labels = 30, 44, 4
    img = smooth_image(h, w, seed=9)
    u = unary_of(blocky_probs(n_labels, h, w, seed=9))
    results = []
    for mod in (pdcrf, dcrf):
        d = mod.DenseCRF2D(w, h, n_labels)
        d.setUnaryEnergy(u.copy())
        d.addPairwiseGaussian(sxy=(2, 5), compat=3)
        d.addPairwiseBilateral(sxy=(30, 15), srgb=(10, 20, 13), rgbim=img, compat=8)
        results.append(np.array(d.inference(5)))
    assert_parity(results[1], results[0], "tuple sigmas")


@pytest.mark.pydensecrf
@pytest.mark.data
@pytest.mark.parametrize("preset", ["krahenbuhl", "deeplab"])
@pytest.mark.parametrize("n_labels", [2, 5, 21])
@pytest.mark.parametrize("iterations", [1, 10])
def test_dropin_natural_images(pdcrf, shared_data, preset, n_labels, iterations):
    p = CRFParams.preset(preset)
    img = natural_crop(shared_data, 96, 128, y0=40, x0=60, name=f"im{1 + n_labels % 3}.png")
    u = unary_of(blocky_probs(n_labels, 96, 128, seed=n_labels))
    gauss = (p.gaussian_sxy, p.gaussian_compat, dcrf.NORMALIZE_SYMMETRIC)
    bilat = (p.bilateral_sxy, p.bilateral_srgb, p.bilateral_compat, dcrf.NORMALIZE_SYMMETRIC)
    ref = run_2d(pdcrf, u, img, gauss, bilat, iterations)
    got = run_2d(dcrf, u, img, gauss, bilat, iterations)
    assert_parity(got, ref, f"natural {preset}, {n_labels} labels, {iterations} it")


@pytest.mark.pydensecrf
def test_step_inference_and_kl_like_pydensecrf(pdcrf):
    """The README loop: Q, tmp1, tmp2 = d.startInference(); d.klDivergence(Q); d.stepInference(Q, tmp1, tmp2)."""
    h, w, n_labels = 32, 40, 4
    img = smooth_image(h, w, seed=4)
    u = unary_of(blocky_probs(n_labels, h, w, seed=4))
    runs = []
    for mod in (pdcrf, dcrf):
        d = mod.DenseCRF2D(w, h, n_labels)
        d.setUnaryEnergy(u.copy())
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=40, srgb=13, rgbim=img, compat=10)
        q, tmp1, tmp2 = d.startInference()
        kls, qs = [], []
        for _ in range(5):
            kls.append(d.klDivergence(q))
            d.stepInference(q, tmp1, tmp2)
            qs.append(np.array(q).copy())
        runs.append((np.array(kls), qs, np.array(d.inference(5))))
    (kl_ref, qs_ref, inf_ref), (kl_got, qs_got, inf_got) = runs
    for i, (a, b) in enumerate(zip(qs_got, qs_ref)):
        assert_parity(a, b, f"stepInference {i + 1}")
    assert_parity(inf_got, inf_ref, "inference(5)")
    np.testing.assert_allclose(qs_got[-1], inf_got, atol=1e-5, err_msg="5 steps != inference(5)")
    # the relative KL error measured is in benchmarks/NOTES_tolerances.md
    np.testing.assert_allclose(kl_got, kl_ref, rtol=1e-5, atol=0, err_msg="klDivergence")


@pytest.mark.pydensecrf
@pytest.mark.parametrize("iterations", [0, 5])
def test_generic_densecrf_with_helpers(pdcrf, iterations):
    """DenseCRF(n, L).addPairwiseEnergy with create_pairwise_gaussian / _bilateral features (pydensecrf examples)."""
    import pydensecrf.utils as putils

    from pyseg.crf import utils as sutils

    h, w, n_labels = 30, 38, 3
    img = smooth_image(h, w, seed=6)
    probs = blocky_probs(n_labels, h, w, seed=6)
    out = []
    for mod, ut in ((pdcrf, putils), (dcrf, sutils)):
        d = mod.DenseCRF(h * w, n_labels)
        d.setUnaryEnergy(ut.unary_from_softmax(probs))
        feats = ut.create_pairwise_gaussian(sdims=(3, 3), shape=img.shape[:2])
        d.addPairwiseEnergy(feats, compat=3)
        feats = ut.create_pairwise_bilateral(sdims=(30, 30), schan=(13, 13, 13), img=img, chdim=2)
        d.addPairwiseEnergy(feats, compat=10, kernel=mod.DIAG_KERNEL, normalization=mod.NORMALIZE_SYMMETRIC)
        out.append(np.array(d.inference(iterations)))
    assert_parity(out[1], out[0], f"DenseCRF + helpers, {iterations} it")


def feature_spaces():
    """A 3-D volume (d = 3) and a 4-D point cloud (d = 4), each with its unary (4 labels)."""
    rng = np.random.default_rng(8)
    zz, yy, xx = np.mgrid[0:8, 0:12, 0:14]
    vol = (np.stack([zz, yy, xx]).reshape(3, -1) / 2.0).astype(np.float32)
    pts = (rng.normal(size=(4, 900)) * 2).astype(np.float32)
    return [(f, unary_of(random_probs(4, 1, f.shape[1], seed=f.shape[1]).reshape(4, 1, f.shape[1])))
            for f in (vol, pts)]


def run_generic(module, feats, u, iterations=5):
    d = module.DenseCRF(feats.shape[1], u.shape[0])
    d.setUnaryEnergy(u.copy())
    d.addPairwiseEnergy(feats.copy(), compat=4)
    return np.array(d.inference(iterations))


def test_generic_densecrf_volume_and_points_match_oracle():
    """Any feature space: a 3-D volume and a 4-D point cloud against the NumPy oracle."""
    for feats, u in feature_spaces():
        assert_parity(run_generic(dcrf, feats, u), R.meanfield(u, [R.Pairwise(feats, 4.0)], 5),
                      f"oracle d={feats.shape[0]}")


@pytest.mark.pydensecrf
def test_generic_densecrf_volume_and_points(pdcrf):
    """Any feature space: a 3-D volume (d = 3) and a 4-D point cloud (d = 4) against pydensecrf2."""
    for feats, u in feature_spaces():
        assert_parity(run_generic(dcrf, feats, u), run_generic(pdcrf, feats, u), f"DenseCRF d={feats.shape[0]}")


@pytest.mark.pydensecrf
def test_helpers_equal_pydensecrf_utils():
    import pydensecrf.utils as putils

    from pyseg.crf import utils as sutils

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(7, 9)).transpose(2, 0, 1).astype(np.float32)
    probs[0, 0, 0] = 0.0
    for kw in ({}, {"scale": 0.8}, {"clip": 1e-3}):
        np.testing.assert_allclose(sutils.unary_from_softmax(probs, **kw), putils.unary_from_softmax(probs, **kw),
                                   rtol=1e-6, atol=1e-6)
    labels = rng.integers(0, 5, (7, 9))
    for zero_unsure in (True, False):
        n = 4 if zero_unsure else 5
        a = sutils.unary_from_labels(labels, n, gt_prob=0.7, zero_unsure=zero_unsure)
        b = putils.unary_from_labels(labels, n, gt_prob=0.7, zero_unsure=zero_unsure)
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6)
    img = rng.integers(0, 256, (7, 9, 3)).astype(np.uint8)
    np.testing.assert_allclose(sutils.create_pairwise_gaussian((2, 3), (7, 9)),
                               putils.create_pairwise_gaussian((2, 3), (7, 9)), rtol=1e-6)
    np.testing.assert_allclose(sutils.create_pairwise_bilateral((2, 3), (10, 20, 30), img, chdim=2),
                               putils.create_pairwise_bilateral((2, 3), (10, 20, 30), img, chdim=2), rtol=1e-6)
    vol = rng.integers(0, 256, (4, 5, 6)).astype(np.uint8)
    np.testing.assert_allclose(sutils.create_pairwise_bilateral((1, 2, 3), 10, vol, chdim=-1),
                               putils.create_pairwise_bilateral((1, 2, 3), 10, vol, chdim=-1), rtol=1e-6)


# ------------------------------------------------------------------------ tiny sigmas (int16 overflow)
@pytest.mark.parametrize("sxy,srgb", [(0.01, 13.0), (3.0, 0.001), (1e-4, 1e-4)])
def test_tiny_sigmas_match_oracle(sxy, srgb):
    """pydensecrf's int16 keys overflow (and segfault) here; pyseg must agree with the int64 oracle."""
    h, w, n_labels = 24, 30, 3
    img = smooth_image(h, w, seed=2)
    u = unary_of(blocky_probs(n_labels, h, w, seed=2))
    gauss = (sxy, 3.0, dcrf.NORMALIZE_SYMMETRIC)
    bilat = (sxy, srgb, 10.0, dcrf.NORMALIZE_SYMMETRIC)
    got = run_2d(dcrf, u, img, gauss, bilat, 5)
    assert_parity(got, oracle_2d(u, img, gauss, bilat, 5), f"tiny sigmas sxy={sxy} srgb={srgb}")


# ------------------------------------------------------------------------------------ pyseg dense_crf
@pytest.mark.parametrize("preset", ["krahenbuhl", "deeplab"])
@pytest.mark.parametrize("iterations", [None, 0, 1])
def test_dense_crf_matches_oracle(preset, iterations):
    h, w, n_labels = 40, 56, 6
    img = smooth_image(h, w, seed=5)
    probs = blocky_probs(n_labels, h, w, seed=5)
    p = CRFParams.preset(preset)
    got = dcrf.dense_crf(probs, img, p, iterations=iterations)
    assert isinstance(got, np.ndarray)
    assert_parity(got, R.dense_crf_reference(probs, img, p, iterations), f"dense_crf {preset} it={iterations}")


@pytest.mark.pydensecrf
@pytest.mark.parametrize("params", [None, CRFParams.preset("deeplab"),
                                    CRFParams(2.0, 5.0, 50.0, 8.0, 6.0, 3),
                                    CRFParams(3.0, 0.0, 80.0, 13.0, 10.0, 5),
                                    CRFParams(3.0, 3.0, 80.0, 13.0, 0.0, 5)])
def test_dense_crf_matches_pydensecrf(pdcrf, params):
    """dense_crf(probs, image, params) == the usual pydensecrf recipe (unary_from_softmax, two Potts kernels)."""
    from pydensecrf.utils import unary_from_softmax

    h, w, n_labels = 44, 60, 5
    img = smooth_image(h, w, seed=7)
    probs = blocky_probs(n_labels, h, w, seed=7)
    p = params or CRFParams.preset("krahenbuhl")
    d = pdcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_softmax(probs))
    if p.gaussian_compat != 0:
        d.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
    if p.bilateral_compat != 0:
        d.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=img, compat=p.bilateral_compat)
    ref = np.array(d.inference(p.iterations)).reshape(n_labels, h, w)
    got = dcrf.dense_crf(probs, img, params)
    assert got.shape == (n_labels, h, w)
    agree, diff = assert_parity(got.reshape(n_labels, -1), ref.reshape(n_labels, -1), f"dense_crf {p}")


def test_dense_crf_batch_threads_and_determinism():
    h, w, n_labels, b = 32, 36, 4, 3
    imgs = np.stack([smooth_image(h, w, seed=s) for s in range(b)])
    probs = np.stack([blocky_probs(n_labels, h, w, seed=s) for s in range(b)])
    p = CRFParams.preset("krahenbuhl")
    batch = dcrf.dense_crf(probs, imgs, p)
    assert batch.shape == (b, n_labels, h, w) and batch.dtype == np.float32
    for i in range(b):
        single = dcrf.dense_crf(probs[i], imgs[i], p)
        np.testing.assert_allclose(batch[i], single, atol=1e-6, err_msg=f"batch item {i} != single image")
        assert_parity(single, R.dense_crf_reference(probs[i], imgs[i], p), f"batch item {i} vs oracle")
    one = dcrf.dense_crf(probs, imgs, p, num_threads=1)
    two = dcrf.dense_crf(probs, imgs, p, num_threads=2)
    np.testing.assert_allclose(one, two, atol=1e-6, err_msg="num_threads changes the result")
    np.testing.assert_array_equal(two, dcrf.dense_crf(probs, imgs, p, num_threads=2))  # deterministic
    assert np.all(probs == np.stack([blocky_probs(n_labels, h, w, seed=s) for s in range(b)])), "input modified"


def test_dense_crf_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    h, w, n_labels = 24, 28, 3
    img = smooth_image(h, w, seed=1)
    probs = blocky_probs(n_labels, h, w, seed=1)
    ref = dcrf.dense_crf(probs, img)
    got = dcrf.dense_crf(torch.from_numpy(probs), torch.from_numpy(img))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and tuple(got.shape) == probs.shape
    assert got.device.type == "cpu"
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6)
    gotb = dcrf.dense_crf(torch.from_numpy(probs)[None], torch.from_numpy(img)[None], device="cpu")
    assert tuple(gotb.shape) == (1, *probs.shape)
    np.testing.assert_allclose(gotb[0].numpy(), ref, atol=1e-6)


# ------------------------------------------------------------------------------------- crf_examples
def _decode(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


@pytest.mark.data
@pytest.mark.parametrize("name", ["1", "1-b", "2", "3"])
def test_crf_examples_match_out_png(shared_data, name):
    """pydensecrf's examples/inference.py, run with pyseg; >= 99.5% of pixels as in out*.png."""
    from pyseg.crf.utils import unary_from_labels

    root = shared_data / "crf_examples"
    img = load_rgb(root / f"im{name[0]}.png")
    code = _decode(load_rgb(root / f"anno{name}.png"))
    colors, labels = np.unique(code, return_inverse=True)
    labels = labels.reshape(code.shape)
    has_unk = 0 in colors
    if has_unk:
        colors = colors[1:]
    n_labels = len(colors)
    d = dcrf.DenseCRF2D(img.shape[1], img.shape[0], n_labels)
    d.setUnaryEnergy(unary_from_labels(labels, n_labels, gt_prob=0.7, zero_unsure=has_unk))
    d.addPairwiseGaussian(sxy=(3, 3), compat=3, kernel=dcrf.DIAG_KERNEL, normalization=dcrf.NORMALIZE_SYMMETRIC)
    d.addPairwiseBilateral(sxy=(80, 80), srgb=(13, 13, 13), rgbim=img, compat=10, kernel=dcrf.DIAG_KERNEL,
                           normalization=dcrf.NORMALIZE_SYMMETRIC)
    q = np.array(d.inference(5))
    pred = np.argmax(q, axis=0).reshape(img.shape[:2])
    out = _decode(load_rgb(root / f"out{name}.png"))
    idx = np.searchsorted(colors, out)
    known = (idx < n_labels) & (colors[np.minimum(idx, n_labels - 1)] == out)
    expected = np.where(known, idx, -1)
    agree = float((pred == expected).mean())
    assert agree >= 0.995, f"crf_examples {name}: {agree:.4%} of pixels equal to out{name}.png (need >= 99.5%)"


@pytest.mark.slow
@pytest.mark.pydensecrf
@pytest.mark.data
@pytest.mark.parametrize("preset", ["krahenbuhl", "deeplab"])
def test_dense_crf_camvid_full_image(pdcrf, shared_data, preset):
    """A full 480x360 CamVid frame, 11 classes, probabilities from a blurred, noisy ground truth, 10 iterations."""
    from pydensecrf.utils import unary_from_softmax

    from PIL import Image

    root = shared_data / "camvid"
    name = sorted(p.name for p in (root / "val").glob("*.png"))[0]
    img = load_rgb(root / "val" / name)
    gt = np.asarray(Image.open(root / "valannot" / name))
    h, w = gt.shape
    n_labels = 11
    rng = np.random.default_rng(0)
    onehot = np.stack([(gt == c) for c in range(n_labels)]).astype(np.float64)
    # a coarse, shifted, noisy version of the labels: what a network outputs, roughly
    coarse = onehot[:, ::8, ::8].repeat(8, 1).repeat(8, 2)[:, :h, :w]
    coarse = np.roll(coarse, (5, -7), axis=(1, 2))
    logits = 3.0 * coarse + rng.normal(0, 1.0, coarse.shape)
    probs = np.exp(logits - logits.max(0))
    probs = (probs / probs.sum(0)).astype(np.float32)
    p = CRFParams.preset(preset).replace(iterations=10)
    d = pdcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
    d.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=img, compat=p.bilateral_compat)
    ref = np.array(d.inference(p.iterations))
    got = dcrf.dense_crf(probs, img, p)
    assert_parity(got.reshape(n_labels, -1), ref, f"CamVid {name} {preset}")
    # the CRF should help on this input, as it does for real networks
    valid = gt < n_labels
    acc_before = float((probs.argmax(0) == gt)[valid].mean())
    acc_after = float((got.argmax(0) == gt)[valid].mean())
    assert acc_after > acc_before, f"CRF did not improve pixel accuracy: {acc_before:.4f} -> {acc_after:.4f}"


@pytest.mark.pydensecrf
@pytest.mark.parametrize("n_labels", [2, 4])
def test_dense_crf_hard_labels(pdcrf, n_labels):
    """One-hot probabilities (exact zeros, clipped to 1e-5 as unary_from_softmax does) and a tied pixel."""
    from pydensecrf.utils import unary_from_softmax

    h, w = 30, 40
    img = smooth_image(h, w, seed=12)
    lab = (np.add.outer(np.arange(h) // 7, np.arange(w) // 9)) % n_labels
    probs = (lab[None] == np.arange(n_labels)[:, None, None]).astype(np.float32)
    probs[:, 0, 0] = 1.0 / n_labels  # a pixel with all labels tied
    d = pdcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(unary_from_softmax(probs))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)
    for it in (0, 5):
        ref = np.array(d.inference(it))
        got = dcrf.dense_crf(probs, img, iterations=it)
        assert_parity(got.reshape(n_labels, -1), ref, f"one-hot probs, {it} it")
