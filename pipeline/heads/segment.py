"""Semantic segmentation: targets, loss, IoU metrics (one-shot and streaming), parity, figure, decoding card.

Every pixel has one of ``K`` classes (class 0 is usually background but is counted like any other class).
The model answers a softmax over ``K`` channels per pixel; the predicted class is its argmax
(``pipeline.decoding.mask``).

Loss: per-pixel categorical cross-entropy ``-sum_k y_k log p_k`` averaged over all pixels of the batch -
Keras's built-in ``CategoricalCrossentropy`` on one-hot targets [B, H, W, K] does exactly that and is
serializable without registration.

Metrics come from the pixel confusion matrix ``C`` (rows: true class, columns: predicted class), summed over
images (``sklearn.metrics.confusion_matrix`` per batch, so a large test split streams through
``Accumulator``):

* IoU of class ``k`` = ``C[k,k] / (sum_j C[k,j] + sum_i C[i,k] - C[k,k])`` - intersection over union of the
  true and predicted pixel sets.
* ``mean_iou`` = mean IoU over the classes **present in the truth or the prediction**; a class absent from
  both has an undefined IoU (0/0), is left out of the mean and reported as ``null``. A class predicted but
  never true counts with IoU 0, so false alarms are punished.
* ``pixel_accuracy`` = ``trace(C) / sum(C)``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline import decoding


def encode(masks, num_classes: int):
    """One-hot float32 [B, H, W, K] from integer masks [B, H, W] (TensorFlow ops; any leading shape works)."""
    import tensorflow as tf

    return tf.one_hot(tf.cast(masks, tf.int32), int(num_classes), dtype=tf.float32)


def loss(num_classes: int):
    """Per-pixel categorical cross-entropy, mean over pixels (built-in, serializable). ``num_classes`` is only
    checked: the loss reads K from the targets."""
    import keras

    if int(num_classes) < 2:
        raise ValueError(f"segmentation needs at least 2 classes, got {num_classes}")
    return keras.losses.CategoricalCrossentropy(name="segment_ce")


def _predicted(probs) -> np.ndarray:
    probs = np.asarray(probs)
    return probs.argmax(axis=-1)


def iou_from_confusion(matrix) -> tuple[np.ndarray, np.ndarray]:
    """(IoU per class with NaN where undefined, boolean ``present``: class in truth or prediction)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    hits = np.diag(matrix)
    union = matrix.sum(axis=1) + matrix.sum(axis=0) - hits
    present = union > 0
    iou = np.full(len(hits), np.nan)
    iou[present] = hits[present] / union[present]
    return iou, present


class Accumulator:
    """Streaming segmentation metrics: ``add(truth_batch, probs_batch)`` batch after batch, then
    ``result(class_names)``; only the K x K confusion matrix is kept."""

    def __init__(self, num_classes: int):
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.n_test = 0

    def add(self, truth_batch, probs_batch) -> None:
        """``truth_batch`` uint8 [B, H, W] class indices; ``probs_batch`` [B, H, W, K] probabilities."""
        from sklearn.metrics import confusion_matrix

        truth = np.asarray(truth_batch).astype(np.int64)
        probs = np.asarray(probs_batch)
        if probs.shape[-1] != self.num_classes or truth.shape != probs.shape[:-1]:
            raise ValueError(f"truth {truth.shape} and outputs {probs.shape} do not match {self.num_classes} "
                             "classes")
        if truth.size and (truth.min() < 0 or truth.max() >= self.num_classes):
            raise ValueError(f"mask values must be 0..{self.num_classes - 1}, "
                             f"found {truth.min()}..{truth.max()}")
        if truth.size:
            self.matrix += confusion_matrix(truth.ravel(), _predicted(probs).ravel(),
                                            labels=list(range(self.num_classes))).astype(np.int64)
        self.n_test += len(truth)

    def result(self, class_names) -> dict:
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        iou, present = iou_from_confusion(self.matrix)
        total = int(self.matrix.sum())
        per_class = {name: {"iou": round(float(iou[k]), 6) if present[k] else None,
                            "pixels": int(self.matrix[k].sum()),
                            "predicted_pixels": int(self.matrix[:, k].sum())}
                     for k, name in enumerate(class_names)}
        return {
            "task": "segment",
            "mean_iou": round(float(iou[present].mean()) if present.any() else 0.0, 6),
            "pixel_accuracy": round(float(np.trace(self.matrix) / total) if total else 0.0, 6),
            "per_class": per_class,
            "confusion_matrix": self.matrix.tolist(),
            "n_test": int(self.n_test),
            "class_names": list(class_names),
        }


def metrics(truth, probs, class_names) -> dict:
    """JSON-ready test metrics of outputs ``probs`` [N, H, W, K] against masks ``truth`` [N, H, W]."""
    acc = Accumulator(len(class_names))
    acc.add(truth, probs)
    return acc.result(class_names)


def parity(ref_probs, probs, truth, class_names) -> dict:
    """Mean IoU of a converted file's outputs ``probs`` against the Keras outputs ``ref_probs``.

    ``drop_points`` = 100 * (Keras - file), positive when the file is worse; ``per_class`` (classes with true
    pixels): the file's IoU and ``delta_points`` = 100 * (file - Keras); ``changed``: share of pixels whose
    argmax differs.
    """
    ref_probs, probs = np.asarray(ref_probs, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    if ref_probs.shape != probs.shape:
        raise ValueError(f"outputs differ in shape: {ref_probs.shape} vs {probs.shape}")
    ours, ref = metrics(truth, probs, class_names), metrics(truth, ref_probs, class_names)
    per_class = {}
    for name in class_names:
        if ours["per_class"][name]["pixels"]:
            value, keras_value = ours["per_class"][name]["iou"], ref["per_class"][name]["iou"]
            per_class[name] = {"value": value, "delta_points": round(100 * (value - keras_value), 4)}
    changed = float((_predicted(probs) != _predicted(ref_probs)).mean()) if probs.size else 0.0
    from pipeline.heads import parity_record

    return parity_record("mean_iou", ours["mean_iou"], ref["mean_iou"], per_class, probs, ref_probs, changed)


TAB10 = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
         [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207]]


def default_palette(num_classes: int) -> list[list[int]]:
    """RGB 0..255 per class: black for class 0 (usually background), then the tab10 colours, then hues spread
    by the golden ratio."""
    import colorsys

    colours = [[0, 0, 0]] + TAB10[:max(num_classes - 1, 0)]
    for k in range(len(colours), num_classes):
        r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.95)
        colours.append([int(round(255 * r)), int(round(255 * g)), int(round(255 * b))])
    return colours[:num_classes]


def _colour(value) -> list[int]:
    """[r, g, b] 0..255 from ``[r, g, b]`` or ``"#rrggbb"``."""
    if isinstance(value, str):
        text = value.lstrip("#")
        return [int(text[i:i + 2], 16) for i in (0, 2, 4)]
    return [int(v) for v in list(value)[:3]]


def resolve_palette(palette, num_classes: int) -> list[list[int]]:
    """``palette`` (a list of ``[r, g, b]`` or ``"#rrggbb"``, or None) as [r, g, b] per class; missing
    entries come from ``default_palette``."""
    colours = [_colour(c) for c in (palette or [])][:num_classes]
    return colours + default_palette(num_classes)[len(colours):]


def overlay(image, mask, palette, alpha: float = 0.5) -> np.ndarray:
    """uint8 RGB [H, W, 3]: ``image`` blended with the palette colour of each pixel's class."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image[..., :3]
    colour = np.asarray(palette, dtype=np.float64)[np.asarray(mask, dtype=np.int64)]
    return np.clip((1 - alpha) * rgb.astype(np.float64) + alpha * colour, 0, 255).astype(np.uint8)


def figure(images, truth, probs, class_names, path, title: str, limit: int = 8, palette=None) -> Path:
    """Rows of image | truth overlay | prediction overlay (with its pixel accuracy), and a class legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from pipeline.heads import figures

    palette = resolve_palette(palette, len(class_names))
    images = np.asarray(images)[:limit]
    n = max(len(images), 1)
    legend_rows = math.ceil(len(class_names) / 6)
    height = 3 * n + 0.5 + 0.3 * legend_rows
    fig, axes = plt.subplots(n, 3, figsize=(9, height), dpi=100, squeeze=False)
    for k in range(len(images)):
        predicted = decoding.mask(probs[k])
        true = np.asarray(truth[k])
        figures.show(axes[k, 0], images[k])
        axes[k, 1].imshow(overlay(images[k], true, palette), interpolation="nearest")
        axes[k, 2].imshow(overlay(images[k], predicted, palette), interpolation="nearest")
        axes[k, 0].set_title(f"#{k}", fontsize=8)
        axes[k, 1].set_title("truth", fontsize=8)
        right = 100 * float((predicted == true).mean())
        axes[k, 2].set_title(f"prediction ({right:.1f}% pixels right)", fontsize=8)
        for ax in axes[k, 1:]:
            ax.set_xticks([])
            ax.set_yticks([])
    if not len(images):
        for ax in axes.flat:
            ax.axis("off")
    handles = [Patch(color=np.asarray(palette[k]) / 255.0, label=name) for k, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(title)
    return figures.save(fig, path, rect=(0, 0.3 * legend_rows / height, 1, 1 - 0.45 / height))


def decoding_params(image_hw, class_names, palette=None) -> dict:
    """What a device needs to turn the output tensor into a class mask (``pipeline.decoding.mask``)."""
    height, width = int(image_hw[0]), int(image_hw[1])
    return {
        "task": "segment",
        "method": "argmax",
        "input_hw": [height, width],
        "output_shape": [1, height, width, len(class_names)],
        "class_names": list(class_names),
        "dequantize": "int8/uint8 output: p = scale * (q - zero_point) with the output tensor's quantization "
                      "(argmax needs no dequantizing when the scale is positive)",
        "mask": "class of each pixel = argmax over the last axis (ties go to the lower class), uint8 [H, W]",
        "palette": resolve_palette(palette, len(class_names)),
    }
