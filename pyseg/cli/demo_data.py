"""pyseg-demo-data: write the small synthetic competition-style dataset.

    pyseg-demo-data ROOT [--n-train 48] [--n-val 16] [--n-test 16] [--size 128] [--seed 0]

Writes ROOT/images/batch_0*/NNNN.jpg and ROOT/{train,val,train_all,test,test_gt}.json (trash11 classes).
"""

from __future__ import annotations

import argparse
import logging
import sys

PROG = "pyseg-demo-data"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Write a small synthetic COCO dataset laid out like the "
                                "recycling-trash competition (trash11 classes), for demos and tests.")
    p.add_argument("root", help="output folder (created if needed)")
    p.add_argument("--n-train", type=int, default=48, help="training images (default 48)")
    p.add_argument("--n-val", type=int, default=16, help="validation images (default 16)")
    p.add_argument("--n-test", type=int, default=16, help="test images (default 16)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128, at least 32)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from pyseg.data.demo import make_demo_dataset

    try:
        paths = make_demo_dataset(args.root, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                                  size=args.size, seed=args.seed)
    except (ValueError, TypeError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.n_train} train / {args.n_val} val / {args.n_test} test images ({args.size}x{args.size}) "
          f"to {paths['root']}")
    for key in ("train", "val", "train_all", "test", "test_gt"):
        print(f"  {key:9s} {paths[key]}")
    print("classes: trash11 (use classes='trash11')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
