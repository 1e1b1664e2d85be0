"""Where the CPU dense CRF's time goes, phase by phase, and an A/B of two versions of csrc/ on this machine.

    python benchmarks/cpu_profile.py                          # working tree vs HEAD, 512x512x11 krahenbuhl, 1 thread
    python benchmarks/cpu_profile.py --base HEAD~3 --preset deeplab --threads 2 --rounds 6
    python benchmarks/cpu_profile.py --no-base                # the working tree's phases only

Builds the extension twice with -DPYSEG_PROFILE (phase clocks in csrc/cpu/profile.h, printed to stderr):
"B" from the working tree's csrc/ and "A" from `--base`'s (git archive), under build/cpuprof/; both are
loaded through the working tree's Python package (an A/B of csrc/, not of pyseg/). Then runs
them alternately, A B, B A, A B ..., each in a fresh process that calls `dense_crf` on a natural image
(benchmarks/crf_speed.py's inputs) `--reps` times and keeps each phase's median over the calls after the
first, and prints the median over the rounds of every phase for each version and the ratio B/A. Alternating
runs in the same minutes is what makes a comparison hold on a machine whose speed drifts (this 2-vCPU VM
has phases of minutes in which its second core is slower, or farther from the first); medians of a few
rounds still move by a few percent, so trust ratios well away from 1. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "cpuprof"
LINE = re.compile(r"^(?P<name>.+?)\s+(?P<ms>[0-9.]+) ms$")

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
import pyseg.crf as crf  # the profiling build in argv[1], ahead of any installed pyseg
assert crf.__file__.startswith(sys.argv[1]), crf.__file__
sys.path.insert(1, sys.argv[2])
import crf_speed as cs
size, labels, preset, threads, reps, cold = sys.argv[3:9]
probs, img = cs.case_inputs(int(size), int(labels))
for i in range(int(reps)):
    print(f"=== call {i}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    cs.run_pyseg(probs, img, preset, 10, int(threads), cold=cold == "1")
    t = time.perf_counter() - t0
    print(f"total {t * 1e3:.2f} ms", file=sys.stderr, flush=True)
"""


def run(cmd, **kw):
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(map(str, cmd))}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}")
    return r


def build(src: Path, name: str) -> Path:
    """Configures and builds src (a tree with CMakeLists.txt and csrc/) with the phase clocks; returns a
    directory holding a `pyseg` package (this tree's Python code) with that build's _crf_cpu module."""
    import pybind11

    bdir = OUT / f"build-{name}"
    venv_bin = Path(sys.executable).parent
    cmake = shutil.which("cmake", path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    ninja = shutil.which("ninja", path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if cmake is None:
        sys.exit("cmake not found (pip install cmake, or scripts/setup.sh)")
    gen = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
    run([cmake, "-S", str(src), "-B", str(bdir), *gen, "-DCMAKE_BUILD_TYPE=Release",
         "-DPYSEG_CUDA=OFF", "-DCMAKE_CXX_FLAGS=-DPYSEG_PROFILE", f"-DPython_EXECUTABLE={sys.executable}",
         f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"])
    run([cmake, "--build", str(bdir), "--target", "_crf_cpu"])
    pkg = OUT / f"pkg-{name}"
    if pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(REPO / "pyseg", pkg / "pyseg",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    mods = list(bdir.glob("_crf_cpu*.so"))
    if len(mods) != 1:
        sys.exit(f"expected one _crf_cpu module in {bdir}, found {mods}")
    shutil.copy2(mods[0], pkg / "pyseg" / "crf" / mods[0].name)
    return pkg


def phases(pkg: Path, a) -> dict[str, float]:
    """One process of `a.reps` calls: each phase's median over the calls after the first (the first loads the
    module, allocates and faults in the buffers), or the only call's time when reps is 1."""
    r = run([sys.executable, "-c", CHILD, str(pkg), str(REPO / "benchmarks"), str(a.size), str(a.labels), a.preset,
             str(a.threads), str(a.reps), "0" if a.warm else "1"], cwd="/")
    calls: list[dict[str, float]] = []
    for line in r.stderr.splitlines():
        if line.startswith("=== call"):
            calls.append({})
            continue
        m = LINE.match(line.strip())
        if calls and m:
            # A scope's clock prints "scope name ms"; scopes that run twice (two lattices) get distinct names.
            calls[-1][m["name"]] = calls[-1].get(m["name"], 0.0) + float(m["ms"])
    calls = [c for c in calls if c]
    if not calls:
        sys.exit("no phase clocks in the output: was the module built with -DPYSEG_PROFILE?\n" + r.stderr[-2000:])
    kept = calls[1:] if len(calls) > 1 else calls
    names = list(dict.fromkeys(n for c in kept for n in c))
    return {n: statistics.median(c.get(n, 0.0) for c in kept) for n in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD", help="git revision for version A (default HEAD)")
    ap.add_argument("--no-base", action="store_true", help="time the working tree only")
    ap.add_argument("--preset", default="krahenbuhl", choices=["krahenbuhl", "deeplab"])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--labels", type=int, default=11)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4, help="A/B pairs (median over them)")
    ap.add_argument("--reps", type=int, default=6,
                    help="calls per process; each phase's median over all but the first is kept (default 6)")
    ap.add_argument("--warm", action="store_true", help="keep the Gaussian lattice cache (default: cold)")
    a = ap.parse_args()
    if a.rounds < 1 or a.reps < 1 or a.threads < 1 or a.size < 1 or a.labels < 1:
        ap.error("--rounds, --reps, --threads, --size and --labels must be >= 1")

    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"B": build(REPO, "B")}
    if not a.no_base:
        src = OUT / "src-A"
        if src.exists():
            shutil.rmtree(src)
        src.mkdir()
        tar = subprocess.run(["git", "-C", str(REPO), "archive", a.base, "CMakeLists.txt", "csrc"],
                             check=False, capture_output=True)
        if tar.returncode != 0:
            sys.exit(f"git archive {a.base} failed: {tar.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", str(src)], input=tar.stdout, check=True)
        versions = {"A": build(src, "A"), **versions}

    times: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for rnd in range(a.rounds):
        order = list(versions.items())
        for v, pkg in order if rnd % 2 == 0 else order[::-1]:  # A B, B A, ...: neither always runs first
            for name, ms in phases(pkg, a).items():
                times[name][v].append(ms)
    mode = "warm" if a.warm else "cold"
    print(f"{a.size}x{a.size}, {a.labels} labels, {a.preset}, {a.threads} thread(s), {mode}; median of "
          f"{a.rounds} round(s); ms" + ("" if a.no_base else f"; A = {a.base}, B = working tree"))
    cols = list(versions)
    print(f"{'phase':28s}" + "".join(f"{c:>10s}" for c in cols) + ("    B/A" if len(cols) == 2 else ""))
    for name, by in times.items():
        meds = [statistics.median(by[c]) if by[c] else float("nan") for c in cols]
        ratio = f"  {meds[1] / meds[0]:5.3f}" if len(cols) == 2 and meds[0] > 0 else ""
        print(f"{name:28s}" + "".join(f"{m:10.2f}" for m in meds) + ratio)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
