"""``training_curves.png``: loss and accuracy per epoch, train and validation, the best epoch marked."""
from __future__ import annotations

import csv
from pathlib import Path

from pipeline import artifacts


def read_history(path: Path) -> list[dict]:
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def write(history_csv: Path, path: Path) -> Path:
    """Plot ``history.csv`` (one row per epoch) to ``path``; the best epoch is the lowest validation loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_history(history_csv)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [r.get(prefix + metric) for r in rows]
            if all(v is not None for v in values) and values:
                ax.plot(epochs, values, style, marker="o", ms=3,
                        label=f"{'validation' if prefix else 'train'} {metric}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    if rows and all("val_loss" in r for r in rows):
        best = min(range(len(rows)), key=lambda i: rows[i]["val_loss"])
        for ax in axes:
            ax.axvline(epochs[best], color="tab:green", alpha=0.6, label=f"best epoch {epochs[best]}")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    with artifacts.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
