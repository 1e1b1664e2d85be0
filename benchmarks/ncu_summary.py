"""Per-kernel GPU time of one CUDA dense-CRF call, from ncu's CSV (benchmarks/gpu_profile.sh).

    python benchmarks/ncu_summary.py ncu.csv

The stand-alone check's --profile mode runs each bench case twice with a `marker` kernel after each call;
the second call of each case (warm caches) is summarised: kernel, launches, total microseconds, share.
"""

from __future__ import annotations

import csv
import re
import sys
from collections import defaultdict


def short_name(name: str) -> str:
    m = re.search(r"k_for(?:_dev)?<(?:[\w]+::)*([A-Za-z_]+)(?:<([^>]*)>)?", name)
    if m:
        return m.group(1) + (f"<{m.group(2)}>" if m.group(2) else "")
    m = re.search(r"(Device\w+Kernel)", name)
    return m.group(1) if m else name.split("(")[0][-40:]


_NS = {"ns": 1.0, "nsecond": 1.0, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6}


def read_metrics(path: str):
    """(kernel id, kernel name, metric, unit, value) for every numeric row of ncu's --csv output."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    header = next(i for i, r in enumerate(rows) if "Kernel Name" in r and "Metric Value" in r)
    cols = rows[header]
    ki, kn, km, ku, kv = (cols.index(c) for c in ("ID", "Kernel Name", "Metric Name", "Metric Unit", "Metric Value"))
    for r in rows[header + 1:]:
        if len(r) <= kv:
            continue
        try:
            value = float(r[kv].replace(",", ""))
        except ValueError:  # text-valued metrics
            continue
        yield r[ki], r[kn], r[km], r[ku], value


def main(path: str) -> None:
    calls: list[list[tuple[str, float]]] = [[]]
    for _, name, metric, unit, value in read_metrics(path):
        if metric != "gpu__time_duration.sum":
            continue
        if re.search(r"\bmarker\b", name):
            calls.append([])
            continue
        calls[-1].append((short_name(name), value * _NS[unit] / 1e3))  # -> us
    calls = [c for c in calls if c]
    labels = ["1 x 512x512 x 11, 10 it", "64 x 256x256 x 11, 10 it"]
    for case, idx in enumerate((1, 3)):
        if idx >= len(calls):
            print(f"ncu_summary: call {idx} missing ({len(calls)} calls found)")
            continue
        per = defaultdict(lambda: [0, 0.0])
        for name, us in calls[idx]:
            per[name][0] += 1
            per[name][1] += us
        total = sum(v[1] for v in per.values())
        print(f"\n{labels[case]}: {len(calls[idx])} kernels, {total:.1f} us of kernel time (sum of ncu durations)")
        print(f"{'kernel':34s} {'launches':>8s} {'total us':>10s} {'share':>6s}")
        for name, (n, us) in sorted(per.items(), key=lambda kv: -kv[1][1]):
            print(f"{name[:34]:34s} {n:8d} {us:10.1f} {us / total:6.1%}")


def detail(path: str) -> None:
    """One line per profiled kernel from ncu --csv with sections: duration (us) and the main rates (%)."""
    want = {"Duration": "us", "Memory Throughput": "mem%", "DRAM Throughput": "dram%", "L1/TEX Hit Rate": "L1%",
            "L2 Hit Rate": "L2%", "Achieved Occupancy": "occ%", "Compute (SM) Throughput": "SM%"}
    kernels: dict[str, dict[str, float]] = {}
    names: dict[str, str] = {}
    for kid, name, metric, unit, value in read_metrics(path):
        # Memory Throughput comes twice: as % of peak (Speed Of Light) and in byte/s (Memory Workload).
        if metric not in want or (metric != "Duration" and unit != "%"):
            continue
        names[kid] = short_name(name)
        kernels.setdefault(kid, {})[metric] = value * _NS[unit] / 1e3 if metric == "Duration" else value
    print(f"\n{'kernel':22s} " + " ".join(f"{v:>6s}" for v in want.values()))
    for kid, m in kernels.items():
        print(f"{names[kid][:22]:22s} " + " ".join(f"{m[k]:6.1f}" if k in m else f"{'-':>6s}" for k in want))


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--detail"] and len(args) == 2:
        detail(args[1])
    elif len(args) == 1 and not args[0].startswith("-"):
        main(args[0])
    else:
        sys.exit("usage: ncu_summary.py NCU.csv | ncu_summary.py --detail NCU_DETAIL.csv")
