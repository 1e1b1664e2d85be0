"""pyseg-train / pyseg-compare on the demo data with a real (small) pyseg model."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyseg.cli import compare as compare_cli
from pyseg.cli import train as train_cli
from pyseg.cli.train import choose_run_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pyseg.data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_data")
    make_demo_dataset(root, n_train=8, n_val=3, n_test=1, size=64, seed=0)
    return root


def _config(tmp_path, demo) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(f"""
data: {{root: "{demo}", classes: trash11, image_size: 64, batch_size: 4, num_workers: 0}}
model: {{name: deeplabv3_resnet18, kwargs: {{aspp_channels: 16}}}}
optim: {{lr: 1.0e-3}}
schedule: {{name: cosine, warmup_steps: 1}}
train: {{epochs: 1, device: cpu, plots: false}}
""")
    return path


def test_train_resume_version_and_compare(tmp_path, demo, monkeypatch, capsys):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, demo)
    assert train_cli.main(["--config", str(cfg), "--set", "train.plots=true"]) == 0
    v1 = tmp_path / "runs" / "tiny" / "v1"
    for name in ["config.yaml", "metrics.csv", "best_per_class_iou.csv", "checkpoints/last.pt",
                 "checkpoints/best.pt", "plots/lr.png", "train.log"]:
        assert (v1 / name).is_file(), name
    assert "best val mIoU" in capsys.readouterr().out

    # a second run never clobbers the first: it gets the next version
    assert train_cli.main(["--config", str(cfg), "--set", "optim.lr=3e-4", "schedule.name=constant"]) == 0
    v2 = tmp_path / "runs" / "tiny" / "v2"
    assert (v2 / "metrics.csv").is_file()

    # an explicit non-empty output dir is refused without --resume
    assert train_cli.main(["--config", str(cfg), "--output-dir", str(v1)]) == 2
    assert "not empty" in capsys.readouterr().err

    # resume v1 from its own config.yaml for one more epoch
    assert train_cli.main(["--resume", "--output-dir", str(v1), "--epochs", "2"]) == 0
    with open(v1 / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]

    from pyseg.training.checkpoint import load_model

    model, ckpt = load_model(v1 / "checkpoints" / "last.pt")
    assert ckpt["model_name"] == "deeplabv3_resnet18" and ckpt["epoch"] == 2
    assert ckpt["class_names"][1] == "General trash"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 11, 64, 64)

    capsys.readouterr()
    assert compare_cli.main([str(tmp_path / "runs" / "tiny"), "--out", str(tmp_path / "cmp.png"),
                             "--csv", str(tmp_path / "cmp.csv")]) == 0
    out = capsys.readouterr().out
    assert "best_val_miou" in out and "v1" in out and "v2" in out
    assert (tmp_path / "cmp.png").stat().st_size > 1000
    with open(tmp_path / "cmp.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["v1", "v2"]


def test_config_errors_exit_2(tmp_path, demo, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, demo)
    assert train_cli.main(["--config", str(cfg), "--set", "optim.lrr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    assert train_cli.main(["--config", str(cfg), "--set", "model.name=deeplab_nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert train_cli.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert train_cli.main(["--resume"]) == 2
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))
    assert compare_cli.main([str(tmp_path / "nothing")]) == 2


def test_print_config_and_module_entry_point(tmp_path, demo):
    cfg = _config(tmp_path, demo)
    res = subprocess.run([sys.executable, "-m", "pyseg.train", "--config", str(cfg), "--print-config",
                          "--set", "train.epochs=5"], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert "epochs: 5" in res.stdout and "deeplabv3_resnet18" in res.stdout


def test_choose_run_dir_policy(tmp_path):
    base = tmp_path / "runs"
    assert choose_run_dir(None, "x", False, base) == base / "x" / "v1"
    assert (base / "x" / "v1").is_dir()  # claimed at once
    (base / "x" / "v9").mkdir()
    assert choose_run_dir(None, "x", False, base) == base / "x" / "v10"
    with pytest.raises(ValueError, match="no run with checkpoints"):
        choose_run_dir(None, "x", True, base)
    (base / "x" / "v1" / "checkpoints").mkdir()
    (base / "x" / "v1" / "checkpoints" / "last.pt").write_bytes(b"")
    assert choose_run_dir(None, "x", True, base) == base / "x" / "v1"
    assert choose_run_dir(tmp_path / "empty", "x", False, base) == tmp_path / "empty"
    with pytest.raises(ValueError, match="not empty"):
        choose_run_dir(base / "x", "x", False, base)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    """Every config parses, names a known model, takes valid transform kwargs, and asks for a data root."""
    import inspect

    from pyseg.config import load_config
    from pyseg.data.transforms import eval_transform, train_transform
    from pyseg.models import list_models
    from pyseg.training.build import build_datasets

    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.model.name in list_models()
    train_transform(cfg.data.image_size, **cfg.data.train_transform)
    eval_transform(cfg.data.eval_size or cfg.data.image_size, **cfg.data.eval_transform)
    assert set(cfg.model.kwargs) <= set(inspect.signature(_model_class(cfg.model.name)).parameters)
    if cfg.data.root is None:
        with pytest.raises(ValueError, match="data.root is not set"):
            build_datasets(cfg.data)


def _model_class(name):
    import functools

    from pyseg import models

    factory = models._MODELS[name]
    return factory.func if isinstance(factory, functools.partial) else factory
