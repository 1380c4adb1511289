"""The detection and segmentation entries of ``make benchmark``: ``configs/detect.yaml`` and
``configs/segment.yaml`` trained on their generated scenes, then measured as a device would run them.

Per task: parameters and MACs (build summary), training wall time and epochs, the task metric of the Keras
model and of each exported file (detection F1 of centres, segmentation mean IoU), the int8 file bytes, the
TFLM arena (measured and estimated) and LiteRT latency at batch 1 on one thread for float32 and int8.
"""
from __future__ import annotations

import json
from pathlib import Path

CONFIGS = {"detect": "detect.yaml", "segment": "segment.yaml"}
TARGETS = {"detect": ("f1", 0.90), "segment": ("mean_iou", 0.80)}  # the int8 metric each task must reach


def one(task: str, work: Path, repo: Path, cnnpipe, bench_file) -> dict:
    cfg = repo / "configs" / CONFIGS[task]
    run = f"bench_{task}"
    seconds = {}
    for stage in ("ingest", "build", "train", "evaluate", "export"):
        seconds[stage] = cnnpipe([stage, "--config", cfg, "--run", run, "--set", "train.verbose=2"], work)
    runs = work / "runs" / run
    build = json.loads((runs / "model" / "summary.json").read_text())["totals"]
    train = json.loads((runs / "train" / "manifest.json").read_text())["summary"]
    card = json.loads((work / "exported" / run / "model_card.json").read_text())
    metric, target = TARGETS[task]
    out = {"params": build["params"], "macs": build["macs"], "train_seconds": seconds["train"],
           "pipeline_seconds": round(sum(seconds.values()), 1), "epochs_run": train["epochs_run"],
           "metric": metric, "test_images": card["keras"]["n_test"],
           f"keras_{metric}": round(card["keras_metric"][metric], 4)}
    for fmt, f in card["files"].items():
        out[f"{fmt}_{metric}"] = round(f["parity"]["value"], 4)
        out[f"{fmt}_bytes"] = f["bytes"]
    int8 = card["files"].get("int8", {}).get("parity", {})
    out["int8_drop_points"] = int8.get("drop_points")
    out["int8_target"] = target
    out["int8_meets_target"] = bool(int8) and int8["value"] >= target and int8["drop_points"] <= 2.0
    micro = card.get("micro", {})
    out["tflm_arena_bytes"] = micro.get("arena_bytes")
    out["tflm_max_abs_diff_lsb"] = micro.get("max_abs_diff_lsb")
    out["arena_bytes_estimate"] = build.get("arena_bytes_estimate")
    for fmt in ("float32", "int8"):
        path = work / "exported" / run / f"model_{fmt}.tflite"
        if path.is_file():
            out[f"litert_{fmt}_ms"] = bench_file(path, work)
    return out


def run_all(work: Path, repo: Path, cnnpipe, bench_file) -> dict:
    return {task: one(task, work, repo, cnnpipe, bench_file) for task in CONFIGS}
