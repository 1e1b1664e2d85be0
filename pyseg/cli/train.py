"""pyseg-train: train a segmentation model from a YAML config.

    pyseg-train --config configs/demo.yaml [--output-dir DIR] [--epochs N] [--resume] [--set key.sub=value ...]
    python -m pyseg.train ...                       (same)
    torchrun --nproc_per_node=2 -m pyseg.train ...  (distributed data parallel)

Output directory: ``--output-dir DIR`` (or ``train.output_dir`` in the config) is used as is and must be
empty or absent unless ``--resume`` is given; a run's files are never overwritten. Without it, each run
goes to a new version folder ``runs/<name>/v1``, ``v2``, ... (name = ``name`` in the config, by default the
config file's stem), so that successive versions of an experiment sit side by side for pyseg-compare;
``--resume`` without ``--output-dir`` continues the latest version. ``--resume`` without ``--config`` reads
the run's own ``config.yaml``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

EXAMPLE = "pyseg-train --config configs/demo.yaml --set optim.lr=1e-3 --set data.batch_size=8"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pyseg-train", description=__doc__.split("\n\n")[0],
                                epilog=f"example: {EXAMPLE}")
    p.add_argument("--config", type=Path, help="YAML config (see configs/); optional with --resume")
    p.add_argument("--output-dir", type=Path, help="run directory (default: runs/<name>/v<N>, next free N)")
    p.add_argument("--epochs", type=int, help="number of epochs (same as --set train.epochs=N)")
    p.add_argument("--resume", action="store_true", help="continue from <output-dir>/checkpoints/last.pt")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-3 schedule.name=cosine")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def _versions(base: Path) -> list[tuple[int, Path]]:
    if not base.is_dir():
        return []
    out = []
    for d in base.iterdir():
        m = re.fullmatch(r"v(\d+)", d.name)
        if m and d.is_dir():
            out.append((int(m.group(1)), d))
    return sorted(out)


def _stopped_in_first_epoch(run: Path) -> str:
    """The end of an error message when ``run`` holds a run killed before its first checkpoint, else ''."""
    if (run / "config.yaml").is_file() and not (run / "checkpoints" / "last.pt").is_file():
        return (f"; {run} holds a run that stopped before its first epoch ended (no checkpoints/last.pt), so there "
                "is nothing to resume: delete it and start again")
    return ""


def choose_run_dir(output_dir: Path | None, name: str, resume: bool, runs_root: Path = Path("runs")) -> Path:
    """The run directory per the policy in the module docstring; raises ValueError when it is not usable."""
    if output_dir is not None:
        if resume:
            if not (output_dir / "checkpoints" / "last.pt").is_file():
                raise ValueError(f"--resume: {output_dir / 'checkpoints' / 'last.pt'} does not exist"
                                 f"{_stopped_in_first_epoch(output_dir)}")
        elif output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
            stopped = _stopped_in_first_epoch(output_dir)
            if stopped:
                raise ValueError(f"output directory {output_dir} already exists and is not empty{stopped}, or "
                                 "choose another --output-dir")
            raise ValueError(f"output directory {output_dir} already exists and is not empty; pass --resume to "
                             "continue that run, or choose another --output-dir (without --output-dir each "
                             f"run gets a new version folder under {runs_root}/<name>/)")
        return output_dir
    base = runs_root / name
    versions = _versions(base)
    if resume:
        for _, d in reversed(versions):
            if (d / "checkpoints" / "last.pt").is_file():
                return d
        raise ValueError(f"--resume: no run with checkpoints/last.pt under {base}; pass --output-dir")
    n = versions[-1][0] + 1 if versions else 1
    while True:  # claim the folder, so that two runs started at once never share it
        try:
            (base / f"v{n}").mkdir(parents=True, exist_ok=False)
            return base / f"v{n}"
        except FileExistsError:
            n += 1


def _setup_logging(is_main: bool) -> None:
    logging.basicConfig(level=logging.INFO if is_main else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from pyseg.config import config_to_yaml, load_config
    from pyseg.training import distributed as D

    overrides = [o for group in args.overrides for o in group]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    info = D.env_dist_info()
    _setup_logging(info.is_main)
    try:
        config_path = args.config
        if config_path is None:
            if not args.resume:
                raise ValueError("--config FILE is required (it may be left out only with --resume)")
            out = args.output_dir
            if out is None:
                raise ValueError("--resume without --config needs --output-dir (the run to continue)")
            config_path = out / "config.yaml"
        cfg = load_config(config_path, overrides)
        if args.print_config:
            print(config_to_yaml(cfg), end="")
            return 0
        out = args.output_dir or (Path(cfg.train.output_dir) if cfg.train.output_dir else None)
        from pyseg.training.build import resolve_device

        device = resolve_device(cfg.train.device, info.local_rank)
        info = D.init_distributed(cfg.train.dist_backend, device.type)
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"pyseg-train: error: {e}", file=sys.stderr)
        D.cleanup_distributed()
        return 2
    run_dir, error = None, None
    if info.is_main:
        try:
            run_dir = str(choose_run_dir(out, cfg.name, args.resume))
        except ValueError as e:
            error = str(e)
    run_dir, error = D.broadcast_object((run_dir, error))  # every rank learns the folder, or the error
    if error is not None:
        if info.is_main:
            print(f"pyseg-train: error: {error}", file=sys.stderr)
        D.cleanup_distributed()
        return 2
    run_dir = Path(run_dir)
    cfg.train.output_dir = str(run_dir)
    from pyseg.training.engine import fit

    try:
        if info.is_main:
            print(f"pyseg-train: run directory {run_dir}", file=sys.stderr)
        result = fit(cfg, run_dir, resume=args.resume, progress=sys.stderr.isatty())
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"pyseg-train: error: {e}", file=sys.stderr)
        return 2
    finally:
        D.cleanup_distributed()
    if info.is_main:
        print(f"best val mIoU {result['best_miou']:.4f} at epoch {result['best_epoch']} "
              f"({result['epochs_run']} epochs{', stopped early' if result['stopped_early'] else ''}); "
              f"files in {run_dir}")
        for term, v in (result.get("crf") or {}).items():
            print(f"learned CRF {term}: weight {v['weight']:.4g}, weight x compatibility diagonal mean "
                  f"{v['diagonal_mean']:.4g}, off-diagonal mean {v['off_diagonal_mean']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
