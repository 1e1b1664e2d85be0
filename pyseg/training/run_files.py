"""The files of one run directory, all written atomically by rank 0.

::

    run_dir/
      config.yaml               resolved config
      metrics.csv               one row per epoch (METRIC_COLUMNS)
      lr.csv                    epoch, step, lr_<group> (backbone, head) per optimizer step
      best_per_class_iou.csv    class_id, class_name, iou of the best epoch (by val mIoU)
      checkpoints/last.pt       after every epoch, written last (the resume point)
      checkpoints/best.pt       the epoch with the best val mIoU
      plots/lr.png, loss.png, miou.png
      train.log                 the log lines of the run (appended on resume)
      tb/                       TensorBoard events (only when the tensorboard package is installed)
"""

from __future__ import annotations

import logging
from pathlib import Path

from pyseg.config import Config, save_config
from pyseg.fileio import atomic_write_text, remove_stale_temps
from pyseg.training.csv_tables import csv_text, read_csv
from pyseg.training.checkpoint import atomic_torch_save

log = logging.getLogger(__name__)

METRIC_COLUMNS = ["epoch", "train_loss", "val_loss", "val_miou", "val_miou_per_image", "val_pixel_acc",
                  "train_miou", "train_pixel_acc", "lr", "seconds"]


class RunFiles:
    """Writes the run directory; every method is a no-op when ``enabled`` is False (non-zero ranks)."""

    def __init__(self, run_dir, class_names: list[str], enabled: bool = True, tensorboard: bool = True,
                 lr_names: list[str] | None = None):
        self.dir = Path(run_dir)
        self.class_names = list(class_names)
        self.lr_names = list(lr_names) if lr_names else None  # parameter-group names for the lr.csv header
        self.enabled = enabled
        self.want_tb = tensorboard
        self.tb = None
        self._handler = None

    def start(self, cfg: Config) -> None:
        if not self.enabled:
            return
        (self.dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.dir / "config.yaml")
        self._handler = logging.FileHandler(self.dir / "train.log", mode="a", encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._handler.setLevel(logging.INFO)
        pkg = logging.getLogger("pyseg")
        pkg.addHandler(self._handler)
        if pkg.getEffectiveLevel() > logging.INFO:
            pkg.setLevel(logging.INFO)
        for folder in (self.dir, self.dir / "checkpoints", self.dir / "plots"):
            for p in remove_stale_temps(folder):
                log.warning("removed %s: a temp file left by a run killed while writing it", p)
        if self.want_tb:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.debug("tensorboard is not installed; no TensorBoard logs")
            else:
                self.tb = SummaryWriter(str(self.dir / "tb"))

    def load_history(self, epoch: int) -> tuple[list[dict], list[list]]:
        """metrics.csv rows and lr.csv rows up to ``epoch`` (what a resumed run continues from)."""
        history, lr_log = [], []
        if (self.dir / "metrics.csv").is_file():
            _, rows = read_csv(self.dir / "metrics.csv")
            history = [r for r in rows if r["epoch"] <= epoch]
        if (self.dir / "lr.csv").is_file():
            header, rows = read_csv(self.dir / "lr.csv")
            lr_log = [[r[h] for h in header] for r in rows if r["epoch"] <= epoch]
        return history, lr_log

    def save_epoch(self, row: dict, history: list[dict], lr_log: list[list], ckpt: dict, improved: bool,
                   iou_per_class, plots: bool = True) -> None:
        if not self.enabled:
            return
        atomic_write_text(self.dir / "metrics.csv",
                          csv_text(METRIC_COLUMNS, [[r.get(c, float("nan")) for c in METRIC_COLUMNS]
                                                    for r in history]))
        n_groups = len(lr_log[0]) - 2 if lr_log else 0
        names = self.lr_names if self.lr_names and len(self.lr_names) == n_groups else \
            [f"group{i}" for i in range(n_groups)]
        atomic_write_text(self.dir / "lr.csv", csv_text(["epoch", "step"] + [f"lr_{n}" for n in names], lr_log))
        if improved:
            atomic_torch_save(ckpt, self.dir / "checkpoints" / "best.pt")
            names = self.class_names + [str(i) for i in range(len(self.class_names), len(iou_per_class))]
            atomic_write_text(self.dir / "best_per_class_iou.csv",
                              csv_text(["class_id", "class_name", "iou"],
                                       [[i, names[i], float(v)] for i, v in enumerate(iou_per_class)]))
        if self.tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()
        if plots:
            try:
                from pyseg.training.plots import plot_run

                plot_run(self.dir)
            except ImportError as e:  # matplotlib missing: the run itself is fine
                log.warning("plots skipped: %s", e)
        # Last: a resume starts after the epoch last.pt names, so a crash before this line redoes the whole epoch.
        atomic_torch_save(ckpt, self.dir / "checkpoints" / "last.pt")

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self._handler is not None:
            logging.getLogger("pyseg").removeHandler(self._handler)
            self._handler.close()
            self._handler = None
