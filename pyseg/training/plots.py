"""Training curves as PNG files (matplotlib, Agg backend, imported only when a plot is made).

``plot_run(run_dir)`` writes ``plots/lr.png`` (LR of each parameter group over optimizer steps),
``plots/loss.png`` (train/val loss per epoch) and ``plots/miou.png`` (train/val mIoU, val per-image mIoU).
``plot_compare(run_dirs, out_path)`` overlays several runs (loss, mIoU, LR) in one figure.
Every PNG is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from pyseg.fileio import atomic_write
from pyseg.training.csv_tables import read_csv


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    finally:
        _plt().close(fig)


def _load(run_dir: Path):
    metrics = read_csv(run_dir / "metrics.csv")[1] if (run_dir / "metrics.csv").is_file() else []
    lr_header, lr_rows = read_csv(run_dir / "lr.csv") if (run_dir / "lr.csv").is_file() else ([], [])
    return metrics, lr_header, lr_rows


def plot_run(run_dir) -> list[Path]:
    """Write the three PNGs of one run into ``run_dir/plots``; returns their paths."""
    run_dir = Path(run_dir)
    metrics, lr_header, lr_rows = _load(run_dir)
    if not metrics and not lr_rows:
        raise FileNotFoundError(f"{run_dir} has no metrics.csv or lr.csv to plot")
    plt = _plt()
    out = []
    if lr_rows:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        steps = [r["step"] for r in lr_rows]
        for h in lr_header[2:]:
            ax.plot(steps, [r[h] for r in lr_rows], label=h.replace("lr_", ""))
        ax.set(xlabel="optimizer step", ylabel="learning rate", title="Learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.legend()
        ax.grid(alpha=0.3)
        out.append(run_dir / "plots" / "lr.png")
        _save(fig, out[-1])
    if metrics:
        ep = [r["epoch"] for r in metrics]
        for name, cols, title in (("loss", ["train_loss", "val_loss"], "Loss"),
                                  ("miou", ["train_miou", "val_miou", "val_miou_per_image"], "mIoU")):
            fig, ax = plt.subplots(figsize=(6, 3.5))
            for c in cols:
                if c in metrics[0]:
                    ax.plot(ep, [r[c] for r in metrics], marker="o", ms=3, label=c)
            ax.set(xlabel="epoch", ylabel=name, title=title)
            _integer_ticks(ax)
            ax.legend()
            ax.grid(alpha=0.3)
            out.append(run_dir / "plots" / f"{name}.png")
            _save(fig, out[-1])
    return out


def plot_compare(run_dirs, out_path, labels=None) -> Path:
    """One figure with train/val loss, val mIoU and LR of several runs overlaid; returns ``out_path``."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("plot_compare needs at least one run directory")
    labels = list(labels) if labels is not None else [run_label(d, run_dirs) for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (d, label) in enumerate(zip(run_dirs, labels)):
        metrics, lr_header, lr_rows = _load(d)
        if not metrics:
            raise FileNotFoundError(f"{d} has no metrics.csv")
        color = colors[i % len(colors)]
        ep = [r["epoch"] for r in metrics]
        axes[0].plot(ep, [r["train_loss"] for r in metrics], "--", color=color, label=f"{label} train")
        axes[0].plot(ep, [r["val_loss"] for r in metrics], "-", color=color, label=f"{label} val")
        axes[1].plot(ep, [r["val_miou"] for r in metrics], "-", color=color, label=f"{label} val")
        if "train_miou" in metrics[0]:
            axes[1].plot(ep, [r["train_miou"] for r in metrics], ":", color=color, label=f"{label} train")
        if lr_rows:
            axes[2].plot([r["step"] for r in lr_rows], [r[lr_header[-1]] for r in lr_rows], color=color,
                         label=label)
    axes[0].set(xlabel="epoch", ylabel="loss", title="Loss (dashed: train)")
    axes[1].set(xlabel="epoch", ylabel="mIoU", title="mIoU (dotted: train)")
    axes[2].set(xlabel="optimizer step", ylabel="head LR", title="Learning rate")
    axes[2].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    _integer_ticks(axes[0])
    _integer_ticks(axes[1])
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    out_path = Path(out_path)
    _save(fig, out_path)
    return out_path


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def run_label(d: Path, all_dirs: list[Path]) -> str:
    """Shortest distinguishing label: the folder name, or parent/name when names repeat (runs/x/v1)."""
    names = [p.name for p in all_dirs]
    return f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name
