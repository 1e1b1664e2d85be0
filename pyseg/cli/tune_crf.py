"""pyseg-tune-crf: search dense-CRF parameters on a labelled split (the model runs once, the CRF many times).

    pyseg-tune-crf --checkpoint CKPT --data-root ROOT (--ann val.json | --images val --masks valannot)
                   [--max-images 50] [--iterations 10]
                   [--objective miou|miou_per_image] [--coarse-only] [--out crf.json]

``--out`` writes the best parameters as JSON; pass that file to ``pyseg-predict --crf crf.json``.
"""

from __future__ import annotations

import argparse
import json
import sys

from pyseg.cli.common import add_model_args, fail, load_everything, setup

PROG = "pyseg-tune-crf"


def _fmt(p) -> str:
    return (f"gaussian (sxy {p.gaussian_sxy:g}, compat {p.gaussian_compat:g}) + bilateral (sxy {p.bilateral_sxy:g}, "
            f"srgb {p.bilateral_srgb:g}, compat {p.bilateral_compat:g}), {p.iterations} iterations")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="Search dense-CRF parameters on labelled data (a COCO "
                                                       "json, or image and label folders).")
    add_model_args(p, crf_default="off")
    p.add_argument("--max-images", type=int, default=50, help="tune on the first N images (default 50; 0 = all)")
    p.add_argument("--iterations", type=int, default=10, help="mean-field iterations, fixed during the search")
    p.add_argument("--objective", choices=["miou", "miou_per_image"], default="miou")
    p.add_argument("--coarse-only", action="store_true", help="skip the fine stage around the best values")
    p.add_argument("--ignore-index", type=int, default=None)
    p.add_argument("--out", default=None, metavar="JSON", help="write the best parameters here (for --crf)")
    args = p.parse_args(argv)
    try:
        setup(args)
        if args.max_images < 0:
            raise ValueError(f"--max-images must be >= 0, got {args.max_images}")
        from pyseg.inference import crf_tuning as T
        from pyseg.fileio import atomic_write_bytes

        from pyseg.training.distributed import env_dist_info

        if env_dist_info().enabled:
            raise ValueError("pyseg-tune-crf runs in one process (the model once, then the CRF on cached "
                             "probabilities); run it without torchrun")
        if args.crf not in (None, "off"):
            raise ValueError("--crf is not used by pyseg-tune-crf (it searches the parameters)")
        model, ckpt, ds, ann, kwargs = load_everything(args)
        if not getattr(ds, "has_masks", True):
            raise ValueError(f"{ann} has no annotations; tuning needs labelled data (val.json, or --images "
                             "with --masks)")
        kwargs.pop("crf"), kwargs.pop("crf_device"), kwargs.pop("limit")
        ignore = args.ignore_index
        if ignore is None:
            ignore = ((ckpt.get("config") or {}).get("data") or {}).get("ignore_index", 255)
        limit = args.max_images or None
        if args.limit is not None:
            limit = min(limit or args.limit, args.limit)
        print(f"{PROG}: caching probabilities of {min(limit or len(ds), len(ds))} images of {ann}", file=sys.stderr)
        cache = T.cache_probabilities(model, ds, max_images=limit, **kwargs)
        del model
        step = {"n": 0}

        def progress(params, score):
            step["n"] += 1
            print(f"  [{step['n']:3d}] {args.objective} {score:.4f}  {_fmt(params)}", file=sys.stderr, flush=True)

        res = T.search(cache, ds.num_classes, iterations=args.iterations, ignore_index=ignore,
                       objective=args.objective, fine=not args.coarse_only, num_threads=args.num_threads,
                       callback=progress)
        if args.out:
            atomic_write_bytes(args.out, json.dumps(res.to_dict(), indent=1).encode(), create_parent=False)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError) as e:
        return fail(PROG, e)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(f"images: {len(cache)}, objective: {res.objective}, {len(res.history)} settings in {res.seconds:.0f} s")
    print(f"without CRF:         {res.baseline:.4f}")
    for name, s in sorted(res.presets.items(), key=lambda kv: -kv[1]):
        print(f"preset {name:<13} {s:.4f} ({s - res.baseline:+.4f})")
    print(f"best preset: {res.best_preset}")
    print(f"best found:          {res.best_score:.4f} ({res.gain:+.4f}): {_fmt(res.best)}")
    if res.gain <= 0:
        print("no CRF setting beat the model alone on these images: predict without --crf")
    if args.out:
        print(f"parameters: {args.out} (use --crf {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
