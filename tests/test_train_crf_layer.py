"""model.crf: pyseg-train learns the CRF layer end to end; the checkpoint keeps it; evaluate and predict use it
without a second CRF unless asked."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import yaml

from pyseg.cli import evaluate as evaluate_cli
from pyseg.cli import train as train_cli
from pyseg.config import load_config
from pyseg.crf.params import CRFParams
from pyseg.models.crf_refined import CRFRefined, parse_crf_spec


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pyseg.data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_data")
    make_demo_dataset(root, n_train=4, n_val=2, n_test=1, size=48, seed=0)
    return root


def _config(tmp_path, demo, crf: str) -> str:
    path = tmp_path / "crf.yaml"
    path.write_text(f"""
data: {{root: "{demo}", classes: trash11, image_size: 48, batch_size: 2, num_workers: 0}}
model: {{name: deeplabv3_resnet18, kwargs: {{aspp_channels: 16}}{crf}}}
optim: {{lr: 1.0e-3, crf_lr: 0.5}}
train: {{epochs: 2, device: cpu, plots: false, seed: 3}}
""")
    return str(path)


def test_train_learns_the_crf_and_the_checkpoint_keeps_it(tmp_path, demo, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, demo, ", crf: {iterations: 2, params: deeplab, learn: [compat, weights]}")
    assert train_cli.main(["--config", cfg, "--output-dir", "run"]) == 0
    out = capsys.readouterr().out
    assert "learned CRF gaussian: weight" in out and "learned CRF bilateral: weight" in out

    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["crf"] == {"iterations": 2, "params": parse_crf_spec({"params": "deeplab"})["params"],
                           "learn": ["compat", "weights"]}
    state = ckpt["model"]
    # learned: the weights moved away from the preset's (3, 4) and the compatibilities from -I
    assert not torch.allclose(state["crf.weights"], torch.tensor([3.0, 4.0]))
    assert not torch.allclose(state["crf.compat"], -torch.eye(11).repeat(2, 1, 1))
    assert [g["name"] for g in ckpt["optimizer"]["param_groups"]] == ["backbone", "crf", "head"]
    assert ckpt["optimizer"]["param_groups"][1]["initial_lr"] == 0.5  # optim.crf_lr

    from pyseg.training.checkpoint import load_model

    model, _ = load_model(tmp_path / "run" / "checkpoints" / "last.pt")
    assert isinstance(model, CRFRefined) and torch.equal(model.crf.weights.detach(), state["crf.weights"])

    # evaluate: the CRF-layer model is scored as is (no second CRF by default), and with one when asked
    data = ["--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"), "--data-root", str(demo),
            "--ann", "val.json", "--device", "cpu"]
    assert evaluate_cli.main(data + ["--json", "auto.json"]) == 0
    assert json.loads((tmp_path / "auto.json").read_text())["crf"] is None
    assert evaluate_cli.main(data + ["--crf", "krahenbuhl", "--json", "asked.json"]) == 0
    assert json.loads((tmp_path / "asked.json").read_text())["crf"] is not None
    assert "applying a second CRF (krahenbuhl) as asked" in capsys.readouterr().err
    # --crf-layer off: the network alone, then a plain model (so --crf auto means the default CRF)
    from pyseg.cli import common

    parser = argparse.ArgumentParser()
    common.add_model_args(parser, crf_default="auto")
    args = parser.parse_args(data + ["--crf-layer", "off"])
    net = common.load_everything(args)[0]
    assert net is not None and not isinstance(net, CRFRefined) and not any("crf." in k for k in net.state_dict())
    assert args.crf == "krahenbuhl"
    assert evaluate_cli.main(data + ["--crf-layer", "off", "--crf", "off", "--json", "net.json"]) == 0
    assert json.loads((tmp_path / "net.json").read_text())["crf"] is None


def test_the_layer_sees_the_raw_image():
    # the wrapper undoes the transform's normalisation: the CRF gets the uint8 pixels back exactly
    from pyseg.data.transforms import eval_transform

    image = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    x = eval_transform(None)(image=image)["image"][None]
    seen = {}

    class Spy(torch.nn.Module):
        num_classes = 2

        def forward(self, x):
            return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    model = CRFRefined(Spy(), {"iterations": 1}, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    model.crf.forward = lambda logits, rgb: seen.setdefault("rgb", rgb) is None or logits
    model(x)
    assert torch.equal(seen["rgb"].round().to(torch.uint8)[0].permute(1, 2, 0), torch.from_numpy(image))


@pytest.mark.parametrize("crf,match", [
    ({"iterations": 0}, "model.crf.iterations must be an integer >= 1, got 0"),
    ({"learn": ["sigma"]}, r"model.crf.learn must be a list of some of \['compat', 'weights'\]"),
    ({"params": "crisp"}, "unknown CRF preset 'crisp'"),
    ({"params": {"gaussian_sxy": -1}}, "gaussian_sxy must be a finite number > 0"),
    ({"steps": 5}, r"model.crf: unknown keys \['steps'\]"),
])
def test_bad_crf_config_is_a_clear_error(tmp_path, crf, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "deeplabv3_resnet18", "crf": crf}}))
    with pytest.raises(ValueError, match=match):
        load_config(path)


def test_crf_params_from_a_tuned_file(tmp_path):
    # pyseg-tune-crf --out writes {"params": {...}, "score": ...}: the layer can start from the tuned CRF
    tuned = CRFParams(5.0, 5.0, 21.0, 4.2, 6.0, 10)
    (tmp_path / "crf_tuned.json").write_text(json.dumps({"params": tuned.to_dict(), "score": 0.41}))
    spec = parse_crf_spec({"params": str(tmp_path / "crf_tuned.json"), "iterations": 5})
    assert spec["params"] == tuned.to_dict() and spec["iterations"] == 5
    with pytest.raises(ValueError, match=r"model.crf.params: CRF parameter file .*missing.json does not exist"):
        parse_crf_spec({"params": str(tmp_path / "missing.json")})
    config = tmp_path / "c.yaml"  # the config keeps the values: a run does not depend on the file staying
    config.write_text(yaml.safe_dump({"model": {"name": "deeplabv3_resnet18",
                                                "crf": {"params": str(tmp_path / "crf_tuned.json")}}}))
    assert load_config(config).model.crf["params"] == tuned.to_dict()
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a mapping of CRF parameters, got list"):
        CRFParams.from_file(tmp_path / "list.json")


def test_fine_tuning_starts_from_a_checkpoint_with_or_without_its_crf(tmp_path, demo, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    assert train_cli.main(["--config", _config(tmp_path, demo, ", crf: {iterations: 1}"), "--output-dir", "a",
                           "--epochs", "1"]) == 0
    from pyseg.training.build import build_model

    ck = str(tmp_path / "a" / "checkpoints" / "last.pt")
    trained = torch.load(ck, weights_only=True)["model"]
    for crf in (None, {"iterations": 2}):  # into a plain model, and under a new CRF layer
        cfg = load_config(_config(tmp_path, demo, ""), [f"model.init_checkpoint={ck}"])
        cfg.model.crf = crf
        model = build_model(cfg, 11)
        net = model.net if crf else model
        assert all(torch.equal(v, trained["net." + k]) for k, v in net.state_dict().items())
    cfg = load_config(_config(tmp_path, demo, ""), [f"model.init_checkpoint={ck}", "model.name=deeplabv3_resnet50"])
    with pytest.raises(ValueError, match="does not fit this model"):
        build_model(cfg, 11)
