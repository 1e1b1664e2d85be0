"""pyseg-evaluate / pyseg-tune-crf / pyseg-predict on mask-folder data (CamVid layout), as pyseg-train reads it."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from pyseg import submission as S  # noqa: E402
from pyseg.cli import evaluate as cli_evaluate  # noqa: E402
from pyseg.cli import predict as cli_predict  # noqa: E402
from pyseg.cli import tune_crf as cli_tune  # noqa: E402
from pyseg.data import MaskFolderSegmentation  # noqa: E402

MODEL = "deeplabv3_resnet18"
VOID = 11  # CamVid's void label: left out of the metrics


def _write_split(root, images, masks, names, rng):
    (root / images).mkdir(parents=True)
    if masks:
        (root / masks).mkdir(parents=True)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)).save(root / images / f"{name}.png")
        if masks:
            lab = rng.integers(0, 12, (36, 48), dtype=np.uint8)
            Image.fromarray(lab, mode="L").save(root / masks / f"{name}.png")


@pytest.fixture(scope="module")
def camvid(tmp_path_factory):
    from pyseg.models import create_model
    from pyseg.training.checkpoint import save_checkpoint

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("camvid")
    rng = np.random.default_rng(0)
    _write_split(d, "val", "valannot", ["b", "a", "c"], rng)  # written out of order: rows follow the sorted names
    _write_split(d, "test", None, ["t2", "t1"], rng)
    ds = MaskFolderSegmentation(d / "val", d / "valannot", classes="camvid11")
    torch.manual_seed(0)
    model = create_model(MODEL, ds.num_classes)
    ckpt = {"model": model.state_dict(), "model_name": MODEL, "model_kwargs": {}, "num_classes": ds.num_classes,
            "class_names": ds.class_names, "epoch": 0, "metrics": {}, "best_miou": 0.0,
            "config": {"data": {"format": "mask_folder", "classes": "camvid11", "image_size": 32,
                                "eval_size": None, "ignore_index": 255}}}
    save_checkpoint(d / "ck.pt", ckpt)
    return {"dir": d, "ck": str(d / "ck.pt"), "ds": ds}


def _args(env, *data):
    return ["--checkpoint", env["ck"], "--data-root", str(env["dir"]), *data, "--num-threads", "1"]


def test_evaluate_mask_folder_leaves_void_out(camvid, tmp_path, capsys):
    rc = cli_evaluate.main(_args(camvid, "--images", "val", "--masks", "valannot") + [
        "--crf", "krahenbuhl", "--crf-device", "cpu", "--json", str(tmp_path / "m.json")])
    assert rc == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "m.json").read_text())
    labels = [np.asarray(Image.open(camvid["dir"] / "valannot" / f"{n}.png")) for n in "abc"]
    counted = sum(int((lab != VOID).sum()) for lab in labels)
    assert m["images"] == 3
    assert int(np.sum(m["no_crf"]["cm"])) == counted == int(np.sum(m["crf"]["cm"]))
    assert len(m["no_crf"]["cm"]) == 11


def test_tune_crf_mask_folder(camvid, tmp_path, capsys):
    rc = cli_tune.main(_args(camvid, "--images", "val", "--masks", "valannot") + [
        "--max-images", "2", "--coarse-only", "--iterations", "2", "--out", str(tmp_path / "crf.json")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "caching probabilities of 2 images" in out.err
    assert json.loads((tmp_path / "crf.json").read_text())["params"]["iterations"] == 2


def test_predict_mask_folder_without_labels_rows_in_file_name_order(camvid, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    rc = cli_predict.main(_args(camvid, "--images", "test") + ["--out", str(out), "--size", "16"])
    assert rc == 0, capsys.readouterr().err
    ids, maps = S.decode_submission(out, size=16)
    assert ids == ["t1.png", "t2.png"] and maps.shape == (2, 16, 16) and maps.max() < 11


@pytest.mark.parametrize("data, match", [
    (["--ann", "x.json", "--images", "val"], "either --ann .* or --images"),
    (["--masks", "valannot"], "--masks goes with --images"),
    ([], "missing the data: --ann .* or --images"),
    (["--images", "nope"], "images folder .*nope does not exist"),
    (["--images", "val", "--masks", "nope"], "masks folder .*nope does not exist"),
    (["--images", "test", "--masks", "valannot"], "have no label PNG"),
])
def test_mask_folder_arguments_errors(camvid, tmp_path, capsys, data, match):
    rc = cli_evaluate.main(_args(camvid, *data))
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert re.search(match, err), err


def test_evaluate_needs_labels(camvid, capsys):
    rc = cli_evaluate.main(_args(camvid, "--images", "test"))
    assert rc == 2 and "has no annotations; evaluation needs labelled data" in capsys.readouterr().err


def test_mask_folder_needs_the_checkpoints_classes(camvid, tmp_path, capsys):
    from pyseg.training.checkpoint import save_checkpoint

    ck = torch.load(camvid["ck"], weights_only=False)
    ck["config"]["data"]["classes"], ck["class_names"] = None, None
    save_checkpoint(tmp_path / "nameless.pt", ck)
    rc = cli_evaluate.main(["--checkpoint", str(tmp_path / "nameless.pt"), "--data-root", str(camvid["dir"]),
                            "--images", "val", "--masks", "valannot"])
    assert rc == 2 and "the checkpoint names none" in capsys.readouterr().err
