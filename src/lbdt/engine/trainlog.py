"""The training run's metrics log (long-format CSV, plus TensorBoard when it is installed) and its curves PNG."""

from __future__ import annotations

import csv
from pathlib import Path

from lbdt.io import atomic_write

LOG_FIELDS = ("step", "epoch", "split", "name", "value")


class MetricsLog:
    """Long-format CSV (`step, epoch, split, name, value`), plus TensorBoard when it is installed.

    On resume, rows after the checkpoint's step (written by the killed run) are dropped first.
    """

    def __init__(self, path: Path, *, keep_up_to_step: int, enabled: bool, fresh: bool):
        self.path, self.enabled, self.tb = path, enabled, None
        if not enabled:
            return
        rows = []
        if path.is_file() and not fresh:
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_up_to_step]
        with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)
        self.file = open(path, "a", newline="")  # noqa: SIM115 - kept open for the run, closed by close()
        self.writer = csv.DictWriter(self.file, LOG_FIELDS)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(path.parent / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, step: int, epoch: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.writerow({"step": step, "epoch": epoch, "split": split, "name": name, "value": f"{value:.6g}"})
            if self.tb is not None:
                self.tb.add_scalar(f"{split}/{name}", value, step)
        self.file.flush()

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.tb is not None:
                self.tb.close()


def plot_curves(csv_path: Path, png_path: Path, val_metric: str) -> None:
    """Training loss against step and validation metrics (the selection metric, overall IoU, mean IoU and
    mean IoU per sentence type) against epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_loss, val = [], {}
    with open(csv_path, newline="") as f:
        for r in csv.DictReader(f):
            if r["split"] == "train" and r["name"] == "loss":
                train_loss.append((int(r["step"]), float(r["value"])))
            elif r["split"] == "val" and (r["name"] in (val_metric, "overall_iou") or r["name"].startswith("mean_iou")):
                val.setdefault(r["name"], []).append((int(r["epoch"]), float(r["value"])))
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    if train_loss:
        a.plot(*zip(*train_loss), marker=".")
    a.set(xlabel="optimizer step", ylabel="loss (0.5 BCE + 0.5 Dice)", title="training loss")
    for name, pts in sorted(val.items()):
        b.plot(*zip(*pts), marker="o", label=name)
    b.set(xlabel="epoch", ylabel="metric", title="validation")
    if val:
        b.legend()
    fig.tight_layout()
    with atomic_write(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
