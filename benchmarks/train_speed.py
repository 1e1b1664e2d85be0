"""Training throughput (images/s) of pyseg's deeplabv3_resnet50 vs torchvision's, in the same loop.

    python benchmarks/train_speed.py                          # CPU here: batch 4, 256x256, float32
    python benchmarks/train_speed.py --device cuda --amp bf16 --batch-size 32 --channels-last

Each step: forward, pixel-mean cross-entropy, backward, Adam step (the step of pyseg.training.engine).
Models are timed in interleaved rounds (A, B, C, A, B, C, ...) after warm-up steps, so drifting load on a
shared machine hits them alike; the table gives the median and best round. torchvision's model runs at
output stride 8 (dilated layer3 and layer4); pyseg's default is output stride 16, so it is also timed at 8.
Nothing is downloaded: every model starts from random weights. Prints a table; not part of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
