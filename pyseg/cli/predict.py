"""pyseg-predict: a competition submission CSV from a checkpoint, with optional TTA and dense CRF.

    pyseg-predict --checkpoint CKPT --data-root ROOT --ann test.json --out submission.csv
                  [--crf PRESET|PARAMS.json|off] [--crf-device auto|cpu|cuda] [--tta flip[,scales]]
                  [--size 256] [--input-size S] [--batch-size N] [--save-probs DIR] [--vis DIR]
                  [--num-threads N] [--device auto|cpu|cuda]
    pyseg-predict --ensemble DIR [DIR ...] [--weights W ...] --ann test.json --out submission.csv

The second form averages the probabilities saved by earlier ``--save-probs`` runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

PROG = "pyseg-predict"


def add_model_args(p: argparse.ArgumentParser, crf_default: str) -> None:
    """Arguments shared by pyseg-predict, pyseg-evaluate and pyseg-tune-crf."""
    p.add_argument("--checkpoint", help="checkpoint written by pyseg-train (best.pt / last.pt)")
    p.add_argument("--data-root", help="folder the json's file_name paths are relative to")
    p.add_argument("--ann", help="COCO json listing the images (relative to --data-root or a path)")
    p.add_argument("--input-size", type=int, default=None,
                   help="side the images are resized to for the model (default: the training config's "
                        "eval size; 0 = each image's own size)")
    p.add_argument("--tta", default=None, help="test-time augmentation: 'flip', scales like '0.75,1,1.25', or both")
    p.add_argument("--crf", default=crf_default,
                   help=f"dense CRF: off, a preset (krahenbuhl, deeplab) or a JSON of parameters from "
                        f"pyseg-tune-crf --out (default {crf_default})")
    p.add_argument("--crf-device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the CRF runs (auto: the GPU when the model is on one and CUDA is built)")
    p.add_argument("--crf-overlap", default="auto", choices=["auto", "on", "off"],
                   help="run the CPU CRF in a worker thread beside the forward pass (auto: when the model is on "
                        "a GPU, or torch's and the CRF's threads together fit the cores, e.g. --num-threads 1 on 2)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-threads", type=int, default=None,
                   help="CPU threads for torch and the CRF (default: torch's and the CRF's own defaults)")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers decoding images")
    p.add_argument("--device", default="auto", help="model device: auto, cpu, cuda or cuda:N")
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


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda needs a CUDA GPU, and none is available")
    return dev


def load_everything(args, need: tuple[str, ...] = ("checkpoint", "data_root", "ann")):
    """(model, ckpt, dataset, predict kwargs) after every check that can fail on user input."""
    from pyseg import predict as P

    missing = [f"--{n.replace('_', '-')}" for n in need if getattr(args, n) is None]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    device = resolve_device(args.device)
    model, ckpt = P.load_checkpoint(args.checkpoint, device)
    ann = P.resolve_ann(args.data_root, args.ann)
    ds = P.open_dataset(args.data_root, ann, ckpt)
    P.check_classes(ckpt, ds.num_classes, ds.class_names, str(args.ann))
    if args.input_size is not None and args.input_size < 0:
        raise ValueError(f"--input-size must be >= 0, got {args.input_size}")
    input_size = (args.input_size or None) if args.input_size is not None else P.input_size_from_checkpoint(ckpt)
    kwargs = dict(input_size=input_size, tta=P.parse_tta(args.tta), crf=P.resolve_crf(args.crf),
                  crf_device=args.crf_device, batch_size=args.batch_size, num_threads=args.num_threads,
                  num_workers=args.num_workers, device=device, limit=args.limit,
                  overlap={"auto": "auto", "on": True, "off": False}[args.crf_overlap])
    if kwargs["crf"] is not None:
        P.resolve_crf_device(args.crf_device, device)  # fail now, not after the first batch
    return model, ckpt, ds, ann, kwargs


def fail(prog: str, e: BaseException) -> int:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2


def _ensemble(args) -> int:
    from pyseg import submission as S

    ids = S.image_ids_from_json(args.ann) if args.ann else None
    t0 = time.perf_counter()
    out = S.ensemble_probs(args.ensemble, args.out, weights=args.weights, expected_ids=ids)
    summary = S.validate_submission(out, ids, size=S.read_probs_index(args.ensemble[0])["size"])
    print(f"wrote {out}: {summary['rows']} rows averaged from {len(args.ensemble)} runs "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Write a competition submission CSV from a checkpoint.")
    add_model_args(p, crf_default="off")
    p.add_argument("--out", required=True, help="submission CSV to write (atomically)")
    p.add_argument("--size", type=int, default=256, help="side of the submitted class maps (default 256)")
    p.add_argument("--save-probs", default=None, metavar="DIR",
                   help="also save float16 class probabilities at --size (for --ensemble)")
    p.add_argument("--vis", default=None, metavar="DIR", help="write PNG overlays of the predictions here")
    p.add_argument("--ensemble", nargs="+", default=None, metavar="DIR",
                   help="average the probabilities of these --save-probs directories instead of running a model")
    p.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per --ensemble directory")
    args = p.parse_args(argv)
    try:
        setup(args)
        if args.size < 1:
            raise ValueError(f"--size must be >= 1, got {args.size}")
        if args.ensemble:
            return _ensemble(args)
        from pyseg import predict as P
        from pyseg import submission as S

        model, ckpt, ds, ann, kwargs = load_everything(args)
        ids = S.image_ids_from_json(ann)
        if args.limit is not None:
            ids = ids[: args.limit]
        crf = kwargs["crf"]
        meta = {"checkpoint": str(args.checkpoint), "model_name": ckpt.get("model_name"),
                "crf": crf.to_dict() if crf is not None else None, "tta": args.tta,
                "input_size": kwargs["input_size"]}
        print(f"{PROG}: {len(ids)} images of {ann}, model {ckpt.get('model_name')} ({ds.num_classes} classes), "
              f"input {kwargs['input_size'] or 'native'}, TTA {kwargs['tta'].num_views} view(s), "
              f"CRF {args.crf}", file=sys.stderr)
        info = P.predict_to_submission(model, ds, args.out, image_ids=ids, size=args.size,
                                       save_probs=args.save_probs, vis_dir=args.vis, palette=ds.palette,
                                       class_names=ds.class_names, meta=meta, progress=sys.stderr.isatty(),
                                       **kwargs)
        summary = S.validate_submission(args.out, ids, size=args.size, num_classes=ds.num_classes)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        return fail(PROG, e)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no submission written", file=sys.stderr)
        return 130
    used = [f"{c}" for c in range(len(summary["class_pixels"])) if summary["class_pixels"][c]]
    print(f"wrote {args.out}: {summary['rows']} rows of {args.size}x{args.size} in {info['seconds']:.1f} s "
          f"({info['seconds'] / max(summary['rows'], 1):.3f} s/image); classes used: {' '.join(used)}")
    if args.save_probs:
        print(f"probabilities: {args.save_probs}/index.json")
    if args.vis:
        print(f"overlays: {args.vis}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
