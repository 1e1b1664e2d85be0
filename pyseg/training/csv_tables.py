"""The run folder's CSV tables (metrics.csv, lr.csv, best_per_class_iou.csv): written as text, read back as
numbers. Floats keep full precision (``repr``); "nan" stays nan."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def csv_text(header: list[str], rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_fmt(v) for v in r])
    return buf.getvalue()


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    """(header, rows as dicts of floats; ints for integral columns 'epoch' and 'step')."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = []
        for r in reader:
            row = {}
            for k, v in r.items():
                if k in ("epoch", "step", "class_id"):
                    row[k] = int(v)
                else:
                    try:
                        row[k] = float(v)
                    except (TypeError, ValueError):
                        row[k] = v
            rows.append(row)
        return list(reader.fieldnames or []), rows
