"""A real crash: ``pyseg-train`` as a subprocess, SIGKILLed in the middle of an epoch or of a checkpoint write
(kill points from :mod:`pyseg.faults`), then ``pyseg-train --resume``. The resumed run's metrics, LR log, best
per-class IoU and checkpoints equal an uninterrupted run's bit for bit (with and without loader workers), and
no file in the run folder is ever half-written, nor a temp file left behind after the resume.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pyseg.config import load_config
from pyseg.fileio import open_temp_beside, remove_stale_temps
from pyseg.training.checkpoint import load_checkpoint

BIN = Path(sys.executable).parent
EPOCHS = 3  # 8 training images, batch 4: 2 optimizer steps per epoch
# SGD at this LR improves val mIoU in epochs 1 and 2 only, so best.pt is last written in epoch 2 of 3.
CONFIG = """
data: {{root: "{root}", classes: trash11, image_size: 64, batch_size: 4, num_workers: 0}}
model: {{name: deeplabv3_resnet18, kwargs: {{aspp_channels: 16}}}}
optim: {{name: sgd, lr: 0.2}}
schedule: {{name: cosine, warmup_steps: 1}}
train: {{epochs: {epochs}, device: cpu, plots: false, tensorboard: false, deterministic: true, log_every: 1}}
"""


def _train(cwd: Path, args: list[str], kill: str | None = None) -> tuple[int, str]:
    """Run pyseg-train in its own process group; returns (exit code, output). The group is killed afterwards, so
    that loader workers orphaned by a SIGKILLed parent do not outlive the test."""
    env = {k: v for k, v in os.environ.items() if k != "PYSEG_FAULT_KILL"}
    env["OMP_NUM_THREADS"] = "1"
    if kill is not None:
        env["PYSEG_FAULT_KILL"] = kill
    log = cwd / "train_output.txt"
    with open(log, "w") as out:
        proc = subprocess.Popen([str(BIN / "pyseg-train")] + args, cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=300)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return rc, log.read_text()


def _csv(path: Path) -> list[dict]:
    """Rows of a run-folder CSV, checking that every row has the header's columns (none torn off)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows and all(len(r) == len(rows[0]) for r in rows), f"{path} has a torn row:\n{path.read_text()}"
    return [dict(zip(rows[0], r)) for r in rows[1:]]


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Demo data, the config, and an uninterrupted run of it (no loader workers)."""
    from pyseg.data import make_demo_dataset

    base = tmp_path_factory.mktemp("crash")
    make_demo_dataset(base / "data", n_train=8, n_val=3, n_test=1, size=64, seed=0)
    (base / "tiny.yaml").write_text(CONFIG.format(root=base / "data", epochs=EPOCHS))
    rc, out = _train(base, ["--config", "tiny.yaml", "--output-dir", "full"])
    assert rc == 0, out
    miou = [float(r["val_miou"]) for r in _csv(base / "full" / "metrics.csv")]
    assert miou[1] > miou[0] and miou[2] <= miou[1], \
        f"the kill in best.pt needs a best epoch (2) before the last one; val mIoU per epoch: {miou}"
    return base


def _check_whole(run: Path, killed_in: str) -> None:
    """Right after the kill: every file parses, the CSVs are at most one epoch ahead of last.pt, and the only temp
    file is the killed writer's, torn in half."""
    done = load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]
    load_config(run / "config.yaml")
    epochs = [int(r["epoch"]) for r in _csv(run / "metrics.csv")]
    assert epochs == list(range(1, len(epochs) + 1)) and done <= len(epochs) <= done + 1, (epochs, done)
    assert {int(r["epoch"]) for r in _csv(run / "lr.csv")} == set(epochs)
    _csv(run / "best_per_class_iou.csv")
    load_checkpoint(run / "checkpoints" / "best.pt")
    temps = sorted(run.rglob("*.tmp"))
    if killed_in.startswith("write:"):
        name = killed_in.removeprefix("write:").rsplit("@", 1)[0]
        assert [p.name.startswith(f".{name}.") for p in temps] == [True], f"expected the killed {name}'s temp: {temps}"
        with pytest.raises(ValueError, match="could not load"):  # the kill did cut the write in half
            load_checkpoint(temps[0])
    else:
        assert temps == []


def _assert_same_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        if torch.is_tensor(a[k]):
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{what}[{k}]")
        elif isinstance(a[k], dict):
            _assert_same_state(a[k], b[k], f"{what}[{k}]")
        else:  # repr: exact for floats, and nan equals nan
            assert repr(a[k]) == repr(b[k]), f"{what}[{k}]: {a[k]!r} != {b[k]!r}"


def _assert_same_run(full: Path, run: Path) -> None:
    assert _files(run) == _files(full)  # no temp file left over, nothing missing
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in _csv(full / "metrics.csv")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in _csv(run / "metrics.csv")] == strip
    for name in ["lr.csv", "best_per_class_iou.csv"]:
        assert (run / name).read_text() == (full / name).read_text(), name
    for name in ["last.pt", "best.pt"]:
        a, b = load_checkpoint(full / "checkpoints" / name), load_checkpoint(run / "checkpoints" / name)
        assert a["epoch"] == b["epoch"] and a["best_miou"] == b["best_miou"], name
        _assert_same_state(a["model"], b["model"], f"{name} model")
        _assert_same_state(a["optimizer"], b["optimizer"], f"{name} optimizer")
        _assert_same_state(a["metrics"], b["metrics"], f"{name} metrics")


@pytest.mark.slow
@pytest.mark.parametrize("kill, workers", [
    ("optimizer_step@3", 0),  # after the first of epoch 2's two steps
    ("optimizer_step@3", 2),
    ("write:last.pt@2", 0),  # writing epoch 2's last.pt
    ("write:best.pt@2", 2),  # writing epoch 2's best.pt, the last time it improves
])
def test_sigkill_then_resume_equals_an_uninterrupted_run(reference, kill, workers):
    run = reference / f"cut_{kill.replace(':', '_').replace('@', '_')}_{workers}"
    rc, out = _train(reference, ["--config", "tiny.yaml", "--output-dir", run.name,
                                 "--set", f"data.num_workers={workers}"], kill=kill)
    assert rc == -signal.SIGKILL, f"expected the run to be SIGKILLed at {kill}, it exited {rc}:\n{out}"
    _check_whole(run, kill)
    rc, out = _train(reference, ["--resume", "--output-dir", run.name])
    assert rc == 0, out
    assert f"resumed from {run.name}" in out
    _assert_same_run(reference / "full", run)


def test_a_bad_kill_spec_is_refused(tmp_path):
    env = dict(os.environ, PYSEG_FAULT_KILL="optimizer_step")
    r = subprocess.run([sys.executable, "-c", "import pyseg.faults"], env=env, capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode != 0 and "PYSEG_FAULT_KILL must be POINT@N" in r.stderr and "'optimizer_step'" in r.stderr


def test_remove_stale_temps_removes_only_the_writers_temps(tmp_path):
    f, stale = open_temp_beside(tmp_path / "last.pt")
    f.write(b"half a checkpoint")
    f.close()
    keep = ["last.pt", "notes.tmp", ".last.pt.tmp", ".hidden.tmp", ".last.pt.abc.tmp"]
    for name in keep:
        (tmp_path / name).write_text("user file")
    assert remove_stale_temps(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert remove_stale_temps(tmp_path / "absent") == []


@pytest.mark.slow
def test_a_run_killed_in_its_first_epoch_gets_a_clear_error(reference, capsys):
    """No last.pt yet: --resume cannot continue it and a new run cannot reuse the folder; both errors say why."""
    from pyseg.cli import train as train_cli

    rc, out = _train(reference, ["--config", "tiny.yaml", "--output-dir", "first"], kill="optimizer_step@1")
    assert rc == -signal.SIGKILL, out
    assert _files(reference / "first") == {"config.yaml", "train.log"}
    assert train_cli.main(["--resume", "--output-dir", str(reference / "first")]) == 2
    assert "stopped before its first epoch ended" in capsys.readouterr().err
    assert train_cli.main(["--config", str(reference / "tiny.yaml"), "--output-dir", str(reference / "first")]) == 2
    err = capsys.readouterr().err
    assert "stopped before its first epoch ended" in err and "pass --resume" not in err
