"""The CPU driver's chunked mean-field step and its SIMD lattice on images of more than one chunk.

Points are cut into chunks of 32768 (fixed by n, never by the thread count); each chunk splats into its own
local vertex rows, which are reduced, blurred and distributed back between steps. These tests use images of
several chunks, with a partial last chunk whose size is not a multiple of the SIMD groups (8 points in the
lattice build, 16 pixels in the update), against pydensecrf and the NumPy oracle, across thread counts, and
with the 8-wide lattice build switched off (PYSEG_LATTICE_SIMD=0), which must not change a single bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from helpers import blocky_probs, smooth_image

import pyseg.crf as dcrf
from pyseg.crf import reference as R
from pyseg.crf.params import CRFParams

PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(dcrf.__file__))))
CHUNK = 32768
H, W = 190, 250  # 47500 pixels: a full chunk and one of 14732 (not a multiple of 8 or 16)


def test_sizes_span_several_chunks():
    assert H * W > CHUNK and (H * W - CHUNK) % 16 != 0 and (H * W - CHUNK) % 8 != 0


@pytest.mark.pydensecrf
@pytest.mark.parametrize("n_labels", [2, 5, 11, 21, 40])
@pytest.mark.parametrize("preset", ["krahenbuhl", "deeplab"])
def test_multi_chunk_matches_pydensecrf(n_labels, preset):
    """2 labels: rows of 4 (a lone 4-lane tail with AVX2); 11: 8 + 4; 21: 24 = 3 x 8; 40: the generic path."""
    import pydensecrf.densecrf as pd
    from pydensecrf.utils import unary_from_softmax

    img, pr = smooth_image(H, W, seed=n_labels), blocky_probs(n_labels, H, W, seed=n_labels)
    p = CRFParams.preset(preset)
    d = pd.DenseCRF2D(W, H, n_labels)
    d.setUnaryEnergy(unary_from_softmax(pr))
    d.addPairwiseGaussian(sxy=p.gaussian_sxy, compat=p.gaussian_compat)
    d.addPairwiseBilateral(sxy=p.bilateral_sxy, srgb=p.bilateral_srgb, rgbim=img, compat=p.bilateral_compat)
    ref = np.array(d.inference(p.iterations)).reshape(n_labels, H, W)
    got = dcrf.dense_crf(pr, img, p)
    assert np.abs(got - ref).max() < 1e-3
    assert (got.argmax(0) == ref.argmax(0)).mean() >= 0.999
    np.testing.assert_allclose(got.sum(0), 1.0, atol=1e-5)


def test_multi_chunk_matches_oracle():
    h, w, n_labels = 150, 230, 3  # 34500 pixels: two chunks, small enough for the NumPy oracle
    img, pr = smooth_image(h, w, seed=3), blocky_probs(n_labels, h, w, seed=3)
    p = CRFParams.preset("krahenbuhl")
    got = dcrf.dense_crf(pr, img, p, iterations=3)
    ref = R.dense_crf_reference(pr, img, p, 3)
    assert np.abs(got - ref).max() < 1e-4
    assert (got.argmax(0) == ref.argmax(0)).mean() >= 0.999


def test_multi_chunk_bitwise_same_for_any_thread_count():
    img, pr = smooth_image(H, W, seed=1), blocky_probs(11, H, W, seed=1)
    p = CRFParams.preset("krahenbuhl")
    one = dcrf.dense_crf(pr, img, p, num_threads=1)
    for t in (2, 3, 5):
        np.testing.assert_array_equal(dcrf.dense_crf(pr, img, p, num_threads=t), one, err_msg=f"{t} threads")
    batch = dcrf.dense_crf(np.stack([pr, pr]), np.stack([img, img]), p, num_threads=2)
    np.testing.assert_array_equal(batch[0], one)
    np.testing.assert_array_equal(batch[1], one)


def test_step_inference_equals_inference_across_chunks():
    img, pr = smooth_image(H, W, seed=2), blocky_probs(6, H, W, seed=2)
    u = (-np.log(np.clip(pr, 1e-5, 1.0))).reshape(6, -1)
    d = dcrf.DenseCRF2D(W, H, 6)
    d.setUnaryEnergy(u)
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=80, srgb=13, rgbim=img, compat=10)
    q, tmp1, tmp2 = d.startInference()
    for _ in range(4):
        d.stepInference(q, tmp1, tmp2)
    np.testing.assert_allclose(q, d.inference(4), atol=1e-6)


_SIMD_SCRIPT = r"""
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
import pyseg.crf as dcrf
from pyseg.crf.params import CRFParams
d = np.load(sys.argv[2])
outs = {name: dcrf.dense_crf(d["p"], d["i"], CRFParams.preset(name), iterations=2)
        for name in ("krahenbuhl", "deeplab")}
# d = 3 (a volume: x, y, z): the generic DenseCRF with 3-D features
n = d["f"].shape[1]
c = dcrf.DenseCRF(n, 4)
c.setUnaryEnergy(d["u"])
c.addPairwiseEnergy(d["f"], compat=3.0)
outs["d3"] = c.inference(2)
np.savez(sys.argv[3], **outs)
from pyseg.crf import _crf_cpu
print(json.dumps(_crf_cpu._fast_path_counts()))
"""


def test_simd_lattice_build_is_bitwise_the_scalar_one():
    """PYSEG_LATTICE_SIMD=0 switches the 8-wide lattice build off: every output must stay bitwise the same."""
    rng = np.random.default_rng(7)
    zz, yy, xx = np.mgrid[0:24, 0:40, 0:41].astype(np.float32)  # 39360 points: two chunks
    feats = np.stack([xx.ravel() / 2.5, yy.ravel() / 2.5, zz.ravel() / 1.5]).astype(np.float32)
    u = rng.uniform(0.1, 3.0, (4, feats.shape[1])).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        inp = os.path.join(tmp, "in.npz")
        np.savez(inp, p=blocky_probs(11, H, W, seed=4), i=smooth_image(H, W, seed=4), f=feats, u=u)
        results, counts = [], []
        for flag in ("1", "0"):
            out = os.path.join(tmp, f"out{flag}.npz")
            env = dict(os.environ, PYSEG_LATTICE_SIMD=flag)
            r = subprocess.run([sys.executable, "-c", _SIMD_SCRIPT, PKG_PARENT, inp, out], env=env, check=False,
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr
            results.append(dict(np.load(out)))
            counts.append(json.loads(r.stdout)["lattice_points8"])
    # 2 presets x 2 lattices of H x W points, and the volume: all but the tails of the chunks went 8 at a time
    assert counts[0] > 0.99 * (4 * H * W + feats.shape[1]) and counts[1] == 0, counts
    for key in results[0]:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)
