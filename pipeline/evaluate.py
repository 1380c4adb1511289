"""Test-split metrics with sklearn.metrics and a confusion-matrix figure with matplotlib."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import artifacts


def metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro/weighted averages, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    labels = list(range(len(class_names)))
    report = classification_report(y_true, y_pred, labels=labels, target_names=class_names,
                                   output_dict=True, zero_division=0)
    per_class = {name: {k: (round(float(v), 6) if k != "support" else int(v))
                        for k, v in report[name].items()} for name in class_names}
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "n_test": int(len(y_true)),
        "macro_f1": round(float(report["macro avg"]["f1-score"]), 6),
        "weighted_f1": round(float(report["weighted avg"]["f1-score"]), 6),
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
    fig.tight_layout()
    with artifacts.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def predict_labels(model, images: np.ndarray, batch_size: int) -> np.ndarray:
    probs = model.predict(images.astype(np.float32), batch_size=batch_size, verbose=0)
    return np.argmax(probs, axis=1)


def evaluate(model_path: Path, data_dir: Path, eval_cfg, out_dir: Path) -> dict:
    """Evaluate the trained model on the test split; write ``metrics.json`` and ``confusion_matrix.png``."""
    from pipeline import data, models

    meta = data.read_meta(data_dir)
    x, y = data.load_split(data_dir, "test", meta)
    model = models.load(model_path, compile=False)
    pred = predict_labels(model, x, eval_cfg.batch_size)
    result = metrics(y, pred, meta["class_names"])
    artifacts.write_json(out_dir / "metrics.json", result)
    confusion_figure(result["confusion_matrix"], meta["class_names"], out_dir / "confusion_matrix.png",
                     f"Test confusion matrix (accuracy {100 * result['accuracy']:.2f}%, n={len(y)})")
    return result
