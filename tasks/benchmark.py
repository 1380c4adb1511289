"""``make benchmark``: speed figures measured on this machine, written to JSON and printed as a table.

1. The default digits run, stage by stage (fresh run folder): wall time, test accuracy, int8 accuracy.
2. Fashion-MNIST (local IDX files or TFDS): the input pipeline alone against what training consumes
   (``cnnpipe bench-data``), with the default Fashion-MNIST augmentation.
3. Batch-1 LiteRT latency of the exported float32 and int8 digits models (``cnnpipe bench``).

``--fashion-train`` also trains Fashion-MNIST end to end (about 10-15 minutes on 2 cores).
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]


def _cnnpipe(args: list, cwd: Path) -> float:
    """Run one ``cnnpipe`` command in a subprocess; return its wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tasks.cli", *map(str, args)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode:
        raise click.ClickException(f"cnnpipe {args[0]} failed (exit {done.returncode}); see its output above")
    return round(time.perf_counter() - start, 2)


def digits(work: Path) -> dict:
    cfg, out = REPO / "configs" / "default.yaml", {}
    for stage in ("ingest", "build", "train", "evaluate", "export"):
        out[f"{stage}_seconds"] = _cnnpipe([stage, "--config", cfg, "--set", "train.verbose=0"], work)
    metrics = json.loads((work / "runs/default/eval/metrics.json").read_text())
    card = json.loads((work / "exported/default/model_card.json").read_text())
    out["pipeline_seconds"] = round(sum(v for k, v in out.items() if k.endswith("_seconds")), 2)
    out["test_accuracy"] = metrics["accuracy"]
    for fmt, f in card["files"].items():
        out[f"{fmt}_accuracy"] = f["parity"]["accuracy"]
        out[f"{fmt}_bytes"] = f["bytes"]
    out["tflm_arena_bytes"] = card.get("micro", {}).get("arena_bytes")
    return out


def fashion_input(work: Path, train_too: bool) -> dict:
    cfg = REPO / "configs" / "fashion_mnist.yaml"
    out = {"ingest_seconds": _cnnpipe(["ingest", "--config", cfg], work)}
    result = work / "bench_data.json"
    _cnnpipe(["bench-data", "--config", cfg, "--epochs", "3", "--train-steps", "40", "--json-out", result], work)
    figures = json.loads(result.read_text())
    out["pipeline_images_per_second"] = figures["pipeline"]["images_per_second"]
    out["training_images_per_second"] = figures["training"]["images_per_second"]
    out["pipeline_over_training"] = figures["ratio"]
    out["augmentation"] = figures["augmentation"]
    if train_too:
        out["train_run_seconds"] = _cnnpipe(["run", "--config", cfg, "--set", "train.verbose=0"], work)
        out["test_accuracy"] = json.loads(
            (work / "runs/fashion_mnist/eval/metrics.json").read_text())["accuracy"]
    return out


def latency(work: Path) -> dict:
    out = {}
    for fmt in ("float32", "int8"):
        result = work / f"bench_{fmt}.json"
        _cnnpipe(["bench", work / f"exported/default/model_{fmt}.tflite", "--runs", "300",
                  "--threads", "1", "--json-out", result], work)
        figures = json.loads(result.read_text())
        out[fmt] = {k: figures[k] for k in ("init_ms", "first_ms", "mean_ms", "p50_ms", "p99_ms")}
    return out


def table(results: dict) -> str:
    rows = []
    for group, values in results.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            rows.append((group, key, value))
    width = max(len(k) for _, k, _ in rows)
    return "\n".join(f"{g:<14} {k:<{width}}  {v}" for g, k, v in rows)


@click.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("benchmarks/results.json"), show_default=True)
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path("benchmarks/work"), show_default=True, help="Scratch folder (emptied first).")
@click.option("--fashion-train", is_flag=True, help="Also train Fashion-MNIST end to end (slow).")
def main(out: Path, work: Path, fashion_train: bool):
    import shutil

    from pipeline import artifacts

    marker = work / ".cnnpipe-benchmark"
    if work.exists() and any(work.iterdir()) and not marker.exists():
        raise click.UsageError(f"--work {work}: not empty and not a benchmark scratch folder; refusing to empty it")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    marker.touch()
    work = work.resolve()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}}
    results["digits"] = digits(work)
    results["latency_batch1"] = latency(work)
    if Path("/usr/share/datasets/fashion-mnist").is_dir() or fashion_train:
        results["fashion_mnist"] = fashion_input(work, fashion_train)
    results["versions"] = artifacts.library_versions()
    artifacts.write_json(out, results)
    click.echo(table(results))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
