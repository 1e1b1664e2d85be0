"""What pyseg-predict, pyseg-evaluate and pyseg-tune-crf share: the model and data arguments, the checks and
loading before any work, one-line errors, and the ranks of a torchrun launch."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_model_args(p: argparse.ArgumentParser, crf_default: str) -> None:
    """The checkpoint, data, TTA, CRF and device arguments."""
    p.add_argument("--checkpoint", help="checkpoint written by pyseg-train (best.pt / last.pt)")
    p.add_argument("--data-root", help="folder the json's file_name paths (or --images / --masks) are relative to")
    p.add_argument("--ann", help="COCO json listing the images (relative to --data-root or a path)")
    p.add_argument("--images", default=None, metavar="DIR",
                   help="instead of --ann, a folder of images (mask-folder data such as CamVid; relative to "
                        "--data-root or a path); row order and image_id: the sorted file names")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="with --images: the folder of label PNGs with the same names (needed to evaluate or tune)")
    p.add_argument("--input-size", type=int, default=None,
                   help="side the images are resized to for the model (default: the training config's "
                        "eval size; 0 = each image's own size)")
    p.add_argument("--tta", default=None, help="test-time augmentation: 'flip', scales like '0.75,1,1.25', or both")
    auto = ", i.e. krahenbuhl, or off for a model trained with the CRF layer" if crf_default == "auto" else ""
    p.add_argument("--crf", default=crf_default,
                   help=f"dense CRF after the model: off, a preset (krahenbuhl, deeplab) or a JSON of parameters "
                        f"from pyseg-tune-crf --out (default {crf_default}{auto})")
    p.add_argument("--crf-layer", default="on", choices=["on", "off"],
                   help="for a model trained with the CRF layer (model.crf): off runs the network without it, "
                        "to see what the layer adds at inference")
    p.add_argument("--crf-device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the CRF runs (auto: the GPU when the model is on one and CUDA is built)")
    p.add_argument("--crf-overlap", default="auto", choices=["auto", "on", "off"],
                   help="run the CPU CRF in a worker thread beside the forward pass (auto: when the model is on "
                        "a GPU, or torch's and the CRF's threads together fit the cores, e.g. --num-threads 1 on 2)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-threads", type=int, default=None,
                   help="CPU threads for torch and the CRF (default: torch's and the CRF's own defaults)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images")
    p.add_argument("--device", default="auto",
                   help="model device: auto, cpu, cuda or cuda:N (under torchrun, auto and cuda mean cuda:LOCAL_RANK)")
    p.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)  # first N images (debugging)
    p.add_argument("-v", "--verbose", action="store_true", help="log debugging details")


def setup(args) -> None:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.num_threads is not None:
        if args.num_threads < 1:
            raise ValueError(f"--num-threads must be >= 1, got {args.num_threads}")
        import torch

        torch.set_num_threads(args.num_threads)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")


def open_data(args, ckpt: dict):
    """(dataset without a transform, a Path naming the data for messages) from --ann or --images/--masks."""
    from pyseg.inference import inputs as I

    if args.ann is not None and args.images is not None:
        raise ValueError("give either --ann (a COCO json) or --images (an image folder), not both")
    if args.masks is not None and args.images is None:
        raise ValueError("--masks goes with --images (the folder of the images the labels belong to)")
    if args.images is not None:
        ds = I.open_mask_folder(args.data_root, args.images, args.masks, ckpt)
        return ds, Path(ds.image_dir)
    if args.data_root is None:
        raise ValueError("missing --data-root (the folder the json's file_name paths are relative to)")
    ann = I.resolve_ann(args.data_root, args.ann)
    return I.open_dataset(args.data_root, ann, ckpt), ann


def load_everything(args, local_rank: int = 0):
    """(model, ckpt, dataset, data name, predict kwargs) after every check that can fail on user input."""
    from pyseg.inference import predict as P
    from pyseg.inference import inputs as I
    from pyseg.training.build import resolve_device

    if args.checkpoint is None:
        raise ValueError("missing --checkpoint")
    if args.ann is None and args.images is None and args.masks is None:
        raise ValueError("missing the data: --ann (a COCO json) or --images [--masks] (image and label folders)")
    device = resolve_device(args.device, local_rank, what="--device")
    model, ckpt = I.load_trained_model(args.checkpoint, device)
    layer = bool(ckpt.get("crf"))
    if args.crf_layer == "off":
        if not layer:
            raise ValueError(f"--crf-layer off: {args.checkpoint} has no CRF layer (it was trained without model.crf)")
        model, layer = model.net, False  # CRFRefined's network alone
    ds, name = open_data(args, ckpt)
    I.check_classes(ckpt, ds.num_classes, ds.class_names, str(args.ann if args.ann is not None else args.images))
    if args.input_size is not None and args.input_size < 0:
        raise ValueError(f"--input-size must be >= 0, got {args.input_size}")
    input_size = (args.input_size or None) if args.input_size is not None else I.input_size_from_checkpoint(ckpt)
    if args.crf == "auto":  # a model with the CRF layer gets no second CRF unless asked
        args.crf = "off" if layer else "krahenbuhl"
    elif layer and args.crf != "off":
        print(f"note: the model ends in a CRF layer; applying a second CRF ({args.crf}) as asked", file=sys.stderr)
    kwargs = dict(input_size=input_size, tta=P.parse_tta(args.tta), crf=P.resolve_crf(args.crf),
                  crf_device=args.crf_device, batch_size=args.batch_size, num_threads=args.num_threads,
                  num_workers=args.num_workers, device=device, limit=args.limit,
                  overlap={"auto": "auto", "on": True, "off": False}[args.crf_overlap])
    if kwargs["crf"] is not None:
        P.resolve_crf_device(args.crf_device, device)  # fail now, not after the first batch
    return model, ckpt, ds, name, kwargs


def fail(prog: str, e: BaseException) -> int:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2


def start_ranks(device: str):
    """The torchrun ranks (``pyseg.training.distributed.DistInfo``; one process without torchrun).

    A gloo group: the ranks exchange only small objects (status, metric states), whatever device the model
    uses."""
    from pyseg.training import distributed as D

    info = D.env_dist_info()
    if info.enabled:
        import torch

        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        D.init_distributed("gloo", "cuda" if cuda else "cpu")
    return info


def errors_of_all_ranks(error: str | None) -> list[str]:
    """Every rank's error after all ranks reached this point: [] when none failed, the one message when every
    rank failed alike (bad arguments), else ``"rank R: message"`` for each rank that failed."""
    from pyseg.training import distributed as D

    errors = D.gather_objects(error)
    if all(e is None for e in errors):
        return []
    if len(set(errors)) == 1:
        return [errors[0]]
    return [f"rank {r}: {e}" for r, e in enumerate(errors) if e is not None]
