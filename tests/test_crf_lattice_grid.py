"""The Gaussian image lattice numbers its vertices through dense key grids (one array access per lookup)
where the key boxes are small, else through hash tables: both must build the same lattice, so results are
bitwise the same either way (PYSEG_LATTICE_GRID=0 forces the hash tables)."""

from __future__ import annotations

import numpy as np
import pytest

import pyseg.crf as dcrf
from pyseg.crf import _crf_cpu
from pyseg.crf.utils import unary_from_softmax

from helpers import crf_test_image as image
from helpers import crf_test_probs as probs


@pytest.fixture(autouse=True)
def _no_lattice_cache():
    """Every lattice built from scratch (a cached one would hide which table built it)."""
    before = _crf_cpu.lattice_cache_entries()
    dcrf.set_lattice_cache(0)
    yield
    dcrf.set_lattice_cache(before)


def gaussian_only(pr, sx, sy, iterations=4):
    h, w = pr.shape[1:]
    d = dcrf.DenseCRF2D(w, h, pr.shape[0])
    d.setUnaryEnergy(unary_from_softmax(pr))
    d.addPairwiseGaussian(sxy=(sx, sy), compat=3)
    return np.asarray(d.inference(iterations))


def both_ways(monkeypatch, fn):
    out = {}
    for grid in ("0", "1"):
        monkeypatch.setenv("PYSEG_LATTICE_GRID", grid)
        out[grid] = fn()
    return out["0"], out["1"]


@pytest.mark.parametrize(
    "h,w,sx,sy",
    [
        (70, 90, 3.0, 3.0),  # one chunk
        (300, 250, 3.0, 3.0),  # three chunks that start and end inside image rows
        (300, 250, 1.0, 1.0),  # deeplab's sigma: more vertices than pixels
        (181, 203, 2.5, 7.0),  # different sigmas along x and y
        (129, 260, 40.0, 0.7),
        (1, 1, 3.0, 3.0),  # a single pixel
        (1, 2, 3.0, 3.0),
        (40, 50, 1000.0, 1000.0),  # every pixel in one simplex or two
        (16, 4096, 3.0, 3.0),  # wide rows: two chunks of 8 rows each
    ],
)
def test_grid_and_hash_tables_build_the_same_lattice(monkeypatch, h, w, sx, sy):
    monkeypatch.setenv("PYSEG_LATTICE_GRID", "1")
    assert _crf_cpu.gaussian_lattice_uses_grid(w, h, sx, sy)  # else this test compares the hash path with itself
    monkeypatch.setenv("PYSEG_LATTICE_GRID", "0")
    assert not _crf_cpu.gaussian_lattice_uses_grid(w, h, sx, sy)
    pr = probs(5, h, w, seed=3)
    a, b = both_ways(monkeypatch, lambda: gaussian_only(pr, sx, sy))
    np.testing.assert_array_equal(a, b)


def test_dense_crf_is_the_same_with_either_table_on_two_threads(monkeypatch):
    pr, img = probs(6, 260, 270, seed=5), image(260, 270, seed=5)
    for preset in ("krahenbuhl", "deeplab"):
        p = dcrf.CRFParams.preset(preset)
        a, b = both_ways(monkeypatch, lambda: dcrf.dense_crf(pr, img, p, iterations=3, num_threads=2))
        np.testing.assert_array_equal(a, b, err_msg=preset)


@pytest.mark.parametrize(
    "w,h,sx,sy",
    [
        (40000, 1, 3.0, 3.0),  # a single image row wider than a chunk: the box of a chunk is far wider than it
        (1, 40000, 3.0, 3.0),  # a single column
        (200, 200, 0.05, 0.05),  # tiny sigmas: about 15 times more keys in the box than pixels
    ],
)
def test_large_key_boxes_fall_back_to_hash_tables(monkeypatch, w, h, sx, sy):
    monkeypatch.setenv("PYSEG_LATTICE_GRID", "1")
    assert not _crf_cpu.gaussian_lattice_uses_grid(w, h, sx, sy)
    pr = probs(3, h, w, seed=1)
    out = gaussian_only(pr, sx, sy, iterations=2)
    assert out.shape == (3, h * w) and np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(0), 1.0, atol=1e-5)
