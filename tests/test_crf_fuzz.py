"""Property-based fuzzing of pyseg.crf (hypothesis): random shapes, dtypes, values and memory layouts.

Property: every call either raises a clean ValueError / TypeError, or returns finite float32 probabilities of
the right shape that sum to 1 per pixel. A crash, a hang, another exception type, NaN output or a wrong shape
fails; so does rejecting a well-formed input. Each case is a valid input (about a third of the cases) or a
valid input with one thing broken, so that both sides of the property are exercised (see
``--hypothesis-show-statistics``). Bounded for CI: small sizes, 200 examples, derandomized.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import pyseg.crf as dcrf  # noqa: E402
from pyseg.crf import utils as cutils  # noqa: E402
from pyseg.crf.params import CRFParams  # noqa: E402

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLEAN = (ValueError, TypeError)
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_]
SPECIAL = st.sampled_from([-1.0, -0.0, np.nan, np.inf, -np.inf, 1e-30, 1e30, 2.0])


def check_probs(out, shape):
    out = np.asarray(out)
    assert out.shape == tuple(shape), f"shape {out.shape}, expected {tuple(shape)}"
    assert out.dtype == np.float32, f"dtype {out.dtype}"
    assert np.all(np.isfinite(out)), "non-finite probabilities"
    assert np.all(out >= 0)
    if out.size:
        np.testing.assert_allclose(out.sum(axis=-3 if len(shape) == 4 else 0), 1.0, atol=1e-4)


def outcome(mutation, error=None):
    """Record what happened; a well-formed input ("none") must not be rejected."""
    if error is None:
        event(f"result ({mutation})")
        return
    event(f"clean {type(error).__name__} ({mutation})")
    assert mutation != "none", f"well-formed input rejected: {type(error).__name__}: {error}"


@st.composite
def arrays(draw, shape, dtype, kind="probs", mode="good"):
    """An array: normalised probabilities / image values / normal values ("good"), random values in
    [-0.5, 1.5] ("random") or good values with a few special ones (NaN, inf, negative, huge, "special").

    The memory layout is drawn too (C, Fortran, reversed, strided): layout must not change a result.
    """
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    n = int(np.prod(shape))
    if kind == "probs" and mode != "random":
        if len(shape) >= 3 and shape[-3] > 0:
            a = np.moveaxis(rng.dirichlet(np.ones(shape[-3]), size=tuple(shape[:-3]) + tuple(shape[-2:])), -1, -3)
        else:
            a = rng.uniform(0, 1, shape)
    elif kind == "probs":
        a = rng.uniform(-0.5, 1.5, shape)
    elif kind == "image":
        a = rng.integers(0, 256, shape)
    else:
        a = rng.normal(0, 3, shape)
    a = np.array(a, dtype=np.float64).reshape(shape)
    if mode == "special" and n > 0:
        flat = a.reshape(-1)
        for _ in range(draw(st.integers(1, 3))):
            flat[draw(st.integers(0, n - 1))] = draw(SPECIAL)
    with np.errstate(all="ignore"):
        out = a.astype(dtype)
    layout = draw(st.sampled_from(["c", "c", "fortran", "reversed", "strided"]))
    if layout == "fortran":
        out = np.asfortranarray(out)
    elif layout == "reversed" and out.ndim:
        out = np.ascontiguousarray(out[..., ::-1])[..., ::-1]
    elif layout == "strided" and out.ndim:
        big = np.zeros(out.shape[:-1] + (out.shape[-1] * 2,), dtype=out.dtype)
        big[..., ::2] = out
        out = big[..., ::2]
    return out


# dtypes that are never valid probabilities / energies / features (float16 and float64 may be converted)
BROKEN_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.complex64]
BROKEN_IMAGE_DTYPES = [np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_]


# ------------------------------------------------------------------------------------------ dense_crf
@st.composite
def dense_crf_case(draw):
    mutation = draw(st.sampled_from(["none"] * 5 + ["probs_dtype", "image_dtype", "probs_values", "image_values",
                                                    "size", "channels", "empty", "sigma", "iterations"]))
    batch = draw(st.sampled_from([None, None, 1, 2]))
    n_labels, h, w = draw(st.integers(1, 5)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    if mutation == "empty":
        which = draw(st.sampled_from(["l", "h", "w", "b"] if batch else ["l", "h", "w"]))
        n_labels, h, w = (0 if which == "l" else n_labels), (0 if which == "h" else h), (0 if which == "w" else w)
        batch = 0 if which == "b" else batch
    h2, w2, ch, b2 = h, w, 3, batch
    if mutation == "size":
        h2, w2 = draw(st.integers(0, 9)), draw(st.integers(0, 9))
        b2 = None if batch is None else draw(st.integers(0, 3))
        if (h2, w2, b2) == (h, w, batch):
            h2 += 1
    if mutation == "channels":
        ch = draw(st.sampled_from([1, 4]))
    pshape = (n_labels, h, w) if batch is None else (batch, n_labels, h, w)
    ishape = (h2, w2, ch) if b2 is None else (b2, h2, w2, ch)
    pdtype = draw(st.sampled_from(BROKEN_DTYPES)) if mutation == "probs_dtype" else np.float32
    idtype = draw(st.sampled_from(BROKEN_IMAGE_DTYPES)) if mutation == "image_dtype" else np.uint8
    probs = draw(arrays(pshape, pdtype, mode=draw(st.sampled_from(["random", "special"]))
                        if mutation == "probs_values" else "good"))
    image = draw(arrays(ishape, idtype, kind="image", mode="special" if mutation == "image_values" else "good"))
    pos = st.floats(0.05, 200.0)
    sig = [draw(pos), draw(pos), draw(pos)]
    if mutation == "sigma":  # CRFParams accepts these; the lattice may not (int keys' range)
        sig[draw(st.integers(0, 2))] = draw(st.sampled_from([1e-30, 1e-9, 1e-6, 1e6, 1e30]))
    params = None if draw(st.booleans()) else CRFParams(sig[0], draw(st.floats(-5, 20)), sig[1], sig[2],
                                                        draw(st.floats(-5, 20)), draw(st.integers(0, 4)))
    iterations = draw(st.sampled_from([None, 0, 1, 3]))
    if mutation == "iterations":
        iterations = draw(st.sampled_from([-1, -7, 2.5, "3", [1]]))
    return probs, image, params, iterations, pshape, mutation


@FUZZ
@given(dense_crf_case(), st.sampled_from([None, 1, 2]))
def test_fuzz_dense_crf(case, threads):
    probs, image, params, iterations, pshape, mutation = case
    try:
        out = dcrf.dense_crf(probs, image, params, iterations=iterations, num_threads=threads)
    except CLEAN as e:
        return outcome(mutation, e)
    outcome(mutation)
    assert mutation not in ("probs_dtype", "image_dtype", "empty", "size", "channels", "iterations"), \
        f"accepted a broken input ({mutation})"
    check_probs(out, pshape)


# ------------------------------------------------------------------------------------------ DenseCRF2D
@st.composite
def densecrf2d_case(draw):
    mutation = draw(st.sampled_from(["none"] * 5 + ["size", "unary_shape", "unary_dtype", "unary_values",
                                                    "sigma", "compat", "normalization", "image", "iterations"]))
    w, h, n_labels = draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.integers(1, 5))
    if mutation == "size":
        which = draw(st.sampled_from([0, 1, 2]))
        bad = draw(st.sampled_from([0, -1, 2.5]))
        w, h, n_labels = [bad if i == which else v for i, v in enumerate((w, h, n_labels))]
    ok_hw = isinstance(w, int) and isinstance(h, int) and w >= 0 and h >= 0  # arrays of these shapes can exist
    n = w * h if ok_hw else 1
    ushape = (n_labels if isinstance(n_labels, int) else 1, n)
    if mutation == "unary_shape":
        ushape = draw(st.sampled_from([(ushape[0], n + 1), (ushape[0] + 1, n), (n,), (ushape[0], n, 1)]))
    u = draw(arrays(ushape, draw(st.sampled_from(BROKEN_DTYPES)) if mutation == "unary_dtype" else np.float32,
                    kind="unary", mode="special" if mutation == "unary_values" else "good"))
    terms = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["gauss", "bilateral"]))
        sxy = draw(st.one_of(st.floats(0.05, 100.0), st.tuples(st.floats(0.05, 100.0), st.floats(0.05, 100.0))))
        srgb = draw(st.one_of(st.floats(0.5, 100.0), st.tuples(*[st.floats(0.5, 100.0)] * 3)))
        compat = draw(st.sampled_from(["scalar", "vector", "matrix"]))
        c = draw(st.floats(-10, 10))
        if isinstance(n_labels, int) and n_labels > 0:
            compat = {"scalar": c, "vector": np.full(n_labels, c, np.float32),
                      "matrix": (np.eye(n_labels) * c + 0.1).astype(np.float32)}[compat]
        else:
            compat = c
        norm = draw(st.sampled_from([0, 1, 2, 3]))
        img = draw(arrays((h, w, 3) if ok_hw else (1, 1, 3), np.uint8,
                          kind="image"))
        terms.append([kind, sxy, srgb, img, compat, norm])
    if mutation in ("sigma", "compat", "normalization", "image"):
        if not terms:
            terms.append(["bilateral", 3.0, 13.0, None, 3.0, 3])
            terms[0][3] = draw(arrays((h, w, 3), np.uint8, kind="image"))
        t = terms[draw(st.integers(0, len(terms) - 1))]
        if mutation == "sigma":
            t[1 if t[0] == "gauss" or draw(st.booleans()) else 2] = draw(
                st.sampled_from([0.0, -1.0, np.nan, np.inf, (3.0, 0.0), (1.0, 2.0, 3.0, 4.0)]))
        elif mutation == "compat":
            t[4] = draw(st.sampled_from([np.nan, np.inf, "x", None, np.ones(n_labels + 1, np.float32),
                                         np.ones((n_labels, n_labels, 1), np.float32)]))
        elif mutation == "normalization":
            t[5] = draw(st.sampled_from([-1, 4, 99]))
        else:
            t[0] = "bilateral"
            t[3] = draw(st.sampled_from([
                np.zeros((h + 1, w, 3), np.uint8), np.zeros((h, w, 4), np.uint8), np.zeros((h, w), np.uint8),
                np.zeros((h, w, 3), np.float32), np.zeros((h, w, 3), np.int64)]))
    iterations = draw(st.integers(0, 3))
    if mutation == "iterations":
        iterations = draw(st.sampled_from([-1, 2.5, "2"]))
    return w, h, n_labels, u, terms, iterations, mutation


@FUZZ
@given(densecrf2d_case())
def test_fuzz_densecrf2d(case):
    w, h, n_labels, u, terms, iterations, mutation = case
    try:
        d = dcrf.DenseCRF2D(w, h, n_labels)
        d.setUnaryEnergy(u)
        for kind, sxy, srgb, img, compat, norm in terms:
            if kind == "gauss":
                d.addPairwiseGaussian(sxy=sxy, compat=compat, normalization=norm)
            else:
                d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=img, compat=compat, normalization=norm)
        q = d.inference(iterations)
    except CLEAN as e:
        return outcome(mutation, e)
    outcome(mutation)
    assert mutation in ("none", "unary_values"), f"accepted a broken input ({mutation})"
    check_probs(q, (n_labels, w * h))


# ------------------------------------------------------------------------------ DenseCRF + features
@st.composite
def densecrf_case(draw):
    mutation = draw(st.sampled_from(["none"] * 5 + ["features_shape", "features_dtype", "features_values",
                                                    "huge", "size"]))
    n, n_labels, dim = draw(st.integers(1, 60)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    if mutation == "size":
        n, n_labels = draw(st.sampled_from([(0, n_labels), (n, 0), (-3, n_labels)]))
    fshape = (dim, max(n, 1))
    if mutation == "features_shape":
        fshape = draw(st.sampled_from([(dim, n + 1), (dim, max(n - 1, 0)), (n,), (0, n), (dim, n, 1)]))
    feats = draw(arrays(fshape, draw(st.sampled_from(BROKEN_DTYPES)) if mutation == "features_dtype"
                        else np.float32, kind="features", mode="special" if mutation == "features_values" else "good"))
    scale = draw(st.sampled_from([1.0, 1.0, 1e-3, 10.0, 1e3]))
    if mutation == "huge":
        scale = draw(st.sampled_from([1e8, 1e20, 1e37]))
    with np.errstate(all="ignore"):
        feats = (feats * scale).astype(feats.dtype) if feats.dtype.kind == "f" else feats
    u = draw(arrays((max(n_labels, 1), max(n, 1)), np.float32, kind="unary"))
    return n, n_labels, feats, u, draw(st.floats(-10, 10)), draw(st.sampled_from([0, 1, 2, 3])), \
        draw(st.integers(0, 2)), draw(st.integers(0, 3)), mutation


@FUZZ
@given(densecrf_case())
def test_fuzz_densecrf_features(case):
    n, n_labels, feats, u, compat, norm, steps, iterations, mutation = case
    try:
        d = dcrf.DenseCRF(n, n_labels)
        d.setUnaryEnergy(u)
        d.addPairwiseEnergy(feats, compat=compat, normalization=norm)
        q, tmp1, tmp2 = d.startInference()
        for _ in range(steps):
            d.stepInference(q, tmp1, tmp2)
        kl = d.klDivergence(q)
        q2 = d.inference(iterations)
    except CLEAN as e:
        return outcome(mutation, e)
    outcome(mutation)
    # a "huge" scale of 1e8 can still fit when the features are small; every other mutation is an error
    assert mutation in ("none", "huge") or (mutation == "features_values" and np.all(np.isfinite(feats))), \
        f"accepted a broken input ({mutation})"
    assert np.isfinite(kl)
    check_probs(q, (n_labels, n))
    check_probs(q2, (n_labels, n))


# ------------------------------------------------------------------------------------------ helpers
@FUZZ
@given(st.sampled_from([1, 2, 3, 5, 0]), st.sampled_from([1, 2, 5, 6, 0]), st.sampled_from([1, 3, 4, 6, 0]),
       st.data())
def test_fuzz_helpers(n_labels, h, w, data):
    probs = data.draw(arrays((n_labels, h, w), data.draw(st.sampled_from(DTYPES)),
                             mode=data.draw(st.sampled_from(["good", "random", "special"]))))
    scale = data.draw(st.sampled_from([None, None, 0.5, 1.0, 0.0, 2.0]))
    try:
        u = cutils.unary_from_softmax(probs, scale=scale)
    except CLEAN as e:
        event(f"unary_from_softmax: clean {type(e).__name__}")
    else:
        event("unary_from_softmax: result")
        assert u.dtype == np.float32 and u.shape == (n_labels, h * w)
        assert np.all(np.isfinite(u))
    labels = data.draw(arrays((h, w), np.float64, kind="features"))
    labels = np.abs(np.rint(labels)).astype(data.draw(st.sampled_from([np.int64, np.int32, np.uint8, np.float32])))
    labels = np.minimum(labels, data.draw(st.sampled_from([max(n_labels, 1), max(n_labels, 1), 255])))
    gt = data.draw(st.sampled_from([0.7, 0.5, 0.7, 0.0, 1.0, np.nan]))
    try:
        u = cutils.unary_from_labels(labels, n_labels, gt_prob=gt, zero_unsure=data.draw(st.booleans()))
    except CLEAN as e:
        event(f"unary_from_labels: clean {type(e).__name__}")
    else:
        event("unary_from_labels: result")
        assert u.dtype == np.float32 and u.shape == (n_labels, h * w) and np.all(np.isfinite(u))
    sd = data.draw(st.sampled_from([[3.0, 3.0], [1.0, 80.0], [3.0, 0.0], [-1.0, 2.0], [np.nan, 1.0], [3.0],
                                    [1.0, 2.0, 3.0]]))
    try:
        f = cutils.create_pairwise_gaussian(sd, (h, w))
    except CLEAN as e:
        event(f"create_pairwise_gaussian: clean {type(e).__name__}")
    else:
        event("create_pairwise_gaussian: result")
        assert f.dtype == np.float32 and f.shape == (2, h * w) and np.all(np.isfinite(f))
    img = data.draw(arrays((h, w, 3), data.draw(st.sampled_from([np.uint8, np.float32, np.int64])), kind="image"))
    try:
        f = cutils.create_pairwise_bilateral(sd, data.draw(st.sampled_from([13.0, (1.0, 2.0, 3.0), 0.0])), img,
                                             chdim=2)
    except CLEAN as e:
        event(f"create_pairwise_bilateral: clean {type(e).__name__}")
    else:
        event("create_pairwise_bilateral: result")
        assert f.dtype == np.float32 and f.shape == (5, h * w) and np.all(np.isfinite(f))
