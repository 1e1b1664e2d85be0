"""pyseg-compare: overlay the curves of several runs in one figure and print a comparison table.

    pyseg-compare runs/deconvnet/v1 runs/deconvnet/v2 [--out compare.png] [--labels a b] [--csv table.csv]

A DIR that holds no metrics.csv but version folders (runs/deconvnet) stands for all its versions.
The table has one row per run: best val mIoU (global and per image) and the epoch it came at, final
train/val loss, epochs run and total seconds.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

COLUMNS = ["run", "epochs", "best_epoch", "best_val_miou", "val_miou_per_image", "val_pixel_acc",
           "final_train_loss", "final_val_loss", "min_val_loss", "seconds"]


def expand_runs(dirs) -> list[Path]:
    """Each DIR with a metrics.csv, or the sub-folders with one (sorted, v2 before v10)."""
    out = []
    for d in map(Path, dirs):
        if (d / "metrics.csv").is_file():
            out.append(d)
            continue
        subs = [s for s in d.iterdir() if (s / "metrics.csv").is_file()] if d.is_dir() else []
        if not subs:
            raise FileNotFoundError(f"{d} is not a run directory (no metrics.csv in it or its sub-folders)")
        out.extend(sorted(subs, key=lambda s: (len(s.name), s.name)))
    return out


def summarize(run_dir: Path) -> dict:
    from pyseg.training.csv_tables import read_csv

    _, rows = read_csv(run_dir / "metrics.csv")
    if not rows:
        raise ValueError(f"{run_dir / 'metrics.csv'} has no epochs yet")
    finite = [r for r in rows if math.isfinite(r["val_miou"])]
    best = max(finite, key=lambda r: r["val_miou"]) if finite else rows[-1]
    return {"epochs": rows[-1]["epoch"], "best_epoch": best["epoch"], "best_val_miou": best["val_miou"],
            "val_miou_per_image": best["val_miou_per_image"], "val_pixel_acc": best["val_pixel_acc"],
            "final_train_loss": rows[-1]["train_loss"], "final_val_loss": rows[-1]["val_loss"],
            "min_val_loss": min(r["val_loss"] for r in rows), "seconds": sum(r["seconds"] for r in rows)}


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if v >= 100 else f"{v:.4f}"
    return str(v)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="pyseg-compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="run directories (or folders of versions)")
    p.add_argument("--out", type=Path, default=Path("compare.png"), help="figure path (default compare.png)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: folder names)")
    p.add_argument("--csv", type=Path, help="also write the table as CSV")
    p.add_argument("--no-plot", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    try:
        runs = expand_runs(args.runs)
        if args.labels is not None and len(args.labels) != len(runs):
            raise ValueError(f"--labels has {len(args.labels)} entries for {len(runs)} runs")
        from pyseg.training.plots import run_label

        labels = args.labels or [run_label(r, runs) for r in runs]
        table = [dict(run=label, **summarize(r)) for label, r in zip(labels, runs)]
    except (ValueError, FileNotFoundError) as e:
        print(f"pyseg-compare: error: {e}", file=sys.stderr)
        return 2
    cells = [COLUMNS] + [[_cell(row[c]) for c in COLUMNS] for row in table]
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    if args.csv:
        from pyseg.fileio import atomic_write_text
        from pyseg.training.csv_tables import csv_text

        atomic_write_text(args.csv, csv_text(COLUMNS, [[row[c] for c in COLUMNS] for row in table]))
    if not args.no_plot:
        from pyseg.training.plots import plot_compare

        plot_compare(runs, args.out, labels=labels)
        print(f"figure: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
