"""``cnnpipe preview``: a PNG grid of augmented training samples with their (possibly mixed) labels."""
from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np

from tasks.common import Context, echo, stage_options


def label_text(row, class_names: list, top: int = 2) -> str:
    """'Coat' for a one-hot row; 'Coat 0.62 / Bag 0.38' for a mixed one (mixup, cutmix)."""
    row = np.asarray(row, dtype=np.float64)
    order = [i for i in np.argsort(-row)[:top] if row[i] > 1e-3]
    if len(order) == 1 and row[order[0]] > 0.999:
        return str(class_names[order[0]])
    return " / ".join(f"{class_names[i]} {row[i]:.2f}" for i in order)


def render_grid(images: np.ndarray, labels: np.ndarray, class_names: list, path: Path, title: str = "",
                columns: int = 8) -> Path:
    """Write images (float or uint8 [N, H, W, C] in 0..255) with label captions as one PNG, atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline import artifacts

    n = len(images)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.8 * columns, 1.9 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        image = np.clip(np.rint(images[i]), 0, 255).astype(np.uint8)
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image, interpolation="nearest")
        ax.set_title(label_text(labels[i], class_names), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with artifacts.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def augmented_samples(data_dir: Path, cfg, count: int):
    """The first ``count`` images and labels (objects, masks) of the training pipeline, augmented as
    configured."""
    from pipeline import data, input_pipeline, train

    meta = data.read_meta(data_dir)
    augment_fn = train.augmentation(cfg, meta)
    ds = input_pipeline.train_dataset(data_dir, meta, count, cfg.train.seed, augment_fn,
                                      cache="none")  # one batch
    images, labels = next(iter(ds.take(1)))
    ops = augment_fn.ops if augment_fn is not None else []
    return images.numpy(), labels.numpy(), meta, ops


def render_targets(cfg, meta: dict, images, targets, path: Path, title: str) -> Path:
    """Detection / segmentation samples drawn by the task's figure, with the encoded training target (the
    cells or pixels the model is trained to mark) in place of a prediction."""
    from pipeline import heads

    encoded = heads.encode_fn(cfg, meta)(images, targets)[1]
    marks = ("x: the cell the training target marks" if meta["task"] == "detect"
             else "right: the training target")
    return heads.figure(cfg, meta, np.clip(np.rint(images), 0, 255).astype(np.uint8), targets,
                        np.asarray(encoded), path, f"{title} ({marks})")


@click.command()
@stage_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="PNG to write (default: runs/<run>/data/preview.png).")
@click.option("--count", type=click.IntRange(1, 256), default=32, show_default=True,
              help="Number of samples in the grid.")
@click.option("--columns", type=click.IntRange(1, 32), default=8, show_default=True, help="Images per row.")
def preview(ctx: Context, out: Path | None, count: int, columns: int):
    """Write a PNG grid of augmented training samples with their labels (run `cnnpipe ingest` first)."""
    data_dir = ctx.stage_dir("data")
    images, labels, meta, ops = augmented_samples(data_dir, ctx.cfg, count)
    path = out or data_dir / "preview.png"
    title = f"{ctx.run}: augmentation {', '.join(ops) or 'off'}"
    if meta.get("task", "classify") != "classify":
        render_targets(ctx.cfg, meta, images, labels, path, title)
    else:
        render_grid(images, labels, meta["class_names"], path, title=title, columns=columns)
    echo(f"wrote {path} ({len(images)} training samples; augmentation: {', '.join(ops) or 'off'})")
