"""The GPU training path's parts, checked where a CPU can check them: fp16 with its GradScaler across a resume,
per-item augmentation seeds with persistent workers and the RAM cache, torch.compile's fallback, the metrics
kept on the device, a warm-up longer than the run, and the CUDA-marked run of the real thing."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch

from pyseg.config import Config, apply_overrides
from pyseg.training.checkpoint import load_checkpoint
from pyseg.training.engine import fit
from pyseg.training.metrics import DeviceSegMetrics, SegMetrics


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pyseg.data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_data")
    make_demo_dataset(root, n_train=12, n_val=4, n_test=2, size=64, seed=0)
    return root


def _cfg(demo, *overrides):
    base = [f"data.root={demo}", "data.classes=trash11", "data.image_size=64", "data.batch_size=4",
            "data.num_workers=0", "data.train_transform={scale: [0.5, 1.0], hflip: 0.5, color: 0.5}",
            "model.name=deeplabv3_resnet18", "model.kwargs={aspp_channels: 16}", "optim.lr=1e-3",
            "train.epochs=2", "train.device=cpu", "train.plots=false", "train.tensorboard=false",
            "train.deterministic=true"]
    return apply_overrides(Config(name="gpu_path"), base + list(overrides))


def _rows(path):
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _fit(cfg, run_dir, **kw):
    torch.manual_seed(0)
    try:
        return fit(cfg, run_dir, **kw)
    finally:
        torch.use_deterministic_algorithms(False)


def _same_weights(a, b):
    wa, wb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)


def test_workers_and_ram_cache_do_not_change_the_run(demo, tmp_path):
    """Augmentation seeded per item: 0 workers, or 2 persistent workers reading a RAM cache, train alike."""
    plain = _cfg(demo)
    cached = _cfg(demo, "data.num_workers=2", "data.cache=ram")
    _fit(plain, tmp_path / "plain")
    _fit(cached, tmp_path / "cached")
    assert _rows(tmp_path / "plain" / "metrics.csv") == _rows(tmp_path / "cached" / "metrics.csv")
    _same_weights(tmp_path / "plain" / "checkpoints" / "last.pt", tmp_path / "cached" / "checkpoints" / "last.pt")


def test_augmentation_changes_between_epochs_and_items(demo):
    from pyseg.training.build import build_datasets
    from pyseg.training.loaders import SeededItems, item_seed

    train_set, _ = build_datasets(_cfg(demo).data)
    items = SeededItems(train_set)
    a = items[(0, item_seed(0, 0, 0))]["image"]
    assert torch.equal(a, items[(0, item_seed(0, 0, 0))]["image"])  # same (epoch, index): same crop
    assert not torch.equal(a, items[(0, item_seed(0, 1, 0))]["image"])  # next epoch: another crop
    assert item_seed(0, 0, 1) != item_seed(0, 0, 0) != item_seed(1, 0, 0)


def test_ram_cache_holds_read_only_arrays(demo):
    from pyseg.data import CocoSegmentation
    from pyseg.data.ram_cache import fill_ram_cache

    ds = CocoSegmentation(demo, "val.json", classes="trash11")
    expect = [ds[i] for i in range(len(ds))]
    size = fill_ram_cache(ds, num_threads=2)
    assert size == sum(im.nbytes + m.nbytes for im, m in ds.ram)
    for i, want in enumerate(expect):
        got = ds[i]
        assert np.array_equal(got["image"], want["image"]) and np.array_equal(got["mask"], want["mask"])
        assert got["mask"].dtype == np.int64
        assert not ds.ram[i][0].flags.writeable
    with pytest.raises(TypeError, match="needs a pyseg dataset"):
        fill_ram_cache(torch.utils.data.TensorDataset(torch.zeros(2)))


def test_fp16_grad_scaler_state_survives_a_resume(demo, tmp_path):
    """fp16 on the CPU runs with a real GradScaler; its state goes into the checkpoint and comes back on resume."""
    cfg = _cfg(demo, "train.amp=fp16", "train.epochs=2")
    one = apply_overrides(cfg, ["train.epochs=1"])
    _fit(one, tmp_path / "run")
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    assert ckpt["scaler"] is not None and ckpt["scaler"]["scale"] == 65536.0
    ckpt["scaler"]["scale"] = 1024.0  # a scale the run could have reached; a resume must continue from it
    torch.save(ckpt, last)
    _fit(cfg, tmp_path / "run", resume=True)
    assert load_checkpoint(last)["scaler"]["scale"] == 1024.0


def test_fp16_trains_with_autocast(demo, tmp_path, monkeypatch):
    seen = []
    real = torch.nn.functional.cross_entropy

    def spy(logits, *a, **k):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.float16)
        return real(logits, *a, **k)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", spy)
    _fit(_cfg(demo, "train.amp=fp16", "train.epochs=1"), tmp_path / "run")
    assert seen and seen[0] is True


def test_compile_on_a_cpu_falls_back_with_a_warning(demo, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        out = _fit(_cfg(demo, "train.compile=true", "train.epochs=1"), tmp_path / "run")
    assert out["epochs_run"] == 1
    assert "torch.compile is used on CUDA only" in caplog.text


def test_warmup_longer_than_the_run_is_shortened(demo, tmp_path, caplog):
    cfg = _cfg(demo, "train.epochs=1", "schedule.name=poly", "schedule.warmup_steps=500")
    with caplog.at_level(logging.WARNING):
        _fit(cfg, tmp_path / "run")
    assert "schedule.warmup_steps=500 is not shorter than the run (3 optimizer steps): using 1" in caplog.text
    assert "warmup_steps: 1" in (tmp_path / "run" / "config.yaml").read_text()


def test_missing_data_root_says_how_to_make_demo_data(tmp_path):
    from pyseg.training.build import build_datasets

    with pytest.raises(ValueError, match="pyseg-demo-data demo_data"):
        build_datasets(Config().data)
    cfg = apply_overrides(Config(), [f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match=r"is not a folder .*pyseg-demo-data .*nowhere"):
        build_datasets(cfg.data)


@pytest.mark.parametrize("ignore", [255, None])
def test_device_metrics_equal_host_metrics(ignore):
    g = torch.Generator().manual_seed(3)
    host, dev = SegMetrics(5, ignore), DeviceSegMetrics(5, ignore)
    for _ in range(3):
        gt = torch.randint(0, 5, (4, 9, 7), generator=g)
        gt[0, :3] = 255
        gt[1] = 4  # an image with a single class
        pred = torch.randint(0, 5, (4, 9, 7), generator=g)
        host.update(gt, pred)
        dev.update(gt, pred)
    got = dev.to_seg_metrics()
    assert np.array_equal(got.cm, host.cm)
    assert got.image_mious == pytest.approx(host.image_mious, rel=1e-12)
    assert got.compute()["miou_per_image"] == pytest.approx(host.compute()["miou_per_image"])


@pytest.mark.cuda
def test_cuda_training_path_end_to_end(demo, tmp_path):
    """On a GPU: fp16 + GradScaler, channels_last, torch.compile, cudnn benchmark, pinned memory, 2 workers and
    the RAM cache, then a resume; losses finite and the scaler's state restored."""
    cfg = _cfg(demo, "train.device=cuda", "train.amp=fp16", "train.channels_last=true", "train.compile=true",
               "train.deterministic=false", "data.num_workers=2", "data.cache=ram", "train.epochs=2")
    _fit(apply_overrides(cfg, ["train.epochs=1"]), tmp_path / "run")
    out = _fit(cfg, tmp_path / "run", resume=True)
    assert out["epochs_run"] == 2
    assert torch.backends.cudnn.benchmark
    rows = _rows(tmp_path / "run" / "metrics.csv")
    assert all(np.isfinite(float(r["train_loss"])) for r in rows)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["scaler"]["scale"] > 0
