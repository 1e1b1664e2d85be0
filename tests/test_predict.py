"""pyseg.inference.predict: batched inference, TTA, the CRF stage and submission writing, with tiny models."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyseg.inference import inputs as I  # noqa: E402
from pyseg.inference import predict as P  # noqa: E402
from pyseg.inference import probs as PR  # noqa: E402
from pyseg import submission as S  # noqa: E402
from helpers import FakeCRF, TinyDataset, tiny_model  # noqa: E402


def manual_probs(model, image, input_size):
    x = P.preprocess([image], input_size)
    with torch.no_grad():
        lg = model(x)
        lg = torch.nn.functional.interpolate(lg, size=image.shape[:2], mode="bilinear", align_corners=False)
    return lg.softmax(1)[0].numpy()


@pytest.mark.parametrize("input_size, batch_size", [(16, 2), (None, 3)])
def test_predictions_in_order_at_native_resolution(input_size, batch_size):
    ds = TinyDataset()
    model = tiny_model()
    res = list(P.predict_dataset(model, ds, input_size=input_size, batch_size=batch_size, keep_probs=True))
    assert [r.image_id for r in res] == ds.image_ids
    for r, it in zip(res, ds.items):
        assert r.pred.shape == it["image"].shape[:2] and r.pred.dtype == np.int64
        assert r.pred_crf is None and r.final is r.pred
        np.testing.assert_array_equal(r.mask, it["mask"])
        want = manual_probs(model, it["image"], input_size)
        np.testing.assert_allclose(r.probs, want, atol=1e-5)
        np.testing.assert_array_equal(r.pred, want.argmax(0))


def test_preprocess_normalises_and_resizes():
    img = np.full((4, 6, 3), 255, np.uint8)
    x = P.preprocess([img], 8)
    assert x.shape == (1, 3, 8, 8)
    mean, std = P.mean_std()
    np.testing.assert_allclose(x[0, :, 0, 0].numpy(), (1 - np.array(mean)) / np.array(std), rtol=1e-6)
    with pytest.raises(ValueError, match="different sizes"):
        P.preprocess([img, np.zeros((5, 5, 3), np.uint8)], None)
    with pytest.raises(ValueError, match="uint8"):
        P.preprocess([img.astype(np.float32)], 8)


def test_tta_averages_flipped_and_scaled_views():
    ds = TinyDataset(n=2, sizes=((16, 16),))
    model = tiny_model()
    tta = P.parse_tta("flip,1,0.5")
    assert tta == P.TTA(True, (1.0, 0.5)) and tta.num_views == 4
    r = next(P.predict_dataset(model, ds, input_size=16, tta=tta, keep_probs=True))
    img = ds.items[0]["image"]
    views = []
    for scale in (1.0, 0.5):
        for flip in (False, True):
            x = P.preprocess([img], int(16 * scale))
            with torch.no_grad():
                lg = model(x.flip(-1) if flip else x)
            lg = lg.flip(-1) if flip else lg
            lg = torch.nn.functional.interpolate(lg, size=(16, 16), mode="bilinear", align_corners=False)
            views.append(lg.softmax(1)[0].numpy())
    np.testing.assert_allclose(r.probs, np.mean(views, axis=0), atol=1e-5)
    np.testing.assert_allclose(r.probs.sum(0), 1, atol=1e-5)


@pytest.mark.parametrize("spec", ["flipp", "0", "1,nan"])
def test_parse_tta_rejects(spec):
    with pytest.raises(ValueError, match=r"^tta: (expected .flip. and/or scale factors|scale factors must lie in \[0.1, 4\])"):
        P.parse_tta(spec)


def test_resolve_crf(tmp_path):
    from pyseg.crf.params import CRFParams

    assert P.resolve_crf("off") is None and P.resolve_crf(None) is None
    assert P.resolve_crf("deeplab") == CRFParams.preset("deeplab")
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"params": CRFParams(2.0, 1.0, 50.0, 5.0, 4.0, 3).to_dict(), "gain": 0.01}))
    assert P.resolve_crf(str(f)) == CRFParams(2.0, 1.0, 50.0, 5.0, 4.0, 3)
    with pytest.raises(ValueError, match="expected 'off', a preset"):
        P.resolve_crf("krahenbul")
    with pytest.raises(ValueError, match="does not exist"):
        P.resolve_crf(str(tmp_path / "none.json"))
    (tmp_path / "bad.json").write_text(json.dumps({"sxy": 3}))
    with pytest.raises(ValueError, match="does not hold CRF parameters"):
        P.resolve_crf(str(tmp_path / "bad.json"))


def test_crf_stage_gets_raw_images_grouped_by_size(monkeypatch):
    from pyseg.crf.params import CRFParams

    fake = FakeCRF()
    monkeypatch.setattr(P, "_dense_crf", lambda: fake)
    ds = TinyDataset(n=7)
    res = list(P.predict_dataset(tiny_model(), ds, input_size=16, batch_size=3,
                                 crf=CRFParams.preset("krahenbuhl"), crf_device="cpu", overlap=True))
    assert [r.image_id for r in res] == ds.image_ids  # order kept although the CRF runs in a thread
    # batches of 3 alternating two image sizes -> one dense_crf call per size: (2, 1), (2, 1), (1)
    assert [c[0][0] for c in fake.calls] == [2, 1, 2, 1, 1]
    assert all(c[1] == np.uint8 and c[3] == "cpu" for c in fake.calls)
    for r, it in zip(res, ds.items):
        np.testing.assert_array_equal(r.pred_crf, (it["image"].mean(-1) > 60).astype(np.int64))
        assert r.final is r.pred_crf


def test_crf_in_line_gives_the_same_results(monkeypatch):
    from pyseg.crf.params import CRFParams

    monkeypatch.setattr(P, "_dense_crf", lambda: FakeCRF())
    ds = TinyDataset(n=5)
    kw = dict(input_size=16, batch_size=2, crf=CRFParams(), crf_device="cpu")
    a = list(P.predict_dataset(tiny_model(), ds, overlap=True, **kw))
    b = list(P.predict_dataset(tiny_model(), ds, overlap=False, **kw))
    for x, y in zip(a, b, strict=True):
        assert x.image_id == y.image_id
        np.testing.assert_array_equal(x.pred_crf, y.pred_crf)
        np.testing.assert_array_equal(x.pred, y.pred)


def test_overlap_choice(monkeypatch):
    assert P.should_overlap("cuda:0", None) is True
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert P.should_overlap("cpu", 1) is True
    assert P.should_overlap("cpu", 2) is False
    with pytest.raises(ValueError, match="overlap must be"):
        list(P.predict_dataset(tiny_model(), TinyDataset(n=1), input_size=16, overlap="yes"))


def test_crf_device_checks():
    assert P.resolve_crf_device("auto", "cpu") == "cpu"
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        P.resolve_crf_device("gpu", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            P.resolve_crf_device("cuda", "cpu")


def test_real_crf_cleans_noisy_probabilities():
    crf = pytest.importorskip("pyseg.crf")
    if not hasattr(crf, "dense_crf"):
        pytest.skip("pyseg.crf.dense_crf is not built")
    rng = np.random.default_rng(0)
    h, w = 24, 32
    gt = np.zeros((h, w), np.int64)
    gt[:, w // 2:] = 1
    img = np.where(gt[..., None] == 1, 200, 30).astype(np.uint8) + rng.integers(0, 10, (h, w, 3)).astype(np.uint8)
    p = np.where(gt == 1, 0.6, 0.4)[None].repeat(2, 0)
    p[0] = 1 - p[1]
    flip = rng.random((h, w)) < 0.3
    p[:, flip] = p[::-1][:, flip]
    p = p.astype(np.float32)
    q = P.run_crf_grouped([p, p], [img, img], crf.CRFParams.preset("krahenbuhl"), "cpu")
    assert (q[0].argmax(0) == gt).mean() > 0.95 > (p.argmax(0) == gt).mean()
    np.testing.assert_allclose(q[0], q[1])


def test_model_with_wrong_class_count_is_an_error(tmp_path):
    ds = TinyDataset(num_classes=3)
    with pytest.raises(ValueError, match="outputs 4 classes, the data has 3"):
        P.predict_to_submission(tiny_model(4), ds, tmp_path / "s.csv", image_ids=ds.image_ids, size=8,
                                input_size=16)
    assert os.listdir(tmp_path) == []


def test_predict_to_submission_with_probs_and_vis(tmp_path):
    ds = TinyDataset(n=4)
    model = tiny_model()
    out = tmp_path / "sub.csv"
    info = P.predict_to_submission(model, ds, out, image_ids=ds.image_ids, size=8, save_probs=tmp_path / "probs",
                                   vis_dir=tmp_path / "vis", palette=ds.palette, class_names=ds.class_names,
                                   input_size=16, batch_size=3)
    assert info["rows"] == 4
    assert S.validate_submission(out, ds.image_ids, size=8, num_classes=3)["rows"] == 4
    ids, masks = S.decode_submission(out, 8)
    for m, r in zip(masks, P.predict_dataset(model, ds, input_size=16)):
        np.testing.assert_array_equal(m, S.resize_nearest(r.pred, 8))
    PR.ensemble_probs([tmp_path / "probs"], tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == out.read_text()
    assert sorted(os.listdir(tmp_path / "vis")) == [f"imgs_{i:03d}.png" for i in range(4)]
    from PIL import Image

    im = np.asarray(Image.open(tmp_path / "vis" / "imgs_000.png"))
    assert im.shape == (12, 16 * 3 + 2 * 4, 3)  # image | prediction | ground truth


def test_failure_midway_leaves_no_submission(tmp_path):
    ds = TinyDataset(n=6)
    model = tiny_model()
    calls = {"n": 0}

    def hook(*_):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("out of memory")

    model.register_forward_hook(hook)
    with pytest.raises(RuntimeError, match="out of memory"):
        P.predict_to_submission(model, ds, tmp_path / "s.csv", image_ids=ds.image_ids, size=8,
                                input_size=16, batch_size=2)
    assert os.listdir(tmp_path) == []


def test_rows_must_follow_the_json_order(tmp_path):
    ds = TinyDataset(n=3)
    with pytest.raises(ValueError, match="out of order"):
        P.predict_to_submission(tiny_model(), ds, tmp_path / "s.csv", image_ids=ds.image_ids[::-1], size=8,
                                input_size=16)
    assert os.listdir(tmp_path) == []


def test_json_checks(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "empty.json").write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ValueError, match="has no images"):
        I.check_images_exist(tmp_path, tmp_path / "empty.json")
    (tmp_path / "j.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"},
                                                            {"id": 2, "file_name": "sub/b.jpg"}]}))
    with pytest.raises(ValueError, match="1 of 2 images .* missing .* sub/b.jpg"):
        I.check_images_exist(tmp_path, tmp_path / "j.json")
    with pytest.raises(ValueError, match="does not exist"):
        I.check_images_exist(tmp_path, tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        I.check_images_exist(tmp_path, tmp_path / "bad.json")


def test_check_classes():
    I.check_classes({"num_classes": 3, "class_names": ["a", "b", "c"]}, 3, ["a", "b", "c"])
    with pytest.raises(ValueError, match="predicts 4 classes but test.json has 3"):
        I.check_classes({"num_classes": 4}, 3, ["a", "b", "c"], "test.json")
    with pytest.raises(ValueError, match="class names differ"):
        I.check_classes({"num_classes": 3, "class_names": ["a", "x", "c"]}, 3, ["a", "b", "c"])
    ckpt = {"config": {"data": {"image_size": 256, "eval_size": None}}}
    assert I.input_size_from_checkpoint(ckpt) == 256
    assert I.input_size_from_checkpoint({}, 512) == 512


@pytest.mark.cuda
def test_cuda_model_and_crf_agree_with_cpu():
    from pyseg.crf.params import CRFParams

    ds = TinyDataset(n=4, sizes=((24, 32),))
    model = tiny_model()
    kw = dict(input_size=16, batch_size=2, crf=CRFParams.preset("krahenbuhl"))
    cpu = list(P.predict_dataset(model, ds, crf_device="cpu", keep_probs=True, **kw))
    gpu = list(P.predict_dataset(model.cuda(), ds, crf_device="auto", keep_probs=True, **kw))
    for a, b in zip(cpu, gpu, strict=True):
        assert a.image_id == b.image_id
        assert (a.pred == b.pred).mean() > 0.99  # cuDNN vs CPU convolutions: near-ties may flip
        assert (a.pred_crf == b.pred_crf).mean() > 0.98
        np.testing.assert_allclose(a.probs, b.probs, atol=2e-2)  # the lattices agree, not bit for bit


@pytest.mark.cuda
def test_cpu_model_with_cuda_crf():
    from pyseg.crf.params import CRFParams

    ds = TinyDataset(n=3, sizes=((24, 32), (20, 20)))
    res = list(P.predict_dataset(tiny_model(), ds, input_size=16, crf=CRFParams(), crf_device="cuda"))
    assert [r.image_id for r in res] == ds.image_ids
    assert all(r.pred_crf.shape == it["image"].shape[:2] for r, it in zip(res, ds.items))
