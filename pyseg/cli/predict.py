"""pyseg-predict: a competition submission CSV from a checkpoint, with optional TTA and dense CRF.

    pyseg-predict --checkpoint CKPT --data-root ROOT (--ann test.json | --images DIR) --out submission.csv
                  [--crf PRESET|PARAMS.json|off] [--crf-device auto|cpu|cuda] [--tta flip[,scales]]
                  [--size 256] [--input-size S] [--batch-size N] [--save-probs DIR] [--vis DIR]
                  [--num-threads N] [--device auto|cpu|cuda]
    pyseg-predict --ensemble DIR [DIR ...] [--weights W ...] --ann test.json --out submission.csv

The second form averages the probabilities saved by earlier ``--save-probs`` runs. Under
``torchrun --nproc_per_node N -m pyseg.cli.predict ...`` each rank predicts a contiguous block of the images
and rank 0 joins the blocks into the one CSV (the same rows, in the same order, as one process).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from pyseg.cli.common import add_model_args, errors_of_all_ranks, fail, load_everything, setup, start_ranks

PROG = "pyseg-predict"


def _ensemble(args) -> int:
    from pyseg import submission as S
    from pyseg.inference import probs

    ids = S.image_ids_from_json(args.ann) if args.ann else None
    t0 = time.perf_counter()
    out = probs.ensemble_probs(args.ensemble, args.out, weights=args.weights, expected_ids=ids)
    summary = S.validate_submission(out, ids, size=probs.read_probs_index(args.ensemble[0])["size"])
    print(f"wrote {out}: {summary['rows']} rows averaged from {len(args.ensemble)} runs "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _predict(args, info) -> dict | None:
    """This rank's block of the submission (the whole of it in one process); None when the block is empty."""
    from pyseg.inference import predict as P
    from pyseg.training.distributed import shard_range

    model, ckpt, ds, name, kwargs = load_everything(args, info.local_rank)
    ids = ds.image_ids()
    if args.limit is not None:
        ids = ids[: args.limit]
    kwargs["limit"] = None
    block = shard_range(len(ids), info.rank, info.world_size)
    crf = kwargs["crf"]
    if info.is_main:
        print(f"{PROG}: {len(ids)} images of {name}, model {ckpt.get('model_name')} ({ds.num_classes} classes), "
              f"input {kwargs['input_size'] or 'native'}, TTA {kwargs['tta'].num_views} view(s), CRF {args.crf}"
              + (f", {info.world_size} ranks" if info.enabled else ""), file=sys.stderr)
    if not len(block):
        print(f"{PROG}: rank {info.rank} has no images ({len(ids)} images over {info.world_size} ranks)",
              file=sys.stderr)
        return None
    meta = {"checkpoint": str(args.checkpoint), "model_name": ckpt.get("model_name"),
            "crf": crf.to_dict() if crf is not None else None, "tta": args.tta, "input_size": kwargs["input_size"]}
    out = _part_path(args.out, info.rank) if info.enabled else args.out
    info_ = P.predict_to_submission(model, ds, out, image_ids=ids[block.start:block.stop], indices=block,
                                    size=args.size, save_probs=args.save_probs, vis_dir=args.vis,
                                    palette=ds.palette, class_names=ds.class_names, meta=meta,
                                    progress=info.is_main and sys.stderr.isatty(), **kwargs)
    return dict(info_, ids=ids, num_classes=ds.num_classes)


def _part_path(out, rank: int) -> str:
    head, tail = os.path.split(out)
    return os.path.join(head, f".{tail}.rank{rank}.part")


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
    from pyseg import submission as S
    from pyseg.training.distributed import broadcast_object, cleanup_distributed, gather_objects

    info, error, res = None, None, None
    try:
        setup(args)
        if args.size < 1:
            raise ValueError(f"--size must be >= 1, got {args.size}")
        info = start_ranks(args.device)
        if args.ensemble:
            if info.enabled:
                raise ValueError("--ensemble averages saved files in one process; run it without torchrun")
            return _ensemble(args)
        if args.save_probs and info.enabled:
            raise ValueError("--save-probs writes one folder from one process; run it without torchrun")
        res = _predict(args, info)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        error = str(e)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no submission written", file=sys.stderr)
        return 130
    if info is None or not info.enabled:
        if error is not None:
            return fail(PROG, error)
        return _report(args, res, S.validate_submission(args.out, res["ids"], size=args.size,
                                                        num_classes=res["num_classes"]))
    try:  # torchrun: every rank reaches this point; rank 0 joins the blocks, or nothing is written
        errors = errors_of_all_ranks(error)
        seconds = max(gather_objects(res["seconds"] if res else 0.0))
        summary = None
        if info.is_main and not errors:
            try:
                S.join_submissions([_part_path(args.out, r) for r in range(info.world_size)
                                    if os.path.exists(_part_path(args.out, r))], args.out)
                summary = S.validate_submission(args.out, res["ids"], size=args.size,
                                                num_classes=res["num_classes"])
            except ValueError as e:
                errors = [str(e)]
        if info.is_main:  # every rank has written its block (or failed) by now
            for r in range(info.world_size):
                Path(_part_path(args.out, r)).unlink(missing_ok=True)
        errors = broadcast_object(errors)  # every rank waits for rank 0, then all leave together
    finally:
        cleanup_distributed()
    if errors:
        return fail(PROG, "; ".join(errors)) if info.is_main else 2
    return _report(args, dict(res, seconds=seconds), summary) if info.is_main else 0


def _report(args, res: dict, summary: dict) -> int:
    used = [f"{c}" for c in range(len(summary["class_pixels"])) if summary["class_pixels"][c]]
    print(f"wrote {args.out}: {summary['rows']} rows of {args.size}x{args.size} in {res['seconds']:.1f} s "
          f"({res['seconds'] / max(summary['rows'], 1):.3f} s/image); classes used: {' '.join(used)}")
    if args.save_probs:
        print(f"probabilities: {args.save_probs}/index.json")
    if args.vis:
        print(f"overlays: {args.vis}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
