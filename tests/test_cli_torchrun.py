"""pyseg-predict and pyseg-evaluate under torchrun (real processes, gloo): each rank takes a contiguous block,
rank 0 writes the one CSV / the metrics, the same as one process; more ranks than images; a failing run writes
nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import pyseg  # noqa: E402

MODEL = "deeplabv3_resnet18"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from pyseg.data import CocoSegmentation, make_demo_dataset
    from pyseg.models import create_model
    from pyseg.training.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("ranks")
    paths = make_demo_dataset(d / "data", n_train=1, n_val=3, n_test=3, size=40, seed=1)
    ds = CocoSegmentation(paths["root"], paths["val"], classes="trash11")
    torch.manual_seed(0)
    ck = {"model": create_model(MODEL, ds.num_classes).state_dict(), "model_name": MODEL, "model_kwargs": {},
          "num_classes": ds.num_classes, "class_names": ds.class_names, "epoch": 0, "metrics": {},
          "config": {"data": {"classes": "trash11", "image_size": 32, "ignore_index": 255}}}
    save_checkpoint(d / "ck.pt", ck)
    two = json.loads(Path(paths["test"]).read_text())
    two["images"] = two["images"][:2]
    (Path(paths["root"]) / "two.json").write_text(json.dumps(two))
    return {"dir": d, "root": str(paths["root"]), "ck": str(d / "ck.pt")}


def _run(env, tmp_path, command: str, args: list[str], ranks: int | None):
    """``python -m pyseg.cli.COMMAND`` in one process, or under torchrun with ``ranks`` processes."""
    launch = [sys.executable, "-m", f"pyseg.cli.{command}"] if ranks is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
        "-m", f"pyseg.cli.{command}"]
    run_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(pyseg.__file__).parents[1]))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        run_env.pop(key, None)
    common = ["--checkpoint", env["ck"], "--data-root", env["root"], "--device", "cpu", "--num-threads", "1"]
    done = subprocess.run(launch + common + args, cwd=tmp_path, env=run_env, capture_output=True, text=True,
                          timeout=240)
    done.stderr_head = done.stderr[:6000]  # pyseg's own lines come before torchrun's failure report
    return done


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_predict_two_ranks_writes_the_same_csv_as_one_process(env, tmp_path):
    crf = ["--crf", "krahenbuhl", "--crf-device", "cpu", "--size", "24", "--batch-size", "1"]
    one = _run(env, tmp_path, "predict", ["--ann", "test.json", "--out", str(tmp_path / "one.csv")] + crf, None)
    assert one.returncode == 0, one.stderr_head
    two = _run(env, tmp_path, "predict", ["--ann", "test.json", "--out", str(tmp_path / "two.csv")] + crf, 2)
    assert two.returncode == 0, two.stderr_head
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert two.stdout.count("wrote ") == 1 and "3 rows of 24x24" in two.stdout  # rank 0 alone reports
    assert _leftovers(tmp_path) == []


def test_predict_more_ranks_than_images(env, tmp_path):
    one = _run(env, tmp_path, "predict", ["--ann", "two.json", "--out", str(tmp_path / "one.csv")], None)
    assert one.returncode == 0, one.stderr_head
    three = _run(env, tmp_path, "predict", ["--ann", "two.json", "--out", str(tmp_path / "three.csv")], 3)
    assert three.returncode == 0, three.stderr_head
    assert "rank 2 has no images (2 images over 3 ranks)" in three.stderr
    assert (tmp_path / "three.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()
    assert _leftovers(tmp_path) == []


def test_evaluate_two_ranks_gives_the_numbers_of_one_process(env, tmp_path):
    args = ["--ann", "val.json", "--crf", "krahenbuhl", "--crf-device", "cpu", "--batch-size", "2"]
    one = _run(env, tmp_path, "evaluate", args + ["--json", str(tmp_path / "one.json")], None)
    assert one.returncode == 0, one.stderr_head
    two = _run(env, tmp_path, "evaluate", args + ["--json", str(tmp_path / "two.json")], 2)
    assert two.returncode == 0, two.stderr_head
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    a.pop("seconds"), b.pop("seconds")
    assert a == b and a["images"] == 3 and a["crf"] is not None
    assert two.stdout.count("mIoU") == one.stdout.count("mIoU")  # one report, from rank 0


def test_a_failing_torchrun_writes_nothing_and_keeps_the_old_file(env, tmp_path):
    out = tmp_path / "sub.csv"
    out.write_text("an earlier submission\n")
    bad = _run(env, tmp_path, "predict", ["--ann", "nope.json", "--out", str(out)], 2)
    assert bad.returncode != 0
    assert re.search(r"pyseg-predict: error: annotation file \S*nope.json does not exist", bad.stderr)
    assert not re.search(r'File ".*pyseg/', bad.stderr)  # torchrun reports the exit codes; pyseg raised nothing
    assert out.read_text() == "an earlier submission\n" and _leftovers(tmp_path) == []
    probs = _run(env, tmp_path, "predict", ["--ann", "test.json", "--out", str(out), "--save-probs", "p"], 2)
    assert probs.returncode != 0 and "--save-probs writes one folder from one process" in probs.stderr


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shard_ranges_are_contiguous_balanced_and_in_order(world):
    from pyseg.training.distributed import shard_range

    for n in range(12):
        blocks = [shard_range(n, r, world) for r in range(world)]
        assert [i for b in blocks for i in b] == list(range(n))
        assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        shard_range(4, 2, 2)


def test_cleanup_joins_the_gloo_threads_even_after_torchvision(tmp_path):
    # torchvision imports torch._dynamo, which, imported after the group exists, kept it alive: its worker
    # threads then outlived the interpreter and a rank aborted at exit now and then.
    script = tmp_path / "ranks.py"
    script.write_text(
        "import os, sys\n"
        "from pyseg.training import distributed as D\n"
        "def threads():\n"
        "    return len(os.listdir('/proc/self/task'))\n"
        "before = threads()\n"
        "D.init_distributed('gloo', 'cpu')\n"
        "import torchvision  # noqa\n"
        "assert threads() > before\n"
        "D.gather_objects(os.environ['RANK'])\n"
        "D.broadcast_object([1])\n"
        "D.cleanup_distributed()\n"
        "print('threads', before, threads(), flush=True)\n")
    run_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(pyseg.__file__).parents[1]))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        run_env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script)], cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = re.findall(r"threads (\d+) (\d+)", done.stdout)
    assert len(counts) == 2 and all(a == b for a, b in counts), done.stdout
