"""The Fashion-MNIST entry of ``make benchmark``: our default config against the Keras "simple MNIST convnet"
baseline, both trained through the pipeline for the same wall-clock budget, in the same run.

For each config: parameters, MACs per image, training images per second, wall time to reach 90% and 92%
validation accuracy, float and int8 test accuracy, int8 file bytes, LiteRT float32 and int8 latency at batch 1
on one thread (mean and p99) with LiteRT's default delegate (XNNPACK), with its builtin kernels and, on a CPU
with AMX, with XNNPACK kept off AMX, and the TFLM arena.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

CONFIGS = {"default": "fashion_mnist.yaml", "baseline": "fashion_baseline.yaml"}
# The budget, not the config's train.epochs, sets how long each config trains: the baseline's constant rate
# runs until the budget stops it, and the default's cosine is planned over the epochs that fit the budget
# (pipeline/schedules.py), up to this many: on a slow host fewer than train.epochs, on a fast one more.
BUDGET_EPOCHS = {"default": 100}
THRESHOLDS = (0.90, 0.92)
# LiteRT latency, each as (table name, `cnnpipe bench --kernels`, --no-amx): XNNPACK (LiteRT's default on
# CPUs), LiteRT's builtin kernels, and XNNPACK kept off AMX, timed only on a CPU that has AMX
# (pipeline/amx.py: there XNNPACK's int8 kernels are 64 channels wide)
LATENCY = {"latency_ms": ("latency", "default", False),
           "latency_builtin_ms": ("builtin kernels", "builtin", False),
           "latency_no_amx_ms": ("XNNPACK no AMX", "default", True)}


def history_rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


def time_to(rows: list[dict], threshold: float) -> float | None:
    """Training seconds until the first epoch whose validation accuracy reaches ``threshold``
    (None: never)."""
    for row in rows:
        if row.get("val_accuracy", 0.0) >= threshold:
            return round(row["time_s"], 1)
    return None


def training_rate(rows: list[dict], train_images: int) -> float | None:
    seconds = sum(r.get("epoch_s", 0.0) for r in rows)
    return round(train_images * len(rows) / seconds, 1) if seconds else None


def figures(work: Path, run: str, latency: dict) -> dict:
    """Every figure of one trained and exported run, from the files the stages wrote; ``latency`` maps each
    key of :data:`LATENCY` that was timed to its ``{"float32": ..., "int8": ...}`` figures."""
    from pipeline import artifacts

    run_dir = work / "runs" / run
    rows = history_rows(run_dir / "train" / "history.csv")
    meta = artifacts.read_json(run_dir / "data" / "classes.json")
    summary = artifacts.read_json(run_dir / "model" / "summary.json")
    card = artifacts.read_json(work / "exported" / run / "model_card.json")
    passes = 2 if card.get("flip_average") else 1  # the file runs the model on the image and its mirror
    out = {
        "params": summary["totals"]["params"],
        "flip_average": passes == 2,
        "macs_per_image": summary["totals"]["macs"] * passes,
        "epochs": len(rows),
        "train_seconds": round(rows[-1]["time_s"], 1) if rows else None,
        "training_images_per_second": training_rate(rows, meta["counts"]["train"]),
        "best_val_accuracy": round(max(r["val_accuracy"] for r in rows), 4),
        "float_test_accuracy": card["keras"]["accuracy"],
        "int8_test_accuracy": card["files"]["int8"]["parity"]["accuracy"],
        "int8_drop_points": card["files"]["int8"]["parity"]["accuracy_drop_points"],
        "int8_bytes": card["files"]["int8"]["bytes"],
        "tflm_arena_bytes": card.get("micro", {}).get("arena_bytes"),
        **latency,
    }
    for t in THRESHOLDS:
        out[f"seconds_to_{round(100 * t)}pct_val"] = time_to(rows, t)
    return out


def targets(results: dict) -> dict:
    """The issue's targets for our default, each with the measured value and whether it was met."""
    d, b = results["default"], results["baseline"]
    ours, theirs = d.get("seconds_to_92pct_val"), b.get("seconds_to_92pct_val")
    return {
        "int8_accuracy_at_least_94": {"value": d["int8_test_accuracy"],
                                      "met": d["int8_test_accuracy"] >= 0.94},
        "params_at_most_100k": {"value": d["params"], "met": d["params"] <= 100_000},
        "int8_file_at_most_128kb": {"value": d["int8_bytes"], "met": d["int8_bytes"] <= 128 * 1024},
        "int8_within_0.3_points": {"value": d["int8_drop_points"], "met": d["int8_drop_points"] <= 0.3},
        "time_to_92_at_most_half_baseline": {
            "value": [ours, theirs],
            "met": ours is not None and (theirs is None or ours <= theirs / 2)},
        "int8_faster_than_float": {
            "value": [d["latency_ms"]["int8"]["mean_ms"], d["latency_ms"]["float32"]["mean_ms"]],
            "met": d["latency_ms"]["int8"]["mean_ms"] < d["latency_ms"]["float32"]["mean_ms"]},
    }


def compare(work: Path, repo: Path, budget_s: float, cnnpipe, bench, amx: bool = False) -> dict:
    """Train, evaluate and export both configs for ``budget_s`` seconds of training each; collect figures.

    ``cnnpipe(args, cwd)`` runs one command; ``bench(model_path, cwd, kernels, no_amx)`` returns LiteRT
    latency figures (``cnnpipe bench --kernels [--no-amx]``); ``amx``: the CPU has AMX, so XNNPACK is also
    timed without it."""
    results = {"budget_seconds": budget_s}
    for key, name in CONFIGS.items():
        cfg, run = repo / "configs" / name, f"fashion_{key}"  # not "default": the digits entry's run
        epochs = ["--set", f"train.epochs={BUDGET_EPOCHS[key]}"] if key in BUDGET_EPOCHS else []
        cnnpipe(["run", "--config", cfg, "--run", run, "--set", f"train.time_budget_s={budget_s}",
                 *epochs, "--set", "train.verbose=2"], work)
        latency = {kind: {fmt: bench(work / "exported" / run / f"model_{fmt}.tflite", work, kernels, no_amx)
                          for fmt in ("float32", "int8")}
                   for kind, (_, kernels, no_amx) in LATENCY.items() if amx or not no_amx}
        results[key] = figures(work, run, latency)
    results["targets"] = targets(results)
    return results


def table(results: dict) -> str:
    """The two configs side by side, then the targets."""
    keys = [k for k in results["default"] if not k.startswith("latency")]
    lines = [f"{'figure':<32} {'default':>14} {'baseline':>14}"]
    for key in keys:
        a, b = (_cell(results[r][key], "accuracy" in key) for r in ("default", "baseline"))
        lines.append(f"{key:<32} {a:>14} {b:>14}")
    for key, (name, _, _) in LATENCY.items():
        if not results["default"].get(key):
            continue
        for fmt in ("float32", "int8"):
            for stat in ("mean_ms", "p99_ms"):
                lines.append(f"{name + ' ' + fmt + ' ' + stat:<32} "
                             f"{_cell(results['default'][key][fmt][stat]):>14} "
                             f"{_cell(results['baseline'][key][fmt][stat]):>14}")
    lines.append("")
    for name, t in results["targets"].items():
        lines.append(f"target {name:<40} {'met' if t['met'] else 'NOT met'} ({json.dumps(t['value'])})")
    return "\n".join(lines)


def _cell(value, percent: bool = False) -> str:
    if value is None:
        return "never"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if percent:
        return f"{100 * value:.2f}%"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
