"""pyseg.inference.crf_tuning: the model runs once, the CRF search finds the parameters that score best."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from helpers import TinyDataset, tiny_model  # noqa: E402

from pyseg.inference import predict as P  # noqa: E402
from pyseg.inference import crf_tuning as T  # noqa: E402
from pyseg.crf.params import CRFParams  # noqa: E402


class ParamSensitiveCRF:
    """Recovers the ground truth (brightness threshold of the raw image) only for srgb == 5 and
    bilateral_sxy == 50; every other setting returns the model's probabilities unchanged."""

    def __init__(self):
        self.calls = 0

    def __call__(self, probs, image, params=None, device="auto", num_threads=None):
        self.calls += 1
        if params.bilateral_srgb != 5.0 or params.bilateral_sxy != 50.0:
            return probs
        labels = (image.mean(-1) > 60).astype(np.int64)
        out = np.zeros_like(probs)
        np.put_along_axis(out, labels[:, None], 1.0, axis=1)
        return out


@pytest.fixture()
def cache():
    ds = TinyDataset(n=4, num_classes=2)
    return T.cache_probabilities(tiny_model(2, seed=3), ds, max_images=3, input_size=16, batch_size=2)


def test_cache_holds_float16_probabilities(cache):
    assert len(cache) == 3
    c = cache[0]
    assert c.probs.dtype == np.float16 and c.probs.shape == (2,) + c.mask.shape
    assert c.image.dtype == np.uint8
    with pytest.raises(ValueError, match="no ground truth"):
        T.cache_probabilities(tiny_model(2), TinyDataset(n=2, num_classes=2, labelled=False), input_size=16)


def test_search_finds_the_good_setting(cache, monkeypatch):
    fake = ParamSensitiveCRF()
    monkeypatch.setattr(P, "_dense_crf", lambda: fake)
    stages = [{"bilateral_sxy": (30.0, 50.0), "bilateral_srgb": (3.0, 5.0)},
              {"gaussian_sxy": (1.0, 3.0), "gaussian_compat": (0.0, 3.0)}]
    seen = []
    res = T.search(cache, 2, iterations=3, stages=stages, fine=True, callback=lambda p, s: seen.append((p, s)))
    assert res.best.bilateral_srgb == 5.0 and res.best.bilateral_sxy == 50.0 and res.best.iterations == 3
    assert res.best_score == pytest.approx(1.0)
    assert res.baseline < 1.0 and res.gain == pytest.approx(1.0 - res.baseline)
    assert set(res.presets) == set(CRFParams.presets())
    # presets do not hit srgb 5 / sxy 50: they score the baseline
    assert all(v == pytest.approx(res.baseline) for v in res.presets.values())
    keys = [tuple(p.to_dict().values()) for p, _ in res.history]
    assert len(keys) == len(set(keys)) == len(seen)  # each setting evaluated once
    assert fake.calls == 2 * len(keys)  # one dense_crf call per image size (two sizes in the cache)
    d = res.to_dict()
    assert d["params"]["bilateral_srgb"] == 5.0 and d["gain"] == pytest.approx(res.gain)


def test_score_without_crf_is_the_model_argmax(cache):
    from pyseg.training.metrics import SegMetrics

    m = SegMetrics(2, 255)
    for c in cache:
        m.update(c.mask, c.probs.argmax(0))
    assert T.score_params(None, cache, 2)["miou"] == pytest.approx(m.compute()["miou"])


def test_search_rejects_bad_options(cache):
    with pytest.raises(ValueError, match="objective"):
        T.search(cache, 2, objective="accuracy")
    with pytest.raises(ValueError, match="iterations"):
        T.search(cache, 2, iterations=0)


def two_region_case(seed: int, h: int = 48, w: int = 64) -> T.CachedImage:
    """A checkerboard of two classes whose colours differ by 10 per channel, and a model that gets 40% of the
    pixels confidently wrong (0.95). Only a strong bilateral term (compat 40, far above the unary gap
    log(0.95 / 0.05) = 2.9) that sees the colour step (srgb 3, not 200) restores the blocks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    mask = ((yy // 12 + xx // 16) % 2).astype(np.int64)
    base = rng.integers(60, 200, size=3)
    image = base + 10 * mask[..., None] * np.array([1, -1, 1]) + rng.integers(-2, 3, (h, w, 3))
    labels = np.where(rng.random((h, w)) < 0.4, 1 - mask, mask)
    probs = np.full((2, h, w), 0.05)
    np.put_along_axis(probs, labels[None], 0.95, axis=0)
    return T.CachedImage(f"case{seed}", np.clip(image, 0, 255).astype(np.uint8), probs.astype(np.float16), mask)


def test_search_with_the_real_crf_finds_the_known_better_setting():
    cache = [two_region_case(s) for s in range(3)]
    # (40, 3) is the third of four candidates: neither the first nor the last the search evaluates
    grid = {"bilateral_compat": (1.0, 40.0), "bilateral_srgb": (3.0, 200.0)}
    res = T.search(cache, 2, iterations=5, stages=[grid], fine=False)
    assert (res.best.bilateral_compat, res.best.bilateral_srgb) == (40.0, 3.0), res.history
    assert res.best_score > 0.99 and res.baseline < 0.5
    assert max(res.presets.values()) < 0.8, res.presets  # the presets' compat 4 and 10 are too weak here
    assert res.best_score == max(s for _, s in res.history)
