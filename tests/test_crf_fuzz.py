"""Property-based fuzzing of pyseg.crf (hypothesis): random shapes, dtypes and values.

Property: every call either raises a clean ValueError / TypeError, or returns finite float32 probabilities of
the right shape that sum to 1 per pixel. A crash, a hang, another exception type, NaN output or a wrong shape
fails. Bounded for CI: small sizes, a fixed number of examples, derandomized.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pyseg.crf as dcrf  # noqa: E402
from pyseg.crf import utils as cutils  # noqa: E402
from pyseg.crf.params import CRFParams  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLEAN = (ValueError, TypeError)
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_]

sizes = st.integers(0, 9)
special = st.sampled_from([0.0, 1.0, -1.0, 0.5, np.nan, np.inf, -np.inf, 1e-30, 1e30, -0.0])


def check_probs(out, shape):
    out = np.asarray(out)
    assert out.shape == tuple(shape), f"shape {out.shape}, expected {tuple(shape)}"
    assert out.dtype == np.float32, f"dtype {out.dtype}"
    assert np.all(np.isfinite(out)), "non-finite probabilities"
    assert np.all(out >= 0)
    if out.size:
        np.testing.assert_allclose(out.sum(axis=-3 if len(shape) >= 3 else 0), 1.0, atol=1e-4)


@st.composite
def arrays(draw, shape, dtype, kind="probs"):
    """An array of ``shape``/``dtype``: normalised probabilities, random values or with special values."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    mode = draw(st.sampled_from(["good", "good", "random", "special"]))
    n = int(np.prod(shape)) if len(shape) else 1
    if kind == "probs":
        if mode == "good" and len(shape) >= 3 and shape[-3] > 0:
            a = rng.dirichlet(np.ones(shape[-3]), size=tuple(shape[:-3]) + tuple(shape[-2:]))
            a = np.moveaxis(a, -1, -3)
        else:
            a = rng.uniform(-0.5, 1.5, shape)
    else:  # images / unaries / features
        a = rng.uniform(0, 255, shape) if kind == "image" else rng.normal(0, 3, shape)
    a = np.asarray(a, dtype=np.float64).reshape(shape)
    if mode == "special" and n > 0:
        flat = a.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, n - 1))] = draw(special)
    with np.errstate(all="ignore"):
        out = a.astype(dtype)
    layout = draw(st.sampled_from(["c", "c", "c", "fortran", "reversed", "strided"]))
    if layout == "fortran":
        out = np.asfortranarray(out)
    elif layout == "reversed" and out.ndim:
        out = np.ascontiguousarray(out[..., ::-1])[..., ::-1]
    elif layout == "strided" and out.ndim:
        big = np.zeros(out.shape[:-1] + (out.shape[-1] * 2,), dtype=out.dtype)
        big[..., ::2] = out
        out = big[..., ::2]
    return out


@st.composite
def dense_crf_inputs(draw):
    batch = draw(st.sampled_from([None, None, 1, 2]))
    n_labels, h, w = draw(st.integers(0, 5)), draw(sizes), draw(sizes)
    if draw(st.integers(0, 9)) == 0:  # occasionally a wrong rank or mismatched image
        h2, w2 = draw(sizes), draw(sizes)
    else:
        h2, w2 = h, w
    pshape = (n_labels, h, w) if batch is None else (batch, n_labels, h, w)
    ishape = (h2, w2, draw(st.sampled_from([3, 3, 3, 1, 4]))) if batch is None else (batch, h2, w2, 3)
    probs = draw(arrays(pshape, draw(st.sampled_from([np.float32] * 4 + DTYPES))))
    image = draw(arrays(ishape, draw(st.sampled_from([np.uint8] * 4 + DTYPES)), kind="image"))
    return probs, image, pshape


@st.composite
def params_or_none(draw):
    if draw(st.booleans()):
        return None
    pos = st.one_of(st.floats(1e-3, 200.0), st.sampled_from([1e-30, 1e-6, 1e6]))
    return CRFParams(draw(pos), draw(st.floats(-5, 20)), draw(pos), draw(pos), draw(st.floats(-5, 20)),
                     draw(st.integers(0, 4)))


@FUZZ
@given(dense_crf_inputs(), params_or_none(), st.sampled_from([None, 0, 1, 3, -1, 2.5]),
       st.sampled_from([None, 1, 2]))
def test_fuzz_dense_crf(inputs, params, iterations, threads):
    probs, image, pshape = inputs
    try:
        out = dcrf.dense_crf(probs, image, params, iterations=iterations, num_threads=threads)
    except CLEAN:
        return
    check_probs(out, pshape)


@FUZZ
@given(st.integers(-1, 7), st.integers(-1, 7), st.integers(-1, 5), st.data())
def test_fuzz_densecrf2d(w, h, n_labels, data):
    try:
        d = dcrf.DenseCRF2D(w, h, n_labels)
    except CLEAN:
        return
    n = w * h
    ushape = data.draw(st.sampled_from([(n_labels, n), (n_labels, n), (n_labels, n + 1), (n_labels + 1, n), (n,)]))
    u = data.draw(arrays(ushape, data.draw(st.sampled_from([np.float32] * 4 + DTYPES)), kind="unary"))
    ops = data.draw(st.lists(st.sampled_from(["gauss", "bilateral"]), max_size=3))
    sig = st.one_of(st.floats(1e-3, 100.0), st.sampled_from([0.0, -1.0, np.nan, np.inf, 1e-30]))
    compat = st.one_of(st.floats(-10, 10), st.sampled_from([np.nan, "x"]),
                       st.just(np.linspace(-1, 1, max(n_labels, 0), dtype=np.float32)),
                       st.just(np.eye(max(n_labels, 0), dtype=np.float32) * -2))
    norm = st.sampled_from([0, 1, 2, 3, 3, 3, 4, -1])
    iters = data.draw(st.sampled_from([0, 1, 3, -1]))
    try:
        d.setUnaryEnergy(u)
        for op in ops:
            if op == "gauss":
                d.addPairwiseGaussian(sxy=data.draw(sig), compat=data.draw(compat), normalization=data.draw(norm))
            else:
                img = data.draw(arrays((h, w, 3), data.draw(st.sampled_from([np.uint8] * 4 + DTYPES)),
                                       kind="image"))
                d.addPairwiseBilateral(sxy=data.draw(sig), srgb=data.draw(sig), rgbim=img,
                                       compat=data.draw(compat), normalization=data.draw(norm))
        q = d.inference(iters)
    except CLEAN:
        return
    check_probs(q, (n_labels, n))


@FUZZ
@given(st.integers(0, 60), st.integers(0, 4), st.integers(0, 6), st.data())
def test_fuzz_densecrf_features(n, n_labels, dim, data):
    try:
        d = dcrf.DenseCRF(n, n_labels)
    except CLEAN:
        return
    fshape = data.draw(st.sampled_from([(dim, n), (dim, n), (dim, max(n - 1, 0)), (n,)]))
    feats = data.draw(arrays(fshape, data.draw(st.sampled_from([np.float32] * 4 + DTYPES)), kind="features"))
    scale = data.draw(st.sampled_from([1.0, 1.0, 1e-3, 1e3, 1e8]))
    with np.errstate(all="ignore"):
        feats = (feats * scale).astype(feats.dtype) if feats.dtype.kind == "f" else feats
    u = data.draw(arrays((n_labels, n), np.float32, kind="unary"))
    try:
        d.setUnaryEnergy(u)
        d.addPairwiseEnergy(feats, compat=data.draw(st.floats(-10, 10)),
                            normalization=data.draw(st.sampled_from([0, 1, 2, 3])))
        q, tmp1, tmp2 = d.startInference()
        for _ in range(data.draw(st.integers(0, 2))):
            d.stepInference(q, tmp1, tmp2)
        kl = d.klDivergence(q)
        q2 = d.inference(data.draw(st.integers(0, 3)))
    except CLEAN:
        return
    assert np.isfinite(kl)
    check_probs(q, (n_labels, n))
    check_probs(q2, (n_labels, n))


@FUZZ
@given(st.integers(0, 5), st.integers(0, 6), st.integers(0, 6), st.data())
def test_fuzz_helpers(n_labels, h, w, data):
    probs = data.draw(arrays((n_labels, h, w), data.draw(st.sampled_from(DTYPES))))
    scale = data.draw(st.sampled_from([None, None, 0.5, 1.0, 0.0, 2.0]))
    try:
        u = cutils.unary_from_softmax(probs, scale=scale)
    except CLEAN:
        pass
    else:
        assert u.dtype == np.float32 and u.shape == (n_labels, h * w)
        assert np.all(np.isfinite(u)) or not np.all(np.isfinite(probs))
    labels = data.draw(arrays((h, w), data.draw(st.sampled_from([np.int64, np.int32, np.uint8, np.float32])),
                              kind="features"))
    gt = data.draw(st.sampled_from([0.7, 0.5, 0.0, 1.0, np.nan]))
    try:
        u = cutils.unary_from_labels(labels, n_labels, gt_prob=gt, zero_unsure=data.draw(st.booleans()))
    except CLEAN:
        pass
    else:
        assert u.dtype == np.float32 and u.shape == (n_labels, h * w) and np.all(np.isfinite(u))
    sd = data.draw(st.lists(st.sampled_from([1.0, 3.0, 0.0, -1.0, np.nan]), min_size=0, max_size=3))
    try:
        f = cutils.create_pairwise_gaussian(sd, (h, w))
    except CLEAN:
        pass
    else:
        assert f.dtype == np.float32 and f.shape == (2, h * w) and np.all(np.isfinite(f))
    img = data.draw(arrays((h, w, 3), data.draw(st.sampled_from([np.uint8, np.float32, np.int64])), kind="image"))
    try:
        f = cutils.create_pairwise_bilateral(sd, data.draw(st.sampled_from([13.0, (1.0, 2.0, 3.0), 0.0])), img,
                                             chdim=2)
    except CLEAN:
        pass
    else:
        assert f.dtype == np.float32 and f.shape == (5, h * w) and np.all(np.isfinite(f))
