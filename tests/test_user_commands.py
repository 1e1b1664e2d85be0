"""What users run, run as they run it: every command's --help, each benchmark's quickest mode and the GPU
training check's --smoke mode, from the repository root with the installed package.

A ``sitecustomize`` placed on PYTHONPATH makes each child Python fail (exit 3) if it imported pyseg from the
source tree instead of the installed package, which is what a script that puts the repository first on
sys.path does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMANDS = ["pyseg-train", "pyseg-compare", "pyseg-predict", "pyseg-evaluate", "pyseg-tune-crf", "pyseg-demo-data"]

GUARD = f"""
import atexit, os, sys
def _check():
    mod = sys.modules.get("pyseg")
    if mod is not None and os.path.realpath(mod.__file__).startswith({str(REPO / "pyseg")!r}):
        sys.stderr.write("pyseg was imported from the source tree: " + mod.__file__ + "\\n")
        sys.stderr.flush()
        os._exit(3)
atexit.register(_check)
"""


@pytest.fixture(scope="module")
def guarded_env(tmp_path_factory):
    d = tmp_path_factory.mktemp("guard")
    (d / "sitecustomize.py").write_text(GUARD)
    env = dict(os.environ, PYTHONPATH=str(d), PYTHONUNBUFFERED="1")
    return env


def _run(cmd, env, timeout=600):
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


def test_the_guard_bites(guarded_env):
    r = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.'); import pyseg"], cwd=REPO,
                       env=guarded_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "source tree" in r.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command, guarded_env):
    exe = BIN / command
    if not exe.exists():
        pytest.fail(f"{exe} is missing: the README's set-up installs the console scripts next to {sys.executable}")
    assert "usage:" in _run([str(exe), "--help"], guarded_env)


@pytest.mark.parametrize("script", ["crf_speed.py", "crf_speed_cuda.py", "train_speed.py", "predict_speed.py",
                                    "crf_gain.py", "cpu_profile.py", "crf_layer_speed.py", "crf_layer_accuracy.py"])
def test_benchmark_help(script, guarded_env):
    assert "usage:" in _run([sys.executable, f"benchmarks/{script}", "--help"], guarded_env)


@pytest.mark.pydensecrf
def test_crf_speed_quick(guarded_env):
    out = _run([sys.executable, "benchmarks/crf_speed.py", "--quick", "--threads", "2", "--repeats", "1",
                "--no-memory"], guarded_env)
    assert "512" in out and "pydensecrf" in out


def test_train_speed_quickest(guarded_env):
    out = _run([sys.executable, "benchmarks/train_speed.py", "--size", "64", "--batch-size", "2", "--steps", "1",
                "--rounds", "1", "--warmup", "0", "--only", "deeplabv3_resnet50 (OS16)"], guarded_env)
    assert "img/s" in out


def test_crf_layer_speed_quick(guarded_env):
    out = _run([sys.executable, "benchmarks/crf_layer_speed.py", "--quick", "--rounds", "1", "--size", "64"],
               guarded_env)
    assert "CRF layer forward + backward" in out and "training step" in out


def test_crf_layer_accuracy_quickest(guarded_env):
    out = _run([sys.executable, "benchmarks/crf_layer_accuracy.py", "--labels", "3", "--iterations", "2",
                "--height", "6", "--width", "7", "--seeds", "0"], guarded_env)
    assert "exact64" in out and "layer32" in out


@pytest.mark.data
def test_predict_speed_quickest(guarded_env, shared_data):
    data = shared_data / "trashcan"
    out = _run([sys.executable, "benchmarks/predict_speed.py", "--data-root", str(data), "--ann",
                str(data / "test.json"), "--max-images", "4", "--repeats", "1", "--input-size", "64",
                "--overlap", "off"], guarded_env)
    assert "s" in out


@pytest.mark.data
def test_crf_gain_quickest(guarded_env, shared_data):
    out = _run([sys.executable, "benchmarks/crf_gain.py", "--data", str(shared_data / "camvid"), "--max-images",
                "2", "--presets", "krahenbuhl", "--iterations", "2"], guarded_env)
    assert "mIoU" in out or "miou" in out.lower()


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.timeout(960)  # the suite's 300 s is too short for this whole pipeline; its own budget comes first
def test_gpu_all_check_smoke(guarded_env, shared_data, tmp_path):
    """The one-call GPU driver on the CPU: the layer's and the training check's --smoke runs (tiny model, 2
    iterations), every step ok, the files the device tool would bring back."""
    out_dir = tmp_path / "out"
    env = dict(guarded_env, PYTHON=sys.executable, OUT=str(out_dir), BUDGET_SECONDS="900")
    out = _run(["bash", "benchmarks/gpu_all_check.sh", "--smoke", str(shared_data / "trashcan")], env, timeout=940)
    assert "FAILED" not in out and "ok      train: " in out and "ok      layer: " in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["gpu_all_check.log", "layer.log", "layer_speed.json",
                                                          "results.tar.gz", "summary.json", "train.log"]
    with tarfile.open(out_dir / "results.tar.gz") as tar:
        files = sorted(n for n in tar.getnames() if tar.getmember(n).isfile())
    assert files == ["./train/confusion_val.png", "./train/metrics.csv", "./train/plots/loss.png",
                     "./train/plots/lr.png", "./train/plots/miou.png", "./train/submission.csv"]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["smoke"] and summary["epochs"] == 1
    assert set(summary["val"]) == {"no_crf", "crf"} and summary["crf_params"]["params"]
    assert 0 < summary["predict_test_s"]["without_crf"] < summary["predict_test_s"]["with_tuned_crf"]
    assert summary["train_speed"]["loop"]["efficiency"] > 0
    with tarfile.open(out_dir / "results.tar.gz") as tar:
        rows = tar.extractfile("./train/submission.csv").read().decode().splitlines()
    assert rows[0] == "image_id,PredictionString" and len(rows) == 151
    assert "CRF layer forward + backward" in (out_dir / "layer.log").read_text()


@pytest.mark.parametrize("script", ["gpu_train_check.sh", "gpu_all_check.sh"])
def test_gpu_checks_refuse_a_folder_without_the_jsons(tmp_path, guarded_env, script):
    r = subprocess.run(["bash", f"benchmarks/{script}", "--smoke", str(tmp_path)], cwd=REPO,
                       env=guarded_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "DATA_DIR" in r.stderr and str(tmp_path) in r.stderr
