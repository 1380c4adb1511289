"""Test-split metrics with sklearn.metrics and a confusion-matrix figure with matplotlib; detection and
segmentation models are measured by their task module (:mod:`pipeline.heads`) instead."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from pipeline import artifacts


def metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro/weighted averages, per-class precision/recall/F1/support and the confusion matrix.

    Computed by class index, so any class name works, even one spelled like a report key (``accuracy``,
    ``macro avg``); ``per_class`` is keyed by name in class order.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0)
    averages = {avg: precision_recall_fscore_support(y_true, y_pred, labels=labels, average=avg,
                                                     zero_division=0)[2] for avg in ("macro", "weighted")}
    per_class = {name: {"precision": round(float(precision[i]), 6), "recall": round(float(recall[i]), 6),
                        "f1-score": round(float(f1[i]), 6), "support": int(support[i])}
                 for i, name in enumerate(class_names)}
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "n_test": int(len(y_true)),
        "macro_f1": round(float(averages["macro"]), 6),
        "weighted_f1": round(float(averages["weighted"]), 6),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "class_names": list(class_names),
    }


def confusion_figure(matrix, class_names: list[str], path: Path, title: str) -> Path:
    """A confusion-matrix PNG a person can read: counts in each cell, row-normalised colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(matrix)
    k = len(class_names)
    size = max(5.0, 0.6 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=45 if k > 6 else "horizontal")
    ax.set_title(title)
    with warnings.catch_warnings():  # a class name in emoji or a script the font lacks: drawn as boxes
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
        with artifacts.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def predict_split(model, data_dir: Path, name: str, meta: dict, batch_size: int):
    """(true labels, predicted labels) of a whole split, streamed batch by batch from its shards."""
    import tensorflow as tf

    from pipeline import data

    ds = data.split_dataset(data_dir, name, meta).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    truth, pred = [], []
    for images, labels in ds.as_numpy_iterator():
        probs = model.predict_on_batch(images.astype(np.float32))
        pred.append(np.argmax(np.asarray(probs), axis=1))
        truth.append(labels)
    return np.concatenate(truth).astype(np.int64), np.concatenate(pred).astype(np.int64)


def evaluate(model_path: Path, data_dir: Path, eval_cfg, out_dir: Path) -> dict:
    """Evaluate the trained model on the test split, streamed from its shards; write ``metrics.json`` and
    ``confusion_matrix.png``."""
    from pipeline import data, models

    meta = data.read_meta(data_dir)
    model = models.load(model_path, compile=False)
    y, pred = predict_split(model, data_dir, "test", meta, eval_cfg.batch_size)
    result = metrics(y, pred, meta["class_names"])
    artifacts.write_json(out_dir / "metrics.json", result)
    confusion_figure(result["confusion_matrix"], meta["class_names"], out_dir / "confusion_matrix.png",
                     f"Test confusion matrix (accuracy {100 * result['accuracy']:.2f}%, n={len(y)})")
    return result


def predict_targets(model, data_dir: Path, name: str, meta: dict, batch_size: int, keep=None):
    """(images, targets, probabilities) of a detection or segmentation split, batch by batch; the targets and
    outputs of every image, the pixels only of the records at indices ``keep`` (all when None)."""
    import tensorflow as tf

    from pipeline import data

    ds = data.split_dataset(data_dir, name, meta).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    images, targets, probs = [], [], []
    at = 0
    for x, t in ds.as_numpy_iterator():
        probs.append(np.asarray(model.predict_on_batch(x.astype(np.float32))))
        targets.append(t)
        index = np.arange(at, at + len(x))
        images.append(x if keep is None else x[np.isin(index, keep)])
        at += len(x)
    return np.concatenate(images), np.concatenate(targets), np.concatenate(probs)


FIGURE_IMAGES = {"detect": 12, "segment": 8}  # a grid of detections; rows of image, truth, prediction


def evaluate_task(model_path: Path, data_dir: Path, cfg, out_dir: Path) -> dict:
    """Evaluate a detection or segmentation model on the test split: ``metrics.json`` and ``predictions.png``
    (test images with the true and the predicted objects or masks)."""
    from pipeline import data, heads, models

    meta = data.read_meta(data_dir)
    model = models.load(model_path, compile=False)
    n = int(meta["counts"]["test"])  # the figure's images spread over the split (it is ordered by class)
    shown = np.unique(np.linspace(0, n - 1, min(n, FIGURE_IMAGES[meta["task"]])).round().astype(int))
    images, targets, probs = predict_targets(model, data_dir, "test", meta, cfg.eval.batch_size, shown)
    result = heads.measure(cfg, meta, targets, probs)
    artifacts.write_json(out_dir / "metrics.json", result)
    headline = heads.HEADLINE[meta["task"]]
    heads.figure(cfg, meta, images, targets[shown], probs[shown], out_dir / "predictions.png",
                 f"Test predictions ({heads.TITLE[meta['task']]} {100 * result[headline]:.1f}%, "
                 f"n={len(targets)})")
    return result
