"""The build stage's work: the untrained Keras model from ``model.*`` and its summary."""
from __future__ import annotations

from pathlib import Path

from pipeline import artifacts


def run(cfg, data_dir: Path, out: Path) -> tuple[list, dict, dict]:
    """Build the model for the ingested data into ``out``; return (output files, summary, manifest additions)."""
    from pipeline import data, models, train

    meta = data.read_meta(data_dir)
    model = models.build(cfg.model, meta["image_shape"], len(meta["class_names"]))
    path = train.save_model(model, out / "model.keras")
    lines = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), line_length=100)
    summary_txt = artifacts.write_text(out / "summary.txt", "\n".join(lines) + "\n")
    return [path, summary_txt], {"preset": cfg.model.preset, "params": models.param_count(model),
                                 "layers": len(model.layers)}, {}
