"""pyseg-predict / pyseg-evaluate / pyseg-tune-crf end to end on tiny demo data, and their bad-input errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pyseg.cli import evaluate as cli_evaluate  # noqa: E402
from pyseg.cli import predict as cli_predict  # noqa: E402
from pyseg.cli import tune_crf as cli_tune  # noqa: E402
from pyseg import submission as S  # noqa: E402

MODEL = "deeplabv3_resnet18"  # the lightest model of pyseg.models


def _ckpt(state, model_name, num_classes, class_names, size=64, **extra):
    ck = {"model": state, "model_name": model_name, "model_kwargs": {}, "num_classes": num_classes,
          "class_names": class_names, "epoch": 0, "optimizer": None, "scheduler": None, "scaler": None,
          "rng": None, "metrics": {}, "best_miou": 0.0, "pyseg_version": "0.1.0",
          "config": {"data": {"classes": "trash11", "image_size": size, "eval_size": None,
                              "overlap": "area_desc", "ignore_index": 255}}}
    ck.update(extra)
    return ck


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from pyseg.data import CocoSegmentation, make_demo_dataset
    from pyseg.models import create_model
    from pyseg.training.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("cli")
    paths = make_demo_dataset(d / "data", n_train=1, n_val=3, n_test=4, size=48, seed=0)
    ds = CocoSegmentation(paths["root"], paths["val"], classes="trash11")
    torch.manual_seed(0)
    model = create_model(MODEL, ds.num_classes)
    state = model.state_dict()
    save_checkpoint(d / "good.pt", _ckpt(state, MODEL, ds.num_classes, ds.class_names))
    # the same weights under another architecture's name
    save_checkpoint(d / "other_model.pt", _ckpt(state, "deeplabv3plus_resnet18", ds.num_classes, ds.class_names))
    small = create_model(MODEL, 5).state_dict()
    save_checkpoint(d / "five.pt", _ckpt(small, MODEL, 5, [f"c{i}" for i in range(5)]))
    save_checkpoint(d / "lying.pt", _ckpt(small, MODEL, ds.num_classes, ds.class_names))  # says 11, has 5
    torch.save({"weights": 1}, d / "foreign.pt")
    return {"dir": d, "root": paths["root"], "ds": ds, "test": paths["test"], "val": paths["val"]}


def _args(env, ckpt="good.pt", ann="test.json"):
    return ["--checkpoint", str(env["dir"] / ckpt), "--data-root", str(env["root"]), "--ann", ann]


def test_predict_writes_a_valid_submission(env, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    rc = cli_predict.main(_args(env) + ["--out", str(out), "--size", "32", "--batch-size", "3",
                                        "--save-probs", str(tmp_path / "p"), "--tta", "flip"])
    assert rc == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    ids = S.image_ids_from_json(env["test"])
    assert S.validate_submission(out, ids, size=32, num_classes=11)["rows"] == 4


def _ensemble_of(env, tmp_path, *dirs) -> np.ndarray:
    out = tmp_path / "ens.csv"
    rc = cli_predict.main(["--ensemble", *map(str, dirs), "--ann", str(env["test"]), "--out", str(out)])
    assert rc == 0
    return S.decode_submission(out, 48)[1]


def test_ensemble_of_saved_probs_equals_direct_prediction_exactly(env, tmp_path, capsys):
    """With and without TTA; the untrained model's almost uniform probabilities have float16 near-ties, so
    saving must keep the argmax."""
    direct = {}
    for tta in ("off", "flip,0.75,1.25"):
        out = tmp_path / f"{tta}.csv"
        extra = ["--tta", tta] if tta != "off" else []
        rc = cli_predict.main(_args(env) + ["--out", str(out), "--size", "48", "--save-probs", str(tmp_path / tta)]
                              + extra)
        assert rc == 0, capsys.readouterr().err
        direct[tta] = S.decode_submission(out, 48)[1]
        np.testing.assert_array_equal(_ensemble_of(env, tmp_path, tmp_path / tta), direct[tta])
        # two copies of the run are the run
        np.testing.assert_array_equal(_ensemble_of(env, tmp_path, tmp_path / tta, tmp_path / tta), direct[tta])
    assert (direct["off"] != direct["flip,0.75,1.25"]).any()  # the TTA views change the map


def test_predict_crf_changes_the_map_as_dense_crf_does(env, tmp_path, capsys):
    """--crf's submission is the argmax of pyseg.crf.dense_crf on the model's probabilities with the raw image,
    and differs from the submission without it; --save-probs with --crf keeps the CRF's probabilities."""
    from pyseg.crf import dense_crf
    from pyseg.crf.params import CRFParams
    from pyseg.data import CocoSegmentation
    from pyseg.inference import inputs as I
    from pyseg.inference import predict as P

    outs = {}
    for crf in ("off", "krahenbuhl"):
        outs[crf] = tmp_path / f"{crf}.csv"
        rc = cli_predict.main(_args(env) + ["--out", str(outs[crf]), "--size", "48", "--crf", crf, "--crf-device",
                                            "cpu", "--save-probs", str(tmp_path / crf)])
        assert rc == 0, capsys.readouterr().err
    ids, plain = S.decode_submission(outs["off"], 48)
    _, refined = S.decode_submission(outs["krahenbuhl"], 48)
    model, ckpt = I.load_trained_model(env["dir"] / "good.pt", "cpu")
    ds = CocoSegmentation(env["root"], env["test"], classes="trash11")
    results = list(P.predict_dataset(model, ds, input_size=I.input_size_from_checkpoint(ckpt), batch_size=4,
                                     keep_probs=True, device="cpu"))
    assert [r.image_id for r in results] == list(ids)
    want_plain = np.stack([S.resize_nearest(r.probs.argmax(0), 48) for r in results])
    want_crf = np.stack([S.resize_nearest(dense_crf(r.probs, r.image, CRFParams.preset("krahenbuhl")).argmax(0), 48)
                         for r in results])
    np.testing.assert_array_equal(plain, want_plain)
    np.testing.assert_array_equal(refined, want_crf)
    assert (want_crf != want_plain).mean() > 0.02  # the CRF changes this map: the comparison is not vacuous
    np.testing.assert_array_equal(_ensemble_of(env, tmp_path, tmp_path / "krahenbuhl"), refined)


def test_predict_with_crf(env, tmp_path, capsys):
    crf = pytest.importorskip("pyseg.crf")
    if not hasattr(crf, "dense_crf"):
        pytest.skip("pyseg.crf.dense_crf is not built")
    out = tmp_path / "sub.csv"
    rc = cli_predict.main(_args(env) + ["--out", str(out), "--crf", "krahenbuhl", "--crf-device", "cpu",
                                        "--vis", str(tmp_path / "vis")])
    assert rc == 0, capsys.readouterr().err
    assert S.validate_submission(out, S.image_ids_from_json(env["test"]), size=256)["rows"] == 4
    assert len(os.listdir(tmp_path / "vis")) == 4


@pytest.mark.parametrize("ckpt, match", [
    ("missing.pt", "does not exist"),
    ("foreign.pt", "not a pyseg checkpoint"),
    ("other_model.pt", "could not be loaded"),
    ("five.pt", "predicts 5 classes but test.json has 11"),
    ("lying.pt", "could not be loaded"),
])
def test_predict_rejects_bad_checkpoints(env, tmp_path, capsys, ckpt, match):
    out = tmp_path / "sub.csv"
    rc = cli_predict.main(_args(env, ckpt) + ["--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert match in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("pyseg-predict: error:")
    assert os.listdir(tmp_path) == []


def test_predict_rejects_bad_data_and_outputs(env, tmp_path, capsys):
    root = env["root"]
    (tmp_path / "noimages.json").write_text(json.dumps({"images": [], "annotations": [],
                                                        "categories": [{"id": 1, "name": "General trash"}]}))
    data = json.loads(env["test"].read_text())
    data["images"][1]["file_name"] = "images/batch_03/gone.jpg"
    (tmp_path / "missing.json").write_text(json.dumps(data))
    cases = [
        (["--ann", str(tmp_path / "noimages.json"), "--out", str(tmp_path / "a.csv")], "has no images"),
        (["--ann", str(tmp_path / "missing.json"), "--out", str(tmp_path / "a.csv")], "1 of 4 images"),
        (["--ann", str(tmp_path / "nope.json"), "--out", str(tmp_path / "a.csv")], "does not exist"),
        (["--ann", "test.json", "--out", str(tmp_path / "no" / "dir" / "a.csv")], "does not exist"),
        (["--ann", "test.json", "--out", str(tmp_path)], "is a directory"),
        (["--ann", "test.json", "--out", str(tmp_path / "a.csv"), "--crf", "fancy"], "expected 'off', a preset"),
        (["--ann", "test.json", "--out", str(tmp_path / "a.csv"), "--tta", "rotate"],
         "tta: expected 'flip' and/or scale factors"),
        (["--ann", "test.json", "--out", str(tmp_path / "a.csv"), "--batch-size", "0"], "--batch-size"),
    ]
    before = sorted(os.listdir(tmp_path))
    for extra, match in cases:
        rc = cli_predict.main(["--checkpoint", str(env["dir"] / "good.pt"), "--data-root", str(root)] + extra)
        err = capsys.readouterr().err
        assert rc == 2, (extra, err)
        assert match in err and "Traceback" not in err, (extra, err)
        assert sorted(os.listdir(tmp_path)) == before


def test_predict_cuda_crf_without_gpu_is_an_error(env, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc = cli_predict.main(_args(env) + ["--out", str(tmp_path / "a.csv"), "--crf", "deeplab",
                                        "--crf-device", "cuda"])
    assert rc == 2 and "needs a CUDA GPU" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_evaluate_reports_metrics_and_plot(env, tmp_path, capsys):
    rc = cli_evaluate.main(_args(env, ann="val.json") + ["--crf", "off", "--plot", str(tmp_path / "cm.png"),
                                                         "--json", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "mIoU (global)" in out and "mIoU (per image)" in out and "Background" in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["images"] == 3 and len(m["no_crf"]["cm"]) == 11 and m["crf"] is None
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc = cli_evaluate.main(_args(env, ann="test.json") + ["--crf", "off"])
    assert rc == 2 and "has no annotations" in capsys.readouterr().err
    rc = cli_evaluate.main(_args(env, ann="val.json") + ["--crf-layer", "off"])
    err = capsys.readouterr().err
    assert rc == 2 and "--crf-layer off:" in err and "has no CRF layer" in err


def test_tune_crf_cli_errors(env, capsys):
    rc = cli_tune.main(_args(env, ann="test.json"))
    assert rc == 2 and "has no annotations" in capsys.readouterr().err
    rc = cli_tune.main(_args(env, ann="val.json") + ["--max-images", "-1"])
    assert rc == 2 and "--max-images" in capsys.readouterr().err
    rc = cli_tune.main(_args(env, "five.pt", ann="val.json"))
    assert rc == 2 and "predicts 5 classes" in capsys.readouterr().err


@pytest.mark.parametrize("baseline,says", [(0.6, True), (0.4, False)])
def test_tune_crf_says_when_no_crf_setting_helps(env, capsys, monkeypatch, baseline, says):
    from pyseg.crf.params import CRFParams
    from pyseg.inference import crf_tuning as T

    result = T.TuneResult(CRFParams.preset("deeplab"), 0.5, baseline, {"deeplab": 0.5, "krahenbuhl": 0.45})
    monkeypatch.setattr(T, "search", lambda *a, **k: result)
    assert cli_tune.main(_args(env, ann="val.json")) == 0
    assert ("no CRF setting beat the model alone" in capsys.readouterr().out) == says


def test_tune_crf_cli_runs(env, tmp_path, capsys, monkeypatch):
    crf = pytest.importorskip("pyseg.crf")
    if not hasattr(crf, "dense_crf"):
        pytest.skip("pyseg.crf.dense_crf is not built")
    from pyseg.inference import crf_tuning as T

    monkeypatch.setattr(T, "COARSE_BILATERAL", {"bilateral_sxy": (20.0, 80.0), "bilateral_srgb": (5.0,),
                                                "bilateral_compat": (5.0,)})
    monkeypatch.setattr(T, "GAUSSIAN", {"gaussian_sxy": (3.0,), "gaussian_compat": (0.0, 3.0)})
    rc = cli_tune.main(_args(env, ann="val.json") + ["--iterations", "2", "--coarse-only", "--out",
                                                      str(tmp_path / "crf.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "best preset:" in out and "without CRF" in out
    saved = json.loads((tmp_path / "crf.json").read_text())
    assert saved["params"]["iterations"] == 2
    rc = cli_predict.main(_args(env) + ["--out", str(tmp_path / "s.csv"), "--crf", str(tmp_path / "crf.json")])
    assert rc == 0
    np.testing.assert_equal(S.validate_submission(tmp_path / "s.csv", size=256)["rows"], 4)
