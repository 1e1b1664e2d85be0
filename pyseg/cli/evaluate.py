"""pyseg-evaluate: mIoU (global and per image), per-class IoU and pixel accuracy, without and with the CRF.

    pyseg-evaluate --checkpoint CKPT --data-root ROOT --ann val.json [--crf PRESET|PARAMS.json|off]
                   [--tta flip[,scales]] [--plot cm.png] [--json metrics.json] [--vis DIR] ...
"""

from __future__ import annotations

import argparse
import json
import sys

from pyseg.cli.predict import add_model_args, fail, load_everything, setup

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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Evaluate a checkpoint on a labelled COCO json, "
                                                       "without and with the dense CRF.")
    add_model_args(p, crf_default="krahenbuhl")
    p.add_argument("--ignore-index", type=int, default=None,
                   help="ground-truth label left out of the metrics (default: the training config's, else 255)")
    p.add_argument("--size", type=int, default=None,
                   help="score at size x size (nearest, as submissions are scored) instead of each image's own size")
    p.add_argument("--plot", default=None, metavar="PNG", help="confusion-matrix plot (of the CRF result when on)")
    p.add_argument("--json", default=None, metavar="FILE", help="write all metrics as JSON")
    p.add_argument("--vis", default=None, metavar="DIR", help="write PNG overlays here")
    args = p.parse_args(argv)
    try:
        setup(args)
        from pyseg import evaluation as E
        from pyseg.predict import predict_dataset, with_progress
        from pyseg.submission import atomic_write_bytes

        model, ckpt, ds, ann, kwargs = load_everything(args)
        if not getattr(ds, "has_masks", True):
            raise ValueError(f"{ann} has no annotations; evaluation needs a labelled json such as val.json")
        ignore = args.ignore_index
        if ignore is None:
            ignore = ((ckpt.get("config") or {}).get("data") or {}).get("ignore_index", 255)
        print(f"{PROG}: {len(ds) if args.limit is None else min(args.limit, len(ds))} images of {ann}, model "
              f"{ckpt.get('model_name')}, input {kwargs['input_size'] or 'native'}, CRF {args.crf}", file=sys.stderr)
        import time

        t0 = time.perf_counter()
        preds = predict_dataset(model, ds, **kwargs)
        if args.vis:
            from pyseg.vis import save_overlay

            def _vis(it):
                for r in it:
                    save_overlay(args.vis, r, ds.palette)
                    yield r
            preds = _vis(preds)
        n = len(ds) if args.limit is None else min(args.limit, len(ds))
        if args.size is not None and args.size < 1:
            raise ValueError(f"--size must be >= 1, got {args.size}")
        res = E.evaluate_predictions(with_progress(preds, n, sys.stderr.isatty(), "evaluate"), ds.num_classes,
                                     ignore, args.size)
        res["seconds"] = time.perf_counter() - t0
        if args.plot:
            which = res["crf"] or res["no_crf"]
            E.plot_confusion_matrix(which["cm"], args.plot, ds.class_names,
                                    title=f"{ckpt.get('model_name')} on {ann.name}"
                                          f"{' + CRF ' + args.crf if res['crf'] else ''} (rows: ground truth)")
        if args.json:
            atomic_write_bytes(args.json, json.dumps(_jsonable(res), indent=1).encode())
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        return fail(PROG, e)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(E.format_report(res, ds.class_names))
    print(f"time: {res['seconds']:.1f} s for {res['images']} images")
    if args.plot:
        print(f"confusion matrix: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
