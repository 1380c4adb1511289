"""The build stage's work: the untrained Keras model from ``model.*``, its summary and the device budget."""
from __future__ import annotations

from pathlib import Path

from pipeline import artifacts


def runs_root(data_dir: Path) -> Path:
    """``runs/`` of ``runs/<run>/data``: where an earlier run named by ``model.base_model`` lives."""
    return Path(data_dir).parent.parent


def check(cfg, data_dir: Path) -> dict | None:
    """The summary of the model ``model.*`` describes for the ingested data, after the checks that need no
    Keras model (the spec, the machine's memory, ``model.budget``); None for a transfer model, whose base is
    only known once loaded. Raises :class:`ConfigError` before anything is written."""
    from pipeline import data, models

    meta = data.read_meta(data_dir)
    check_task(cfg, meta)
    if models.is_transfer(cfg.model):
        return None
    ops = models.plan(cfg.model, meta["image_shape"], len(meta["class_names"]), cfg.detect.stride,
                      cfg.detect.boxes)
    summary = models.summary.summarize(ops, models.spec_name(cfg.model))
    models.summary.check_memory(summary["totals"], models.spec_key(cfg.model))
    models.summary.check_budget(summary["totals"], cfg.model.budget)
    return summary


def check_task(cfg, meta: dict) -> None:
    """``model.task`` must be what the ingested data holds targets for."""
    from pipeline import data
    from pipeline.errors import ConfigError

    held = data.task(meta)
    if cfg.model.task != held:
        what = {"classify": "class labels", "detect": "object centres and boxes", "segment": "masks"}[held]
        raise ConfigError(f"model.task: {cfg.model.task}, but the ingested data ({cfg.data.source}) "
                          f"holds {what}; set model.task: {held} or a source with {cfg.model.task} targets")


def model_summary(model, cfg) -> dict:
    """summary.json of a transfer model, from the built Keras model: per layer shape and parameters."""
    from pipeline.models import summary as summary_mod

    rows = []
    for layer in model.layers:
        shape = getattr(layer, "output", None)
        shape = list(shape.shape[1:]) if shape is not None and hasattr(shape, "shape") else []
        rows.append({"name": layer.name, "kind": type(layer).__name__, "block": "transfer",
                     "output_shape": shape, "params": int(layer.count_params()), "macs": None,
                     "receptive_field": []})
    largest = max(rows, key=lambda r: r["params"])
    totals = {"params": int(model.count_params()), "macs": None, "int8_bytes_estimate": None,
              "peak_activation_bytes": None, "arena_bytes_estimate": None, "largest_layer": largest["name"],
              "largest_layer_params": largest["params"]}
    # a transfer model is one nested base: its size still bounds the int8 file
    totals["int8_bytes_estimate"] = summary_mod.FILE_BYTES + int(1.05 * totals["params"])
    return {"model": "transfer", "input_shape": list(model.input_shape[1:]), "layers": rows, "totals": totals}


def run(cfg, data_dir: Path, out: Path) -> tuple[list, dict, dict]:
    """Build the model for the ingested data into ``out``; return (output files, summary, manifest
    additions)."""
    from pipeline import data, models, train

    summary = check(cfg, data_dir)
    meta = data.read_meta(data_dir)
    model = models.build(cfg.model, meta["image_shape"], len(meta["class_names"]), runs_root(data_dir),
                         cfg.detect.stride, cfg.detect.boxes)
    if summary is None:
        summary = model_summary(model, cfg)
        models.summary.check_budget({k: v or 0 for k, v in summary["totals"].items()}, cfg.model.budget)
    path = train.save_model(model, out / "model.keras")
    lines = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), line_length=100)
    summary_txt = artifacts.write_text(out / "summary.txt", "\n".join(lines) + "\n")
    summary_json = artifacts.write_json(out / "summary.json", summary)
    t = summary["totals"]
    brief = {"preset": models.spec_name(cfg.model),
             "params": models.param_count(model), "layers": len(model.layers)}
    if t.get("macs") is not None:
        brief.update(macs=t["macs"], int8_bytes_estimate=t["int8_bytes_estimate"],
                     arena_bytes_estimate=t["arena_bytes_estimate"])
    return [path, summary_txt, summary_json], brief, {}
