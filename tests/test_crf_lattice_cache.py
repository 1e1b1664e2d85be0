"""The CPU backend's Gaussian lattice cache: a lattice built for one image is reused for the next image of the
same size, sigma and normalisation, and reuse never changes a result (bitwise), whatever the call order,
eviction, thread count or API (dense_crf, the pydensecrf drop-in)."""

from __future__ import annotations

import numpy as np
import pytest

import pyseg.crf as dcrf
from pyseg.crf import _crf_cpu
from pyseg.crf.params import CRFParams

from helpers import crf_test_image as image
from helpers import crf_test_probs as probs

P = CRFParams.preset("krahenbuhl")


@pytest.fixture(autouse=True)
def _restore_cache():
    before = _crf_cpu.lattice_cache_entries()
    yield
    dcrf.set_lattice_cache(before)


def uncached(pr, img, params, **kw):
    """dense_crf with the cache off (every lattice built from scratch)."""
    entries = _crf_cpu.lattice_cache_entries()
    dcrf.set_lattice_cache(0)
    try:
        return dcrf.dense_crf(pr, img, params, **kw)
    finally:
        dcrf.set_lattice_cache(entries)


def test_reuse_across_images_is_bitwise_the_same():
    dcrf.set_lattice_cache(4)
    _crf_cpu.release_lattice_cache()
    a = (probs(5, 70, 90, seed=1), image(70, 90, seed=1))
    b = (probs(5, 70, 90, seed=2), image(70, 90, seed=2))
    ref_b = uncached(*b, P)
    dcrf.dense_crf(*a, P)  # caches the 70x90 Gaussian lattice
    assert _crf_cpu.cached_bytes() > 0
    np.testing.assert_array_equal(dcrf.dense_crf(*b, P), ref_b)  # reuses it
    np.testing.assert_array_equal(dcrf.dense_crf(*b, P, num_threads=2), ref_b)


@pytest.mark.parametrize("entries", [1, 2, 4])
def test_sizes_sigmas_and_eviction_never_mix_up_lattices(entries):
    dcrf.set_lattice_cache(entries)
    cases = []
    for h, w, sxy in [(40, 50, 3.0), (50, 40, 3.0), (40, 50, 1.0), (40, 50, 3.0000002), (41, 50, 3.0)]:
        params = CRFParams(sxy, 3.0, 30.0, 13.0, 5.0, 4)
        cases.append((probs(3, h, w, seed=h + w), image(h, w, seed=h), params))
    refs = [uncached(pr, img, prm) for pr, img, prm in cases]
    for _ in range(2):  # every lattice is needed again after others were cached (or evicted)
        for (pr, img, prm), ref in zip(cases, refs):
            np.testing.assert_array_equal(dcrf.dense_crf(pr, img, prm), ref)


def test_batch_threads_share_one_lattice():
    dcrf.set_lattice_cache(4)
    _crf_cpu.release_lattice_cache()
    pr = np.stack([probs(4, 60, 64, seed=s) for s in range(5)])
    img = np.stack([image(60, 64, seed=s) for s in range(5)])
    ref = np.stack([uncached(pr[i], img[i], P) for i in range(5)])
    np.testing.assert_array_equal(dcrf.dense_crf(pr, img, P, num_threads=2), ref)  # workers race for the build


def test_drop_in_api_uses_the_cache_without_changing_results():
    dcrf.set_lattice_cache(4)
    h, w = 30, 40
    pr, img = probs(4, h, w, seed=3), image(h, w, seed=3)

    def run():
        d = dcrf.DenseCRF2D(w, h, 4)
        d.setUnaryEnergy(np.ascontiguousarray(-np.log(pr.reshape(4, -1))))
        d.addPairwiseGaussian(sxy=3, compat=3)
        d.addPairwiseBilateral(sxy=20, srgb=13, rgbim=img, compat=10)
        return np.asarray(d.inference(5))

    dcrf.set_lattice_cache(0)
    ref = run()
    dcrf.set_lattice_cache(4)
    run()
    np.testing.assert_array_equal(run(), ref)


def test_off_and_release_empty_the_cache():
    dcrf.set_lattice_cache(4)
    dcrf.dense_crf(probs(3, 32, 32), image(32, 32), P)
    assert _crf_cpu.release_lattice_cache() > 0
    assert _crf_cpu.release_lattice_cache() == 0
    dcrf.dense_crf(probs(3, 32, 32), image(32, 32), P)
    dcrf.set_lattice_cache(0)
    assert _crf_cpu.lattice_cache_entries() == 0
    assert _crf_cpu.release_lattice_cache() == 0


def test_byte_cap_keeps_big_lattices_out():
    pr, img = probs(3, 64, 64), image(64, 64)
    ref = uncached(pr, img, P)
    dcrf.set_lattice_cache(4, max_mb=0)  # every lattice is over the cap
    _crf_cpu.release_lattice_cache()
    np.testing.assert_array_equal(dcrf.dense_crf(pr, img, P), ref)
    assert _crf_cpu.release_lattice_cache() == 0  # nothing was kept
    dcrf.set_lattice_cache(4, max_mb=1)  # a 64x64 lattice (~150 KB) fits
    np.testing.assert_array_equal(dcrf.dense_crf(pr, img, P), ref)
    assert _crf_cpu.release_lattice_cache() > 0


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("4", TypeError)])
def test_set_lattice_cache_rejects_bad_counts(bad, err):
    with pytest.raises(err, match="entries must be an integer >= 0"):
        dcrf.set_lattice_cache(bad)
    with pytest.raises(err, match="max_mb must be an integer >= 0"):
        dcrf.set_lattice_cache(4, max_mb=bad)
