"""The config entries of ``make benchmark``: a shipped config trained through every stage, each stage a fresh
``cnnpipe`` process, then measured as a device would run it.

- ``tasks``: ``configs/detect.yaml`` and ``configs/segment.yaml`` on their generated scenes;
- ``sequences``: ``configs/mnist1d.yaml`` (MNIST-1D, generated offline); with ``--full`` also the UCR
  ``configs/gunpoint.yaml`` and ``configs/arrowhead.yaml`` and the spoken keywords of
  ``configs/keywords.yaml`` (the clips ``make keywords-data`` speaks into ``benchmarks/data/keywords``).

Per config: parameters and MACs (build summary), training wall time and epochs, the test metric of the Keras
model and of each exported file (accuracy, detection F1 of centres, segmentation mean IoU), the int8 file
bytes, the TFLM arena (measured and estimated) and LiteRT latency at batch 1 on one thread for float32 and
int8.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

CONFIGS = {"detect": "detect.yaml", "segment": "segment.yaml", "mnist1d": "mnist1d.yaml",
           "gunpoint": "gunpoint.yaml", "arrowhead": "arrowhead.yaml", "keywords": "keywords.yaml"}
TARGETS = {"detect": 0.90, "segment": 0.80, "mnist1d": 0.94}  # the int8 metric each config must reach
# Published figures to read ours against (not targets: other models, or other data for keywords).
REFERENCES = {"mnist1d": "MNIST-1D paper CNN: 94% with about 5 K parameters",
              "gunpoint": "FCN (Wang et al. 2017): 100%", "arrowhead": "FCN (Fawaz et al. 2019): 84.3%",
              "keywords": "MLPerf Tiny DS-CNN: 90% on Speech Commands (real speech, not these clips)"}
TASKS = ("detect", "segment")
SEQUENCES = ("mnist1d",)
SEQUENCES_FULL = ("mnist1d", "gunpoint", "arrowhead", "keywords")
KEYWORDS_DIR = Path("benchmarks/data/keywords")  # relative to the repository


def keyword_clips(repo: Path) -> Path:
    """The spoken keyword clips of the checkout; a one-line error when they were never spoken."""
    clips = repo / KEYWORDS_DIR
    if not (clips / "yes").is_dir():
        raise click.ClickException(f"{clips}: no keyword clips; `make keywords-data` speaks them (espeak-ng)")
    return clips


def _extra_sets(name: str, repo: Path) -> list:
    """``--set`` arguments a config needs when run from the benchmark's scratch folder."""
    return ["--set", f"data.source=audio:{keyword_clips(repo)}"] if name == "keywords" else []


def one(name: str, work: Path, repo: Path, cnnpipe, bench_file) -> dict:
    cfg = repo / "configs" / CONFIGS[name]
    run = f"bench_{name}"
    sets = ["--set", "train.verbose=2", *_extra_sets(name, repo)]
    seconds = {}
    for stage in ("ingest", "build", "train", "evaluate", "export"):
        seconds[stage] = cnnpipe([stage, "--config", cfg, "--run", run, *sets], work)
    runs = work / "runs" / run
    build = json.loads((runs / "model" / "summary.json").read_text())["totals"]
    train = json.loads((runs / "train" / "manifest.json").read_text())["summary"]
    card = json.loads((work / "exported" / run / "model_card.json").read_text())
    return figures(name, card, build, train, seconds, work / "exported" / run, work, bench_file)


def figures(name: str, card: dict, build: dict, train: dict, seconds: dict, exported: Path, work: Path,
            bench_file) -> dict:
    """The entry's figures from the run's model card, build summary and training summary; latency of the
    files in ``exported``."""
    metric = card.get("metric", "accuracy")  # classification cards name no metric: theirs is accuracy
    out = {"params": build["params"], "macs": build["macs"], "train_seconds": seconds["train"],
           "pipeline_seconds": round(sum(seconds.values()), 1), "epochs_run": train["epochs_run"],
           "metric": metric, "test_samples": card["keras"]["n_test"],
           f"keras_{metric}": round(card["keras"][metric], 4)}
    for fmt, f in card["files"].items():
        out[f"{fmt}_{metric}"] = round(f["parity"].get("value", f["parity"].get(metric)), 4)
        out[f"{fmt}_bytes"] = f["bytes"]
    int8 = card["files"].get("int8", {}).get("parity", {})
    drop = int8.get("drop_points", int8.get(f"{metric}_drop_points"))
    out["int8_drop_points"] = drop
    if name in TARGETS:
        target = TARGETS[name]
        out["int8_target"] = target
        out["int8_meets_target"] = bool(int8) and out[f"int8_{metric}"] >= target and drop <= 2.0
    if name in REFERENCES:
        out["published"] = REFERENCES[name]
    micro = card.get("micro", {})
    out["tflm_arena_bytes"] = micro.get("arena_bytes")
    out["tflm_max_abs_diff_lsb"] = micro.get("max_abs_diff_lsb")
    out["arena_bytes_estimate"] = build.get("arena_bytes_estimate")
    for fmt in ("float32", "int8"):
        path = exported / f"model_{fmt}.tflite"
        if path.is_file():
            out[f"litert_{fmt}_ms"] = bench_file(path, work)
    return out


def run_all(names, work: Path, repo: Path, cnnpipe, bench_file) -> dict:
    return {name: one(name, work, repo, cnnpipe, bench_file) for name in names}
