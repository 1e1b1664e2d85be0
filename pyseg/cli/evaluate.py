"""pyseg-evaluate: mIoU (global and per image), per-class IoU and pixel accuracy, without and with the CRF.

    pyseg-evaluate --checkpoint CKPT --data-root ROOT (--ann val.json | --images val --masks valannot)
                   [--crf PRESET|PARAMS.json|off] [--tta flip[,scales]] [--plot cm.png] [--json metrics.json]
                   [--vis DIR] ...

Under ``torchrun --nproc_per_node N -m pyseg.cli.evaluate ...`` each rank evaluates a contiguous block of the
images and rank 0 reports the metrics of all of them (the same numbers as one process).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from pyseg.cli.common import add_model_args, errors_of_all_ranks, fail, load_everything, setup, start_ranks

PROG = "pyseg-evaluate"


def _jsonable(res: dict) -> dict:
    out = {"images": res["images"], "seconds": res.get("seconds")}
    for k in ("no_crf", "crf"):
        out[k] = None
        if res.get(k) is not None:
            m = dict(res[k])
            m["cm"] = m["cm"].tolist()
            m["iou_per_class"] = [None if v != v else v for v in m["iou_per_class"]]
            out[k] = m
    return out


def _evaluate(args, info) -> tuple[dict, object, object, str]:
    """(this rank's metric state, checkpoint, dataset, data name) over its block of the images."""
    from pyseg.inference import evaluation as E
    from pyseg.inference.predict import predict_dataset
    from pyseg.progress import with_progress
    from pyseg.training.distributed import shard_range

    model, ckpt, ds, name, kwargs = load_everything(args, info.local_rank)
    if not getattr(ds, "has_masks", True):
        raise ValueError(f"{name} has no annotations; evaluation needs labelled data (val.json, or --images "
                         "with --masks)")
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be >= 1, got {args.size}")
    ignore = args.ignore_index
    if ignore is None:
        ignore = ((ckpt.get("config") or {}).get("data") or {}).get("ignore_index", 255)
    n = len(ds) if args.limit is None else min(args.limit, len(ds))
    kwargs["limit"] = None
    block = shard_range(n, info.rank, info.world_size)
    if info.is_main:
        print(f"{PROG}: {n} images of {name}, model {ckpt.get('model_name')}, input "
              f"{kwargs['input_size'] or 'native'}, CRF {args.crf}"
              + (f", {info.world_size} ranks" if info.enabled else ""), file=sys.stderr)
    preds = predict_dataset(model, ds, indices=block, **kwargs)
    if args.vis:
        from pyseg.inference.overlays import save_overlay

        def _vis(it):
            for r in it:
                save_overlay(args.vis, r, ds.palette)
                yield r
        preds = _vis(preds)
    progress = info.is_main and sys.stderr.isatty()
    state = E.accumulate_predictions(with_progress(preds, len(block), progress, "evaluate"), ds.num_classes,
                                     ignore, args.size)
    return state, ckpt, ds, name


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Evaluate a checkpoint on labelled data (a COCO json, or "
                                                       "image and label folders), without and with the dense CRF.")
    add_model_args(p, crf_default="auto")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="ground-truth label left out of the metrics (default: the training config's, else 255)")
    p.add_argument("--size", type=int, default=None,
                   help="score at size x size (nearest, as submissions are scored) instead of each image's own size")
    p.add_argument("--plot", default=None, metavar="PNG", help="confusion-matrix plot (of the CRF result when on)")
    p.add_argument("--json", default=None, metavar="FILE", help="write all metrics as JSON")
    p.add_argument("--vis", default=None, metavar="DIR", help="write PNG overlays here")
    args = p.parse_args(argv)
    from pyseg.inference import evaluation as E
    from pyseg.fileio import atomic_write_bytes
    from pyseg.training import distributed as D

    info, error, state, res = None, None, None, None
    t0 = time.perf_counter()
    try:
        setup(args)
        info = start_ranks(args.device)
        state, ckpt, ds, name = _evaluate(args, info)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        error = str(e)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    try:
        errors = errors_of_all_ranks(error) if info is not None else [error]
        states = D.gather_objects(state) if info is not None and not errors else []
        if info is not None and info.enabled:
            D.barrier()  # all ranks leave the group together
            D.cleanup_distributed()
        if errors:
            return fail(PROG, "; ".join(errors)) if info is None or info.is_main else 2
        if not info.is_main:
            return 0
        res = E.summarize(states)  # blocks in rank order: the images in dataset order
        res["seconds"] = time.perf_counter() - t0
        if args.plot:
            which = res["crf"] or res["no_crf"]
            E.plot_confusion_matrix(which["cm"], args.plot, ds.class_names,
                                    title=f"{ckpt.get('model_name')} on {name.name}"
                                          f"{' + CRF ' + args.crf if res['crf'] else ''} (rows: ground truth)")
        if args.json:
            atomic_write_bytes(args.json, json.dumps(_jsonable(res), indent=1).encode(), create_parent=False)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        return fail(PROG, e)
    print(E.format_report(res, ds.class_names))
    print(f"time: {res['seconds']:.1f} s for {res['images']} images")
    if args.plot:
        print(f"confusion matrix: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
