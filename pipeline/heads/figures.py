"""The figures evaluate writes for detection and segmentation (``predictions.png``): drawing only, with
matplotlib; the task modules compute what is drawn."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from pipeline import artifacts, decoding


def show(ax, image) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def detections(images, truth, probs, class_names, path, title: str, threshold: float = 0.5,
               limit: int = 12) -> Path:
    """A grid of up to ``limit`` test images: true centres as hollow circles, predicted centres as crosses
    labelled with class name and score, one colour per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from pipeline.heads.detect import true_centres

    images = np.asarray(images)[:limit]
    n = len(images)
    cols = min(4, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    colours = plt.get_cmap("tab10")
    legend_rows = math.ceil((2 + min(len(class_names), 10)) / 6)
    height = 3.4 * rows + 0.5 + 0.3 * legend_rows
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, height), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        image_hw = images[k].shape[:2]
        show(ax, images[k])
        classes, centres = true_centres(truth[k], image_hw)
        for c, (x, y) in zip(classes, centres):
            ax.scatter([x], [y], s=160, facecolors="none", edgecolors=[colours(c % 10)], linewidths=2)
        boxes = probs[k].shape[-1] == len(class_names) + 1 + decoding.BOX_CHANNELS  # detect.boxes
        found = (decoding.with_boxes if boxes else decoding.centroids)(probs[k], image_hw, threshold)
        for o in found:
            colour = colours(o["class"] % 10)
            ax.scatter([o["x"]], [o["y"]], marker="x", s=70, c=[colour], linewidths=2)
            if "box" in o:
                x0, y0, x1, y1 = o["box"]
                ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec=colour,
                                           lw=1.5))
            name = class_names[o["class"]] if o["class"] < len(class_names) else str(o["class"])
            ax.annotate(f"{name} {o['score']:.2f}", (o["x"], o["y"]), xytext=(4, 4),
                        textcoords="offset points", fontsize=7, color="white",
                        bbox={"boxstyle": "round,pad=0.15", "fc": colour, "alpha": 0.8})
        ax.set_title(f"#{k}: {len(classes)} true, {len(found)} found", fontsize=8)
    handles = [Line2D([], [], marker="o", ls="", mfc="none", mec="k", label="true centre"),
               Line2D([], [], marker="x", ls="", c="k", label="predicted centre")]
    handles += [Line2D([], [], marker="s", ls="", c=colours(c % 10), label=name)
                for c, name in enumerate(class_names[:10])]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title)
    return save(fig, path, rect=(0, 0.3 * legend_rows / height, 1, 1))


def save(fig, path, rect=None) -> Path:
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # a class name in a script the font lacks: drawn as boxes
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout(rect=rect)
        with artifacts.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
