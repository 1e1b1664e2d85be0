"""The training loop: ``train_one_epoch``, ``validate`` and ``fit``, flat and readable in one sitting.

Batches are dicts {"image": (B,3,H,W) float, "mask": (B,H,W) int64} (or (image, mask) tuples).
``fit(cfg, run_dir)`` builds everything from the config, trains for ``cfg.train.epochs`` epochs with
evaluation after each, writes the run files (see :mod:`pyseg.training.run_files`) from rank 0, stops
early when the monitored value stops improving, and resumes from ``checkpoints/last.pt``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pyseg.config import Config
from pyseg.faults import kill_point
from pyseg.progress import with_progress
from pyseg.training import build, distributed as D, loaders
from pyseg.training.checkpoint import get_rng_state, load_checkpoint, set_rng_state
from pyseg.training.early_stopping import EarlyStopping
from pyseg.training.metrics import DeviceSegMetrics, all_reduce_metrics
from pyseg.training.run_files import RunFiles
from pyseg.training.schedules import build_scheduler

log = logging.getLogger(__name__)


def _unpack(batch, device, channels_last: bool):
    image, mask = (batch["image"], batch["mask"]) if isinstance(batch, dict) else batch
    image = image.to(device, non_blocking=True)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, mask.to(device, non_blocking=True).long()


def _autocast(device: torch.device, amp_dtype):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _check_finite(loss_sum, epoch: int, first: int, last: int) -> None:
    """Raise when the running loss went non-finite; checked every few batches (a check is a host sync)."""
    value = float(loss_sum)
    if not math.isfinite(value):
        where = f"batch {last}" if first == last else f"batches {first}-{last}"
        raise FloatingPointError(f"loss is {value} at epoch {epoch + 1}, {where}; lower the learning rate, enable "
                                 "grad clipping or check the data")


def train_one_epoch(model, loader, optimizer, scheduler, *, device, num_classes: int, ignore_index: int = 255,
                    scaler=None, amp_dtype=None, accum_steps: int = 1, grad_clip: float | None = None,
                    channels_last: bool = False, max_batches: int | None = None, log_every: int = 20,
                    progress: bool = False, epoch: int = 0, lr_log: list | None = None) -> dict:
    """One pass over ``loader``; the scheduler steps after every optimizer step.

    The loss is pixel-mean cross-entropy per batch, divided by ``accum_steps``; the optimizer steps every
    ``accum_steps`` batches and after the last one. Appends ``[epoch (1-based), step, lr_group0, lr_group1, ...]``
    (the LR used by that step) to ``lr_log``. Returns {"loss" (image-weighted mean over ranks), "miou",
    "miou_per_image", "pixel_acc"} computed from the argmax of the training logits. Loss and metrics stay on
    the device; the host reads them every ``log_every`` batches (a non-finite loss raises FloatingPointError
    naming those batches) and at the end.
    """
    model.train()
    metrics = DeviceSegMetrics(num_classes, ignore_index)
    n_batches = len(loader) if max_batches is None else min(len(loader), max_batches)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_images, checked = 0, 0
    optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for i, batch in enumerate(with_progress(loader, n_batches, progress, f"train {epoch + 1}")):
        if i >= n_batches:
            break
        image, mask = _unpack(batch, device, channels_last)
        do_step = (i + 1) % accum_steps == 0 or i + 1 == n_batches
        sync = model.no_sync() if (not do_step and hasattr(model, "no_sync")) else contextlib.nullcontext()
        with sync:
            with _autocast(device, amp_dtype):
                logits = model(image)
                loss = F.cross_entropy(logits.float(), mask, ignore_index=ignore_index)
            scaled = loss / accum_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_sum += loss.detach() * image.shape[0]
        n_images += image.shape[0]
        if (i + 1) % log_every == 0 or i + 1 == n_batches:
            _check_finite(loss_sum, epoch, checked + 1, i + 1)
            checked = i + 1
            if not progress and (i + 1) % log_every == 0:
                log.info("epoch %d [%d/%d] loss %.4f lr %.3g %.1f img/s", epoch + 1, i + 1, n_batches, loss.item(),
                         optimizer.param_groups[-1]["lr"], n_images / (time.perf_counter() - t0))
        if do_step:
            if lr_log is not None:
                lr_log.append([epoch + 1, len(lr_log)] + [g["lr"] for g in optimizer.param_groups])
            if scaler is not None:
                scaler.unscale_(optimizer)
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            kill_point("optimizer_step")
        metrics.update(mask, logits.detach().argmax(1))
    loss_sum, n_images = D.all_reduce_sum([loss_sum.item(), n_images], device if D.is_dist() else "cpu")
    out = all_reduce_metrics(metrics.to_seg_metrics(), device=device).compute()
    out.pop("iou_per_class")
    out["loss"] = loss_sum / max(n_images, 1)
    return out


@torch.no_grad()
def validate(model, loader, *, device, num_classes: int, ignore_index: int = 255, amp_dtype=None,
             channels_last: bool = False, max_batches: int | None = None, progress: bool = False) -> dict:
    """Cross-entropy (mean over all valid pixels of the set) and segmentation metrics, reduced over ranks.

    Logits are upsampled bilinearly when the model's output size differs from the mask. Returns {"loss",
    "miou", "miou_per_image", "pixel_acc", "iou_per_class"}.
    """
    model.eval()
    metrics = DeviceSegMetrics(num_classes, ignore_index)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_pixels = torch.zeros((), dtype=torch.int64, device=device)
    n_batches = len(loader) if max_batches is None else min(len(loader), max_batches)
    for i, batch in enumerate(with_progress(loader, n_batches, progress, "val")):
        if i >= n_batches:
            break
        image, mask = _unpack(batch, device, channels_last)
        with _autocast(device, amp_dtype):
            logits = model(image)
        logits = logits.float()
        if logits.shape[-2:] != mask.shape[-2:]:
            logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        loss_sum += F.cross_entropy(logits, mask, ignore_index=ignore_index, reduction="sum")
        n_pixels += (mask != ignore_index).sum()
        metrics.update(mask, logits.argmax(1))
    loss_sum, n_pixels = D.all_reduce_sum([loss_sum.item(), n_pixels.item()], device if D.is_dist() else "cpu")
    out = all_reduce_metrics(metrics.to_seg_metrics(), device=device).compute()
    out["loss"] = loss_sum / n_pixels if n_pixels else float("nan")
    return out


def _amp_setup(amp: str, device: torch.device):
    """(autocast dtype or None, GradScaler or None) for ``train.amp`` on ``device``."""
    if amp == "none":
        return None, None
    if amp == "bf16":
        return torch.bfloat16, None
    if device.type != "cuda":
        log.warning("train.amp=fp16 on %s: float16 autocast with a GradScaler runs, but far slower than float32 "
                    "there; use it on a CPU only to check a GPU config", device.type)
    return torch.float16, torch.amp.GradScaler(device.type)


def _compile(model, enabled: bool, device: torch.device):
    """``torch.compile(model)`` on CUDA; elsewhere the model itself, with a warning (compiling for a CPU takes
    minutes and a C++ toolchain, which a smoke run on a CPU should not need)."""
    if not enabled:
        return model
    if device.type != "cuda":
        log.warning("train.compile=true: torch.compile is used on CUDA only; training eagerly on %s", device.type)
        return model
    log.info("torch.compile: the first steps of training and of evaluation compile the model")
    return torch.compile(model)


def fit_warmup(cfg: Config, total_steps: int) -> None:
    """Shorten a warm-up that would not end before the run does (e.g. ``--epochs 1`` as a smoke run) to half of
    the run, with a warning; the config (and so config.yaml and the checkpoints) records the value used."""
    warmup = cfg.schedule.warmup_steps
    if warmup >= total_steps:
        cfg.schedule.warmup_steps = total_steps // 2
        log.warning("schedule.warmup_steps=%d is not shorter than the run (%d optimizer steps): using %d",
                    warmup, total_steps, cfg.schedule.warmup_steps)


def _fill_ram_caches(datasets, cache: str) -> None:
    if cache != "ram":
        return
    from pyseg.data.ram_cache import fill_ram_cache

    for ds in datasets:
        if getattr(ds, "ram", None) is None:
            fill_ram_cache(ds)


def _resume(run_dir: Path, info, model, optimizer, scheduler, scaler, stopper, files):
    """Load checkpoints/last.pt into the run's objects; returns (start_epoch, best_miou, history, lr_log)."""
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt", map_location="cpu")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    start_epoch, best_miou = int(ckpt["epoch"]), float(ckpt["best_miou"])
    stopper.load_state_dict(ckpt.get("early_stopping") or {})
    history, lr_log = files.load_history(start_epoch)
    rng = ckpt["rng"]
    if isinstance(rng, list):  # saved by a DDP run: one entry per rank
        if len(rng) != info.world_size:
            log.warning("checkpoint has RNG states of %d ranks, this run has %d: the random streams will "
                        "differ from an uninterrupted run", len(rng), info.world_size)
        rng = rng[info.rank % len(rng)]
    set_rng_state(rng)
    log.info("resumed from %s at epoch %d (best mIoU %.4f)", run_dir / "checkpoints" / "last.pt",
             start_epoch, best_miou)
    return start_epoch, best_miou, history, lr_log


def fit(cfg: Config, run_dir, *, resume: bool = False, model=None, datasets=None, progress: bool = False) -> dict:
    """Train ``cfg`` into ``run_dir``; returns {"best_miou", "best_epoch", "epochs_run", "stopped_early",
    "history"}.

    ``model`` / ``datasets`` = (train_set, val_set) may be given to bypass ``create_model`` and the COCO
    datasets (tests, notebooks). Datasets need ``num_classes`` (and optionally ``class_names``).
    """
    run_dir = Path(run_dir)
    device = build.resolve_device(cfg.train.device, D.env_dist_info().local_rank)
    info = D.init_distributed(cfg.train.dist_backend, device.type)
    device = build.resolve_device(cfg.train.device, info.local_rank)
    build.seed_everything(cfg.train.seed + info.rank, cfg.train.deterministic, device)

    train_set, val_set = datasets if datasets is not None else build.build_datasets(cfg.data)
    num_classes = int(train_set.num_classes)
    class_names = list(getattr(train_set, "class_names", None) or [str(c) for c in range(num_classes)])
    if model is None:
        model = build.build_model(cfg, num_classes)
    model = D.maybe_sync_batchnorm(model, cfg.model.sync_bn, device.type).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = _compile(model, cfg.train.compile, device)  # shares model's parameters; checkpoints use model
    ddp_model = (torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type ==
                                                           "cuda" else None) if D.is_dist() else net)

    train_sampler = torch.utils.data.DistributedSampler(train_set, num_replicas=info.world_size, rank=info.rank,
                                                        shuffle=True, seed=cfg.train.seed)
    val_sampler = D.ShardSampler(val_set, info.rank, info.world_size)
    bs, vbs = cfg.data.batch_size, cfg.data.val_batch_size or cfg.data.batch_size
    drop_last = len(train_sampler) > bs  # avoid a last batch of 1 image (BatchNorm needs 2 in training)
    n_batches = len(train_sampler) // bs if drop_last else math.ceil(len(train_sampler) / bs)
    if cfg.train.max_train_batches:
        n_batches = min(n_batches, cfg.train.max_train_batches)
    if n_batches == 0:
        raise ValueError(f"the training set of rank {info.rank} is empty ({len(train_set)} images)")
    steps_per_epoch = math.ceil(n_batches / cfg.train.accum_steps)
    fit_warmup(cfg, steps_per_epoch * cfg.train.epochs)
    _fill_ram_caches((train_set, val_set), cfg.data.cache)
    pin = device.type == "cuda"
    train_loader = loaders.make_loader(train_set, bs, sampler=train_sampler, num_workers=cfg.data.num_workers,
                                       seed=cfg.train.seed, pin_memory=pin, drop_last=drop_last)
    val_loader = loaders.make_loader(val_set, vbs, sampler=val_sampler, num_workers=cfg.data.num_workers,
                                     seed=cfg.train.seed, pin_memory=pin, seeded=False)

    optimizer = build.build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, steps_per_epoch * cfg.train.epochs)
    amp_dtype, scaler = _amp_setup(cfg.train.amp, device)
    stopper = EarlyStopping(cfg.early_stopping.monitor, cfg.early_stopping.patience, cfg.early_stopping.min_delta)
    files = RunFiles(run_dir, class_names, enabled=info.is_main, tensorboard=cfg.train.tensorboard,
                     lr_names=[g.get("name", f"group{i}") for i, g in enumerate(optimizer.param_groups)])

    if info.is_main:
        files.start(cfg)
    start_epoch, best_miou, history, lr_log = 0, -math.inf, [], []
    if resume:
        start_epoch, best_miou, history, lr_log = _resume(run_dir, info, model, optimizer, scheduler, scaler,
                                                          stopper, files)

    ckpt_base = {"model_name": cfg.model.name, "model_kwargs": build.checkpoint_model_kwargs(cfg.model.kwargs),
                 "crf": build.crf_spec(cfg),
                 "num_classes": num_classes, "class_names": class_names, "config": cfg.to_dict()}
    stopped_early = stopper.should_stop
    for epoch in range(start_epoch, cfg.train.epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        train_loader.sampler.set_epoch(epoch)
        train = train_one_epoch(ddp_model, train_loader, optimizer, scheduler, device=device,
                                num_classes=num_classes, ignore_index=cfg.data.ignore_index, scaler=scaler,
                                amp_dtype=amp_dtype, accum_steps=cfg.train.accum_steps,
                                grad_clip=cfg.train.grad_clip, channels_last=cfg.train.channels_last,
                                max_batches=n_batches, log_every=cfg.train.log_every,
                                progress=progress and info.is_main, epoch=epoch, lr_log=lr_log)
        D.broadcast_buffers(model)  # same BatchNorm statistics on every rank
        val = validate(net, val_loader, device=device, num_classes=num_classes,
                       ignore_index=cfg.data.ignore_index, amp_dtype=amp_dtype,
                       channels_last=cfg.train.channels_last, max_batches=cfg.train.max_val_batches,
                       progress=progress and info.is_main)
        row = {"epoch": epoch + 1, "train_loss": train["loss"], "val_loss": val["loss"], "val_miou": val["miou"],
               "val_miou_per_image": val["miou_per_image"], "val_pixel_acc": val["pixel_acc"],
               "train_miou": train["miou"], "train_pixel_acc": train["pixel_acc"],
               "lr": lr_log[-1][-1] if lr_log else optimizer.param_groups[-1]["lr"],
               "seconds": time.perf_counter() - t0}
        history.append(row)
        improved = math.isfinite(val["miou"]) and val["miou"] > best_miou
        best_miou = max(best_miou, val["miou"]) if math.isfinite(val["miou"]) else best_miou
        stopped_early = stopper.step(row[cfg.early_stopping.monitor])
        log.info("epoch %d/%d train_loss %.4f val_loss %.4f val_mIoU %.4f (per image %.4f) acc %.4f %.1fs%s",
                 epoch + 1, cfg.train.epochs, row["train_loss"], row["val_loss"], row["val_miou"],
                 row["val_miou_per_image"], row["val_pixel_acc"], row["seconds"], " *" if improved else "")

        rng = get_rng_state()
        if D.is_dist():  # every rank's generators, so that a resumed DDP run continues each stream
            gathered = [None] * info.world_size
            torch.distributed.all_gather_object(gathered, rng)
            rng = gathered
        if info.is_main:
            ckpt = dict(ckpt_base, model=model.state_dict(), epoch=epoch + 1,
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict() if scaler is not None else None, rng=rng,
                        metrics={"train": train, "val": val}, best_miou=best_miou,
                        early_stopping=stopper.state_dict(), pyseg_version=_version())
            files.save_epoch(row, history, lr_log, ckpt, improved, val["iou_per_class"], plots=cfg.train.plots)
        D.barrier()
        if stopped_early:
            log.info("early stopping: %s has not improved for %d epochs (best %.4f)", stopper.monitor,
                     stopper.patience, stopper.best)
    files.close()
    best = max(history, key=lambda r: (r["val_miou"] if math.isfinite(r["val_miou"]) else -1)) if history else None
    from pyseg.models.crf_refined import CRFRefined

    crf = model.crf if isinstance(model, CRFRefined) else None
    if crf is not None and info.is_main:
        log.info("learned CRF (weight x compatibility per term): %s", crf.summary())
    return {"best_miou": best_miou if math.isfinite(best_miou) else float("nan"),
            "best_epoch": best["epoch"] if best else None, "epochs_run": len(history),
            "stopped_early": stopped_early, "history": history,
            "crf": crf.summary() if crf is not None else None}


def _version() -> str:
    import pyseg

    return getattr(pyseg, "__version__", "unknown")
