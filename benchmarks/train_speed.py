"""Training throughput (images/s) of pyseg's DeepLab v3/v3+ (ResNet-50) vs torchvision's, and the data pipeline.

    python benchmarks/train_speed.py                          # CPU here: batch 4, 256x256, float32
    python benchmarks/train_speed.py --device cuda --amp bf16 --batch-size 32 --channels-last
    python benchmarks/train_speed.py --loop ../shared/data/trashcan --workers 8 --cache ram   # + the data loader

Each step: forward, pixel-mean cross-entropy, backward, Adam step (the step of pyseg.training.engine).
Models are timed in interleaved rounds (A, B, C, A, B, C, ...) after warm-up steps, so drifting load on a
shared machine hits them alike; the table gives the median and best round. torchvision's model runs at
output stride 8 (dilated layer3 and layer4); pyseg's default is output stride 16, so it is also timed at 8.
Nothing is downloaded: every model starts from random weights. Prints a table; not part of the tests.

``--loop DATA_ROOT`` also times pyseg's own training loop (``pyseg.training.engine.train_one_epoch``, with
``--loop-model``) fed by the real loader (``DATA_ROOT/train.json``, the training transform, ``--workers``
persistent workers, pinned memory, ``--cache``) against the same loop fed by ready-made batches of the same
shape (pinned host tensors, so the host-to-device copy is in both): their ratio is the data pipeline's
efficiency. ``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F


class _TorchvisionOut(torch.nn.Module):
    """torchvision's segmentation models return {"out": logits}; unwrap to logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def build_models(num_classes: int) -> dict:
    from torchvision.models.segmentation import deeplabv3_resnet50

    from pyseg.models import create_model

    return {
        "pyseg deeplabv3_resnet50 (OS16)": lambda: create_model("deeplabv3_resnet50", num_classes),
        "pyseg deeplabv3_resnet50 (OS8)": lambda: create_model("deeplabv3_resnet50", num_classes, output_stride=8),
        "pyseg deeplabv3plus_resnet50 (OS16)": lambda: create_model("deeplabv3plus_resnet50", num_classes),
        "torchvision deeplabv3_resnet50 (OS8)": lambda: _TorchvisionOut(
            deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)),
    }


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model, device, amp_dtype, channels_last: bool):
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(model(x).float(), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    return step


def _timed_epochs(run, rounds: int, device) -> list[float]:
    out = []
    for _ in range(rounds):
        _sync(device)
        t0 = time.perf_counter()
        n = run()
        _sync(device)
        out.append(n / (time.perf_counter() - t0))
    return out


def loop_efficiency(args, device, amp_dtype, bs: int) -> dict:
    """img/s of train_one_epoch fed by the real loader and by ready-made pinned batches (interleaved rounds)."""
    from pyseg.config import Config, apply_overrides
    from pyseg.models import create_model
    from pyseg.training import engine, loaders
    from pyseg.training.build import build_datasets

    cfg = apply_overrides(Config(), [f"data.root={args.loop}", f"data.image_size={args.size}",
                                     f"data.cache={args.cache}", "data.train_transform={hflip: 0.5, color: 0.0}"])
    t0 = time.perf_counter()
    train_set, _ = build_datasets(cfg.data)
    if args.cache == "ram":
        from pyseg.data.ram_cache import fill_ram_cache

        fill_ram_cache(train_set)
    setup_s = time.perf_counter() - t0
    sampler = torch.utils.data.RandomSampler(train_set, generator=torch.Generator().manual_seed(0))
    loader = loaders.make_loader(train_set, bs, sampler=sampler, num_workers=args.workers, seed=0,
                                 pin_memory=device.type == "cuda", drop_last=True)
    steps = min(args.loop_steps, len(loader))
    nc = train_set.num_classes
    g = torch.Generator().manual_seed(0)
    fake = [{"image": torch.randn(bs, 3, args.size, args.size, generator=g),
             "mask": torch.randint(0, nc, (bs, args.size, args.size), generator=g)} for _ in range(2)]
    if device.type == "cuda":
        fake = [{k: v.pin_memory() for k, v in b.items()} for b in fake]
    synthetic = [fake[i % 2] for i in range(steps)]
    model = create_model(args.loop_model, nc).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    epoch = [0]

    def run(batches):
        def go():
            loader.sampler.set_epoch(epoch[0])
            epoch[0] += 1
            engine.train_one_epoch(model, batches, opt, sched, device=device, num_classes=nc, scaler=scaler,
                                   amp_dtype=amp_dtype, channels_last=args.channels_last, max_batches=steps,
                                   log_every=10**9)
            return steps * bs
        return go

    real, syn = run(loader), run(synthetic)
    real(), syn()  # warm-up: workers start, cudnn picks its algorithms
    rates = {"real loader": [], "synthetic batches": []}
    for _ in range(args.rounds):
        rates["real loader"] += _timed_epochs(real, 1, device)
        rates["synthetic batches"] += _timed_epochs(syn, 1, device)
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {"model": args.loop_model, "images": len(train_set), "steps": steps, "workers": args.workers,
            "cache": args.cache, "dataset_setup_s": setup_s, "img_s": med, "rounds": rates,
            "efficiency": med["real loader"] / med["synthetic batches"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--amp", choices=["none", "bf16", "fp16", "auto"], default="auto",
                   help="autocast dtype (auto: bf16 on CUDA, none on CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default 4 on CPU, 32 on CUDA")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--steps", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--only", nargs="+", help="substrings of model labels to run")
    p.add_argument("--loop", metavar="DATA_ROOT", help="also time pyseg's loop with the real loader of this data")
    p.add_argument("--loop-model", default="deeplabv3plus_resnet50")
    p.add_argument("--loop-steps", type=int, default=20, help="batches per timed round of the loop comparison")
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers of the real loader")
    p.add_argument("--cache", choices=["none", "ram"], default="ram", help="data.cache of the real loader")
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    amp = args.amp if args.amp != "auto" else ("bf16" if device.type == "cuda" else "none")
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    bs = args.batch_size or (32 if device.type == "cuda" else 4)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(0)
    x = torch.randn(bs, 3, args.size, args.size, device=device)
    y = torch.randint(0, args.num_classes, (bs, args.size, args.size), device=device)
    specs = {k: v for k, v in build_models(args.num_classes).items()
             if not args.only or any(s in k for s in args.only)}
    steps, params = {}, {}
    for label, make in specs.items():
        model = make().to(device).train()
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        params[label] = sum(p.numel() for p in model.parameters()) / 1e6
        steps[label] = make_step(model, device, amp_dtype, args.channels_last)
        for _ in range(args.warmup):
            steps[label](x, y)
        _sync(device)
    rates = {k: [] for k in steps}
    for _ in range(args.rounds):
        for label, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(x, y)
            _sync(device)
            rates[label].append(bs * args.steps / (time.perf_counter() - t0))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"training throughput, {args.size}x{args.size}, batch {bs}, {args.num_classes} classes, amp {amp}, "
          f"channels_last {args.channels_last}, device {name}, torch {torch.__version__}")
    width = max(len(k) for k in rates)
    print(f"{'model':<{width}}  {'params (M)':>10}  {'median img/s':>12}  {'best img/s':>10}")
    for label, r in rates.items():
        print(f"{label:<{width}}  {params[label]:>10.1f}  {statistics.median(r):>12.2f}  {max(r):>10.2f}")
    result = {"device": name, "torch": torch.__version__, "size": args.size, "batch": bs, "amp": amp,
              "channels_last": args.channels_last, "models": {k: {"params_m": params[k], "img_s": statistics.median(r),
                                                                   "best_img_s": max(r)} for k, r in rates.items()}}
    tv = [k for k in rates if k.startswith("torchvision")]
    if tv:
        ref = statistics.median(rates[tv[0]])
        print(f"ratio to {tv[0]} (median img/s): " + ", ".join(
            f"{k}: {statistics.median(r) / ref:.2f}x" for k, r in rates.items() if k != tv[0]))
    if args.loop:
        loop = loop_efficiency(args, device, amp_dtype, bs)
        result["loop"] = loop
        print(f"pyseg training loop ({loop['model']}, {loop['steps']} batches a round, {loop['workers']} workers, "
              f"cache {loop['cache']}): real loader {loop['img_s']['real loader']:.2f} img/s, synthetic batches "
              f"{loop['img_s']['synthetic batches']:.2f} img/s: data pipeline efficiency {loop['efficiency']:.0%}")
    if args.json:
        from pyseg.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
