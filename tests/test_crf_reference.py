"""The NumPy oracle (pyseg.crf.reference): against pydensecrf2, and against the exact Gaussian filter.

The oracle must reproduce DenseCRF v2.2 (pydensecrf2) to float32 rounding, and its lattice must stay within
the documented bound of the brute-force Gaussian filter it approximates.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import natural_crop, smooth_image

from pyseg.crf import reference as R

# --------------------------------------------------------------------------------------------- inputs


def random_unary(n_labels: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(n_labels) * 0.7, size=n).T
    return (-np.log(np.clip(p, 1e-5, 1.0))).astype(np.float32)


def compat_of(form: str, n_labels: int, scale: float, seed: int = 0):
    rng = np.random.default_rng(seed + 100)
    if form == "scalar":
        return float(scale)
    if form == "vector":
        return (-scale * rng.uniform(0.5, 1.5, n_labels)).astype(np.float32)
    m = rng.normal(0, scale, (n_labels, n_labels)).astype(np.float32)
    m -= np.eye(n_labels, dtype=np.float32) * scale
    return m


def pydensecrf_2d(u, img, gauss, bilat, iterations):
    """pydensecrf2 DenseCRF2D with a Gaussian (sxy, compat, norm) and a bilateral (sxy, srgb, compat, norm)."""
    import pydensecrf.densecrf as dcrf

    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, u.shape[0])
    d.setUnaryEnergy(np.ascontiguousarray(u, dtype=np.float32))
    if gauss is not None:
        sxy, compat, norm = gauss
        d.addPairwiseGaussian(sxy=sxy, compat=compat, normalization=norm)
    if bilat is not None:
        sxy, srgb, compat, norm = bilat
        d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=img, compat=compat, normalization=norm)
    return np.array(d.inference(iterations))


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


NORMS = [R.NO_NORMALIZATION, R.NORMALIZE_BEFORE, R.NORMALIZE_AFTER, R.NORMALIZE_SYMMETRIC]

# NO_NORMALIZATION's messages carry the blur gain (tens to hundreds), so pydensecrf's float32 rounding of
# the logits shows up as ~1e-4 in the probabilities; the normalised forms agree to ~2e-7.
TOL = {R.NO_NORMALIZATION: 5e-4, R.NORMALIZE_BEFORE: 1e-5, R.NORMALIZE_AFTER: 1e-5, R.NORMALIZE_SYMMETRIC: 1e-5}


# --------------------------------------------------------------------------------- oracle vs pydensecrf
@pytest.mark.pydensecrf
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("form", ["scalar", "vector", "matrix"])
@pytest.mark.parametrize("iterations", [0, 1, 5])
def test_oracle_matches_pydensecrf_synthetic(norm, form, iterations):
    h, w, n_labels = 36, 48, 4
    img = smooth_image(h, w, seed=1)
    u = random_unary(n_labels, h * w, seed=2)
    gauss = (3, compat_of(form, n_labels, 3.0), norm)
    bilat = (10, 13, compat_of(form, n_labels, 5.0, seed=1), norm)
    ref = pydensecrf_2d(u, img, gauss, bilat, iterations)
    got = oracle_2d(u, img, gauss, bilat, iterations)
    assert got.shape == ref.shape
    err = np.abs(got - ref).max()
    assert err <= TOL[norm], f"oracle vs pydensecrf2: max |dQ| = {err:.3g} > {TOL[norm]:.1g}"
    assert np.array_equal(got.argmax(0), ref.argmax(0))


@pytest.mark.pydensecrf
@pytest.mark.data
@pytest.mark.parametrize("preset", ["krahenbuhl", "deeplab"])
@pytest.mark.parametrize("n_labels", [2, 7])
def test_oracle_matches_pydensecrf_natural(shared_data, preset, n_labels):
    from pyseg.crf.params import CRFParams

    p = CRFParams.preset(preset)
    img = natural_crop(shared_data, 40, 56, y0=100, x0=150, name="im2.png")
    u = random_unary(n_labels, img.shape[0] * img.shape[1], seed=n_labels)
    gauss = (p.gaussian_sxy, p.gaussian_compat, R.NORMALIZE_SYMMETRIC)
    bilat = (p.bilateral_sxy, p.bilateral_srgb, p.bilateral_compat, R.NORMALIZE_SYMMETRIC)
    ref = pydensecrf_2d(u, img, gauss, bilat, p.iterations)
    got = oracle_2d(u, img, gauss, bilat, p.iterations)
    err = np.abs(got - ref).max()
    # 10 DeepLab iterations compound pydensecrf's float32 rounding a little (measured 1.2e-5)
    assert err <= 3e-5, f"oracle vs pydensecrf2 on a natural crop ({preset}): max |dQ| = {err:.3g}"
    # dense_crf_reference is the same computation from probabilities
    probs = np.exp(-u.astype(np.float64)).reshape(n_labels, *img.shape[:2]).astype(np.float32)
    q = R.dense_crf_reference(probs, img, p)
    assert np.abs(q.reshape(n_labels, -1) - ref).max() <= 3e-5


def _recover_filter_via_pydensecrf(features, x, norm=R.NO_NORMALIZATION, w=0.01):
    """pydensecrf's raw lattice filter K x of a (N,) vector x in [-1, 1], read back from one mean-field step.

    Two labels, Q0 = ((1 + x) / 2, (1 - x) / 2), Potts weight w: log(Q1_0 / Q1_1) = (U_1 - U_0) + w K x.
    """
    import pydensecrf.densecrf as dcrf

    n = features.shape[1]
    q0 = np.stack([(1 + x) / 2, (1 - x) / 2])
    u = (-np.log(q0)).astype(np.float32)
    d = dcrf.DenseCRF(n, 2)
    d.setUnaryEnergy(u)
    d.addPairwiseEnergy(np.ascontiguousarray(features, dtype=np.float32), compat=w, normalization=norm)
    q1 = np.array(d.inference(1)).astype(np.float64)
    return (np.log(q1[0] / q1[1]) - (u[1].astype(np.float64) - u[0])) / w


@pytest.mark.pydensecrf
@pytest.mark.parametrize("kind", ["gauss2d", "bilateral", "volume3d", "points4d"])
def test_lattice_filter_matches_pydensecrf(kind):
    """The raw (unnormalised) lattice filter itself, alpha and blur gain included."""
    rng = np.random.default_rng(5)
    if kind == "gauss2d":
        f = R.gaussian_features(20, 30, 2.5)
    elif kind == "bilateral":
        f = R.bilateral_features(smooth_image(20, 30, seed=3), 7, 15)
    elif kind == "volume3d":
        zz, yy, xx = np.mgrid[0:6, 0:10, 0:12]
        f = (np.stack([zz, yy, xx]).reshape(3, -1) / np.array([[1.5], [2.0], [2.0]])).astype(np.float32)
    else:
        f = (rng.normal(size=(4, 500)) * 1.5).astype(np.float32)
    x = rng.uniform(-0.9, 0.9, f.shape[1])
    got = R.lattice_filter(f, x[None, :])[0]
    ref = _recover_filter_via_pydensecrf(f, x)
    scale = np.abs(ref).max()
    err = np.abs(got - ref).max() / scale
    assert err < 1e-4, f"lattice filter vs pydensecrf2 ({kind}): relative error {err:.3g}"


# ------------------------------------------------------------------------------------ lattice structure
def test_lattice_structure():
    f = R.bilateral_features(smooth_image(16, 20), 5, 10)
    lat = R.Lattice(f)
    d = f.shape[0]
    np.testing.assert_allclose(lat.weight.sum(1), 1.0, atol=1e-5)
    assert lat.weight.min() >= -1e-6
    assert lat.keys.shape == (lat.m, d) and len(np.unique(lat.keys, axis=0)) == lat.m
    # every pixel's d+1 simplex corners are distinct vertices
    assert all(len(set(row)) == d + 1 for row in lat.offset.tolist())
    # full lattice coordinates (with the last = -sum) are multiples-of-nothing but sum to 0 and are
    # consistent: a vertex's remainder (all coordinates congruent mod d+1)
    full = np.concatenate([lat.keys, -lat.keys.sum(1, keepdims=True)], 1)
    assert np.all((full - full[:, :1]) % (d + 1) == 0)
    # neighbours are mutual: n2 of n1 is the vertex itself
    for j in range(d + 1):
        n1, n2 = lat.neighbors[j, :, 0], lat.neighbors[j, :, 1]
        has = n1 >= 0
        assert np.array_equal(lat.neighbors[j, n1[has], 1], np.flatnonzero(has))
        has2 = n2 >= 0
        assert np.array_equal(lat.neighbors[j, n2[has2], 0], np.flatnonzero(has2))


def test_lattice_rejects_bad_features():
    with pytest.raises(ValueError, match="finite"):
        R.Lattice(np.array([[0.0, np.nan]], dtype=np.float32))
    with pytest.raises(ValueError, match="too large"):
        R.Lattice(np.array([[0.0, 1e30]], dtype=np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        R.Lattice(np.zeros((2, 0), dtype=np.float32))


def test_compat_forms():
    assert np.array_equal(R.compat_matrix(2.0, 3), -2.0 * np.eye(3))
    assert np.array_equal(R.compat_matrix(np.array([1.0, 2.0, 3.0]), 3), np.diag([1.0, 2.0, 3.0]))
    m = np.arange(9.0).reshape(3, 3)
    assert np.array_equal(R.compat_matrix(m, 3), (m + m.T) / 2)
    with pytest.raises(ValueError):
        R.compat_matrix(np.ones(4), 3)


# ------------------------------------------------------------------------------ lattice vs exact filter
def _exact_cases(natural=None):
    rng = np.random.default_rng(11)
    for h, w in [(18, 24), (30, 40)]:
        imgs = [("smooth", smooth_image(h, w, seed=h)),
                ("noise", rng.integers(0, 256, (h, w, 3)).astype(np.uint8))]
        if natural is not None:
            imgs.append(("natural", np.ascontiguousarray(natural[:h, :w])))
        for name, img in imgs:
            yield f"{name}{h}x{w}-g3", R.gaussian_features(h, w, 3), True
            yield f"{name}{h}x{w}-g1", R.gaussian_features(h, w, 1), True
            yield f"{name}{h}x{w}-b80_13", R.bilateral_features(img, 80, 13), False
            yield f"{name}{h}x{w}-b67_3", R.bilateral_features(img, 67, 3), False
            yield f"{name}{h}x{w}-b5_10", R.bilateral_features(img, 5, 10), False
    for d in (1, 2, 3, 5):
        yield f"random-d{d}", (rng.normal(size=(d, 600)) * 2).astype(np.float32), False


def _normalized_errors(f, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.dirichlet(np.ones(4), size=f.shape[1]).T
    lat = R.Lattice(f)
    ones = np.ones((1, f.shape[1]))
    got = lat.filter(q) / lat.filter(ones)
    k = R.exact_kernel(f, include_self=True)
    exact = (q @ k.T) / k.sum(1)
    gain = lat.filter(ones)[0] / k.sum(1)
    return np.abs(got - exact), gain


def _check_exact_bounds(natural):
    worst_max = worst_mean = 0.0
    for name, f, grid in _exact_cases(natural):
        err, gain = _normalized_errors(f)
        worst_max, worst_mean = max(worst_max, err.max()), max(worst_mean, err.mean())
        assert err.max() <= R.LATTICE_NORMALIZED_MAX_ABS_ERROR, f"{name}: max error {err.max():.3f}"
        assert err.mean() <= R.LATTICE_NORMALIZED_MEAN_ABS_ERROR, f"{name}: mean error {err.mean():.4f}"
        if grid:  # the Gaussian kernel on a pixel grid: the lattice's dense regime
            bound_max = R.LATTICE_GRID_MAX_ABS_ERROR if "g3" in name else R.LATTICE_NORMALIZED_MAX_ABS_ERROR
            assert err.max() <= bound_max, f"{name}: max error {err.max():.4f} > {bound_max}"
            if "g3" in name:
                assert err.mean() <= R.LATTICE_GRID_MEAN_ABS_ERROR, f"{name}: mean error {err.mean():.4f}"
            assert 0.7 <= gain.min() and gain.max() <= 1.0, f"{name}: gain {gain.min():.2f}..{gain.max():.2f}"
    # the bounds are not vacuous: they sit within ~2x of the worst case actually met
    assert worst_max >= R.LATTICE_NORMALIZED_MAX_ABS_ERROR / 3
    assert worst_mean >= R.LATTICE_NORMALIZED_MEAN_ABS_ERROR / 3


@pytest.mark.slow
def test_lattice_within_bound_of_exact_filter():
    _check_exact_bounds(None)


@pytest.mark.slow
@pytest.mark.data
def test_lattice_within_bound_of_exact_filter_natural(shared_data):
    _check_exact_bounds(natural_crop(shared_data, 30, 40, y0=100, x0=150))


def test_grid_bound_catches_broken_lattices():
    """The tight bound of the Gaussian grid regime fails for a lattice with a wrong scale or a missing axis."""
    f = R.gaussian_features(24, 32, 3)
    err, _ = _normalized_errors(f)
    assert err.max() <= R.LATTICE_GRID_MAX_ABS_ERROR and err.mean() <= R.LATTICE_GRID_MEAN_ABS_ERROR
    rng = np.random.default_rng(0)
    q = rng.dirichlet(np.ones(4), size=f.shape[1]).T
    k = R.exact_kernel(f)
    exact = (q @ k.T) / k.sum(1)
    ones = np.ones((1, f.shape[1]))
    wrong_scale = R.Lattice(f * 2)
    broken_axis = R.Lattice(f)
    broken_axis.neighbors[0][:] = -1
    for lat in (wrong_scale, broken_axis):
        e = np.abs(lat.filter(q) / lat.filter(ones) - exact)
        assert e.max() > R.LATTICE_GRID_MAX_ABS_ERROR or e.mean() > R.LATTICE_GRID_MEAN_ABS_ERROR


def test_exact_filter_self_term():
    f = np.array([[0.0, 1.0, 10.0]], dtype=np.float32)
    v = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(R.exact_filter(f, v, include_self=True)[0],
                               [1 + 2 * np.exp(-0.5) + 3 * np.exp(-50), np.exp(-0.5) + 2 + 3 * np.exp(-40.5),
                                np.exp(-50) + 2 * np.exp(-40.5) + 3])
    np.testing.assert_allclose(R.exact_filter(f, v, include_self=False)[0],
                               [2 * np.exp(-0.5) + 3 * np.exp(-50), np.exp(-0.5) + 3 * np.exp(-40.5),
                                np.exp(-50) + 2 * np.exp(-40.5)])


@pytest.mark.slow
@pytest.mark.parametrize("preset", [(3, 3, 80, 13, 10), (1, 3, 67, 3, 4)])
@pytest.mark.parametrize("n_labels", [3, 5])
def test_meanfield_within_bound_of_exact(preset, n_labels):
    h, w = 24, 32
    gs, gc, bs, br, bc = preset
    rng = np.random.default_rng(n_labels)
    img = smooth_image(h, w, seed=n_labels)
    lab = np.mgrid[0:h, 0:w][1] * n_labels // w
    p = np.full((n_labels, h * w), 0.3 / (n_labels - 1))
    p[lab.reshape(-1), np.arange(h * w)] = 0.7
    p = 0.5 * p + 0.5 * rng.dirichlet(np.ones(n_labels), size=h * w).T
    u = (-np.log(p)).astype(np.float32)
    terms = [R.Pairwise(R.gaussian_features(h, w, gs), gc), R.Pairwise(R.bilateral_features(img, bs, br), bc)]
    q1, e1 = R.meanfield(u, terms, 1), R.meanfield_exact(u, terms, 1)
    assert np.abs(q1 - e1).max() <= R.LATTICE_MEANFIELD_MAX_ABS_ERROR
    assert np.abs(q1 - e1).mean() <= R.LATTICE_MEANFIELD_MEAN_ABS_ERROR
    assert (q1.argmax(0) == e1.argmax(0)).mean() >= R.LATTICE_MEANFIELD_MIN_ARGMAX_AGREEMENT
    q5, e5 = R.meanfield(u, terms, 5), R.meanfield_exact(u, terms, 5)
    assert (q5.argmax(0) == e5.argmax(0)).mean() >= R.LATTICE_MEANFIELD_MIN_ARGMAX_AGREEMENT_5IT
