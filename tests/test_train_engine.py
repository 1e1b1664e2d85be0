"""fit() end to end on a tiny model and tiny synthetic data: run files, resume equivalence, early stopping, and
each trainer feature on its own (accumulation, clipping, SGD, channels_last, autocast, fp16 with its GradScaler)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from torch import nn

from pyseg.config import Config, apply_overrides
from pyseg.training.checkpoint import load_checkpoint
from pyseg.training.engine import fit, validate


class Shapes(torch.utils.data.Dataset):
    """N images (3,16,16) with a 3-class mask derived from the pixels; optional random flips from np.random."""

    num_classes = 3
    class_names = ["bg", "bright", "red"]

    def __init__(self, n: int, seed: int, augment: bool = False, fail_after: int | None = None):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 16, 16, generator=g)
        self.y = (self.x.mean(1) > 0.3).long() + (self.x[:, 0] > 1.0).long()
        self.augment, self.fail_after, self.calls = augment, fail_after, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated interruption")
        x, y = self.x[i], self.y[i]
        if self.augment and np.random.rand() < 0.5:  # global numpy RNG: restored on resume
            x, y = x.flip(-1), y.flip(-1)
        return {"image": x, "mask": y}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.head(self.backbone(x))


def _cfg(*overrides):
    base = ["train.epochs=3", "data.batch_size=4", "data.num_workers=0", "optim.lr=0.01", "train.plots=false",
            "train.tensorboard=false", "train.device=cpu"]
    return apply_overrides(Config(name="tiny"), base + list(overrides))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _run(cfg, run_dir, resume=False, fail_after=None, seed_model=0):
    torch.manual_seed(seed_model)
    model = Tiny()
    return fit(cfg, run_dir, resume=resume, model=model,
               datasets=(Shapes(22, 0, augment=True, fail_after=fail_after), Shapes(7, 1)))


def test_fit_writes_run_files(tmp_path):
    cfg = _cfg("train.plots=true", "schedule.name=exponential", "schedule.warmup_steps=3", "schedule.gamma=0.9",
               "optim.backbone_lr=0.001")
    result = _run(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for name in ["config.yaml", "metrics.csv", "lr.csv", "best_per_class_iou.csv", "train.log",
                 "checkpoints/last.pt", "checkpoints/best.pt", "plots/lr.png", "plots/loss.png", "plots/miou.png"]:
        assert (run / name).is_file(), name
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    rows = _rows(run / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for col in ["train_loss", "val_loss", "val_miou", "val_miou_per_image", "val_pixel_acc", "train_miou", "lr",
                "seconds"]:
        assert all(math.isfinite(float(r[col])) for r in rows), col
    # 22 images, batch 4, drop_last -> 5 steps per epoch; LR curve: warmup 0, 1/3, 2/3 then x0.9 per step
    lr = _rows(run / "lr.csv")
    assert len(lr) == 15
    head = [float(r["lr_head"]) for r in lr]
    expected = [0.01 * s / 3 if s < 3 else 0.01 * 0.9 ** (s - 3) for s in range(15)]
    assert head == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert float(lr[5]["lr_backbone"]) == pytest.approx(0.001 * 0.9 ** 2)  # backbone at its own LR
    assert float(rows[-1]["lr"]) == pytest.approx(head[-1])
    per_class = _rows(run / "best_per_class_iou.csv")
    assert [r["class_name"] for r in per_class] == Shapes.class_names
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    for key in ["model", "model_name", "model_kwargs", "num_classes", "class_names", "config", "epoch", "optimizer",
                "scheduler", "scaler", "rng", "metrics", "best_miou", "pyseg_version"]:
        assert key in ckpt, key
    assert ckpt["epoch"] == 3 and ckpt["num_classes"] == 3 and ckpt["config"]["name"] == "tiny"
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    assert best["metrics"]["val"]["miou"] == pytest.approx(result["best_miou"])
    assert max(float(r["val_miou"]) for r in rows) == pytest.approx(result["best_miou"])
    assert "epoch 3/3" in (run / "train.log").read_text()


def test_resume_gives_the_same_metrics(tmp_path):
    """Deterministic mode: a run interrupted in epoch 3 and resumed matches one that was not interrupted."""
    cfg = _cfg("train.epochs=4", "train.deterministic=true", "schedule.name=cosine", "schedule.warmup_steps=2")
    try:
        full = _run(cfg, tmp_path / "full")
        with pytest.raises(KeyboardInterrupt):  # 22 images per epoch: dies in the middle of epoch 3
            _run(cfg, tmp_path / "cut", fail_after=22 * 2 + 9)
        assert len(_rows(tmp_path / "cut" / "metrics.csv")) == 2
        resumed = _run(cfg, tmp_path / "cut", resume=True, seed_model=456)  # fresh weights: all from last.pt
    finally:
        torch.use_deterministic_algorithms(False)
    assert resumed["epochs_run"] == full["epochs_run"] == 4
    a, b = _rows(tmp_path / "full" / "metrics.csv"), _rows(tmp_path / "cut" / "metrics.csv")
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            if k != "seconds":
                assert ra[k] == rb[k], (k, ra, rb)
    assert (tmp_path / "full" / "lr.csv").read_text() == (tmp_path / "cut" / "lr.csv").read_text()
    wa = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


def test_early_stopping_on_miou(tmp_path):
    cfg = _cfg("train.epochs=6", "early_stopping.monitor=val_miou", "early_stopping.patience=2",
               "early_stopping.min_delta=1.0")  # nothing can improve mIoU by 1.0: stop after 1 + 2 epochs
    result = _run(cfg, tmp_path / "run")
    assert result["stopped_early"] and result["epochs_run"] == 3
    assert len(_rows(tmp_path / "run" / "metrics.csv")) == 3
    assert "early stopping" in (tmp_path / "run" / "train.log").read_text()
    # resuming a stopped run does not train further
    again = _run(cfg, tmp_path / "run", resume=True)
    assert again["epochs_run"] == 3 and again["stopped_early"]


# ------------------------------------------------------- trainer features, each on its own (CPU and CUDA)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


class Plain(nn.Module):
    """No BatchNorm and no dropout: a batch of 8 and two of 4 give the same gradient."""

    def __init__(self, inject_inf: bool = False):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 3, 1)
        self.inject_inf = inject_inf  # the first backward pass returns inf gradients (an fp16 overflow)

    def forward(self, x):
        f = self.backbone(x)
        if self.inject_inf and self.training:
            self.inject_inf = False
            f = _InfGrad.apply(f)
        return self.head(f)


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("inf"))


def _fit_plain(cfg, run_dir, device, model=None, resume=False):
    torch.manual_seed(0)
    model = model if model is not None else Plain()
    cfg = apply_overrides(cfg, [f"train.device={device}"])
    fit(cfg, run_dir, model=model, datasets=(Shapes(22, 0), Shapes(7, 1)), resume=resume)
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def _spy_optimizer(monkeypatch):
    """Wraps the optimizer fit builds: records it, and per step the parameters and gradients it saw."""
    from pyseg.training import build

    seen = {"steps": []}
    real = build.build_optimizer

    def wrapped(model, cfg):
        opt = real(model, cfg)
        seen["optimizer"] = opt
        params = [p for g in opt.param_groups for p in g["params"]]
        before = []

        def pre(*_):
            before[:] = [(p.detach().clone(), p.grad.detach().clone()) for p in params]

        def post(*_):
            seen["steps"].append([(b, g, p.detach().clone()) for (b, g), p in zip(before, params)])

        opt.register_step_pre_hook(pre)
        opt.register_step_post_hook(post)
        return opt

    monkeypatch.setattr(build, "build_optimizer", wrapped)
    return seen


def _grad_norm(step) -> float:
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.double()) for _, g, _ in step])))


@pytest.mark.parametrize("device", DEVICES)
def test_accumulation_over_k_batches_equals_one_k_times_larger_batch(tmp_path, monkeypatch, device):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 sums on a GPU too
    # SGD without momentum: the step is proportional to the gradient (Adam's first step would hide a factor)
    sgd = ["optim.name=sgd", "optim.momentum=0", "optim.lr=0.5", "train.epochs=1"]
    acc = _fit_plain(_cfg(*sgd, "data.batch_size=4", "train.accum_steps=2", "train.max_train_batches=2"),
                     tmp_path / "acc", device)
    big = _fit_plain(_cfg(*sgd, "data.batch_size=8", "train.max_train_batches=1"), tmp_path / "big", device)
    torch.manual_seed(0)
    start = Plain().state_dict()
    for k in start:
        moved = (big["model"][k].cpu() - start[k]).abs().max()
        assert moved > 1e-3, f"{k} did not move: the comparison would be vacuous"
        torch.testing.assert_close(acc["model"][k], big["model"][k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amp", ["none", "fp16"])
def test_clipping_bounds_the_gradient_norm_the_optimizer_sees(tmp_path, monkeypatch, device, amp):
    seen = _spy_optimizer(monkeypatch)
    _fit_plain(_cfg("train.epochs=1", f"train.amp={amp}"), tmp_path / "free", device)
    free = [_grad_norm(s) for s in seen["steps"]]
    clip = min(free) / 4
    seen["steps"].clear()
    _fit_plain(_cfg("train.epochs=1", f"train.amp={amp}", f"train.grad_clip={clip}"), tmp_path / "clipped", device)
    norms = [_grad_norm(s) for s in seen["steps"]]
    assert len(norms) == len(free) == 5
    assert max(norms) <= clip * (1 + 1e-5) and min(norms) >= clip * 0.99, (clip, norms)


@pytest.mark.parametrize("device", DEVICES)
def test_sgd_is_the_optimizer_that_steps(tmp_path, monkeypatch, device):
    seen = _spy_optimizer(monkeypatch)
    ckpt = _fit_plain(_cfg("train.epochs=1", "optim.name=sgd", "optim.lr=0.05", "optim.weight_decay=0.01",
                           "optim.momentum=0.8"), tmp_path / "run", device)
    assert type(seen["optimizer"]) is torch.optim.SGD
    assert ckpt["optimizer"]["param_groups"][0]["momentum"] == 0.8
    # SGD's first step: buffer = g + wd * p, p -= lr * buffer; its second: buffer = 0.8 buffer + g + wd * p
    (first, second) = seen["steps"][:2]
    buffers = []
    for before, grad, after in first:
        buffers.append(grad + 0.01 * before)
        torch.testing.assert_close(after, before - 0.05 * buffers[-1], rtol=1e-5, atol=1e-7)
    for (before, grad, after), buf in zip(second, buffers):
        torch.testing.assert_close(after, before - 0.05 * (0.8 * buf + grad + 0.01 * before), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_applies_to_parameters_and_inputs(tmp_path, device, channels_last):
    model, seen = Plain(), []

    def check(mod, args):
        cl = torch.channels_last
        seen.append((mod.training, mod.weight.is_contiguous(memory_format=cl), args[0].is_contiguous(memory_format=cl)))

    model.backbone[0].register_forward_pre_hook(check)
    _fit_plain(_cfg("train.epochs=1", f"train.channels_last={str(channels_last).lower()}"), tmp_path / "run", device,
               model)
    assert {training for training, _, _ in seen} == {True, False}  # training and validation
    assert all(w == channels_last and x == channels_last for _, w, x in seen), seen


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("amp, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("none", torch.float32)])
def test_forward_runs_under_autocast(tmp_path, device, amp, dtype):
    model, seen = Plain(), []

    def check(mod, args, out):
        dev = args[0].device.type
        seen.append((mod.training, torch.is_autocast_enabled(dev), out.dtype))

    model.head.register_forward_hook(check)
    _fit_plain(_cfg("train.epochs=1", f"train.amp={amp}"), tmp_path / "run", device, model)
    assert {training for training, _, _ in seen} == {True, False}
    assert all(on == (amp != "none") and got == dtype for _, on, got in seen), seen


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # the skip
@pytest.mark.parametrize("device", DEVICES)
def test_fp16_grad_scaler_skips_an_overflow_and_resumes_with_its_scale(tmp_path, monkeypatch, device):
    """The first backward overflows: the GradScaler skips that step (the optimizer steps 4 times for 5 batches,
    and no weight turns inf) and halves its scale; a resume continues from the saved scale and halves it again
    at the next overflow (a fresh scaler would end at 65536 / 2)."""
    seen = _spy_optimizer(monkeypatch)
    cfg = _cfg("train.amp=fp16", "train.epochs=2")
    ckpt = _fit_plain(apply_overrides(cfg, ["train.epochs=1"]), tmp_path / "run", device, Plain(inject_inf=True))
    assert len(seen["steps"]) == 4
    assert all(torch.isfinite(w).all() for w in ckpt["model"].values())
    assert ckpt["scaler"]["scale"] == 65536.0 / 2
    ckpt = _fit_plain(cfg, tmp_path / "run", device, Plain(inject_inf=True), resume=True)
    assert ckpt["epoch"] == 2 and ckpt["scaler"]["scale"] == 65536.0 / 4


def test_nan_loss_is_reported(tmp_path):
    class Bad(Tiny):
        def forward(self, x):
            return super().forward(x) * float("nan")

    with pytest.raises(FloatingPointError, match="loss is nan"):
        fit(_cfg("train.epochs=1"), tmp_path / "run", model=Bad(), datasets=(Shapes(8, 0), Shapes(4, 1)))


def test_evaluate_matches_metrics_by_hand():
    torch.manual_seed(0)
    model = Tiny().eval()
    ds = Shapes(5, 3)
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    out = validate(model, loader, device=torch.device("cpu"), num_classes=3)
    with torch.no_grad():
        logits = model(ds.x)
    loss = torch.nn.functional.cross_entropy(logits, ds.y).item()
    pred = logits.argmax(1)
    assert out["loss"] == pytest.approx(loss, rel=1e-5)
    assert out["pixel_acc"] == pytest.approx((pred == ds.y).float().mean().item())


def test_early_stopping_unit():
    from pyseg.training.early_stopping import EarlyStopping

    es = EarlyStopping("val_loss", patience=2, min_delta=0.01)
    assert [es.step(v) for v in [1.0, 0.995, 0.9, float("nan"), 0.95]] == [False, False, False, False, True]
    assert es.best == 0.9
    restored = EarlyStopping("val_loss", patience=2)
    restored.load_state_dict(es.state_dict())
    assert restored.should_stop and restored.best == 0.9
    off = EarlyStopping("val_miou", patience=0)
    assert not any(off.step(0.1) for _ in range(10))
    with pytest.raises(ValueError, match="monitor"):
        EarlyStopping("val_acc")
    with pytest.raises(ValueError, match="checkpoint tracked"):
        EarlyStopping("val_miou").load_state_dict(es.state_dict())


def test_tensorboard_scalars_when_available(tmp_path, monkeypatch):
    """With torch.utils.tensorboard importable, every metrics column goes to TensorBoard once per epoch."""
    import sys
    import types

    calls = []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    _run(_cfg("train.epochs=2", "train.tensorboard=true"), tmp_path / "run")
    assert calls[0] == ("init", str(tmp_path / "run" / "tb")) and calls[-1] == ("close",)
    assert ("val_miou", 2) in calls and ("train_loss", 1) in calls


@pytest.mark.parametrize("name, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                       ("sgd", torch.optim.SGD)])
def test_build_optimizer_groups(name, cls):
    from pyseg.training.build import build_optimizer

    model = Tiny()
    cfg = _cfg(f"optim.name={name}", "optim.lr=0.01", "optim.backbone_lr=0.001", "optim.weight_decay=0.05")
    opt = build_optimizer(model, cfg.optim)
    assert type(opt) is cls
    assert [g["name"] for g in opt.param_groups] == ["backbone", "head"]
    assert [g["lr"] for g in opt.param_groups] == [0.001, 0.01]
    assert all(g["weight_decay"] == 0.05 for g in opt.param_groups)
    n_bb = sum(p.numel() for p in model.backbone.parameters())
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == n_bb
    for p in model.backbone.parameters():  # frozen parameters are left out
        p.requires_grad_(False)
    assert [g["name"] for g in build_optimizer(model, cfg.optim).param_groups] == ["head"]
