"""``make benchmark``: speed and accuracy figures measured on this machine, written to
``benchmarks/results/<timestamp>.json`` and ``latest.json`` and printed as tables. The default entries fit in
about an hour on 2 cores; ``--full`` (``make benchmark-full``) adds the slow ones.

- ``digits``: the default config stage by stage (fresh run folder): wall time, test and int8 accuracy,
  and batch-1 LiteRT latency of the exported float32 and int8 files (``cnnpipe bench``).
- ``fashion``: Fashion-MNIST (local IDX files or TFDS): the input pipeline alone against what training
  consumes (``cnnpipe bench-data``); then our default config against the Keras simple-convnet baseline, each
  trained through the pipeline for ``--fashion-budget`` seconds (:mod:`tasks.bench_fashion`).
- ``sequences``: MNIST-1D; with ``--full`` also GunPoint, ArrowHead and spoken keywords
  (:mod:`tasks.bench_tasks`).
- ``tasks``: detection and segmentation on generated scenes (``configs/detect.yaml``,
  ``configs/segment.yaml``): the task metric of Keras and int8, sizes, TFLM arena, latency
  (:mod:`tasks.bench_tasks`).
- ``transfer``: a base trained on Fashion-MNIST classes 0-4, transferred to 5-9 with 10 training images per
  class, against the same architecture from scratch, over 3 seeds (:mod:`tasks.bench_transfer`).
- ``profile`` (``--full``): training speed of the default Fashion-MNIST model under each thread pool, batch
  size, XLA and oneDNN setting (:mod:`tasks.bench_profile`).
- ``large-folder`` (``--full``): a folder of 10,000 and 60,000 96x96 PNGs: streaming ingest and one training
  epoch, with peak memory.
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


def _cnnpipe(args: list, cwd: Path, env: dict | None = None) -> float:
    """Run one ``cnnpipe`` command in a subprocess (``env`` added to this process's environment); return its
    wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tasks.cli", *map(str, args)], cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3",
                               **(env or {})})
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


def fashion_input(work: Path) -> dict:
    cfg = REPO / "configs" / "fashion_mnist.yaml"
    out = {"ingest_seconds": _cnnpipe(["ingest", "--config", cfg], work)}
    result = work / "bench_data.json"
    _cnnpipe(["bench-data", "--config", cfg, "--epochs", "3", "--train-steps", "40", "--json-out", result],
             work)
    figures = json.loads(result.read_text())
    out["pipeline_images_per_second"] = figures["pipeline"]["images_per_second"]
    out["training_images_per_second"] = figures["training"]["images_per_second"]
    out["pipeline_over_training"] = figures["ratio"]
    out["augmentation"] = figures["augmentation"]
    return out


def bench_file(model: Path, work: Path, kernels: str = "default", no_amx: bool = False) -> dict:
    """LiteRT latency of one .tflite file at batch 1 on one thread (``cnnpipe bench``, 300 runs) with LiteRT's
    ``kernels`` (default: its XNNPACK delegate; builtin: its own kernels without it), kept off AMX with
    ``no_amx``."""
    result = work / f"bench_{model.parent.name}_{model.stem}_{kernels}{'_no_amx' if no_amx else ''}.json"
    _cnnpipe(["bench", model, "--runs", "300", "--threads", "1", "--kernels", kernels,
              *(["--no-amx"] if no_amx else []), "--json-out", result], work)
    figures = json.loads(result.read_text())
    return {k: figures[k] for k in ("init_ms", "first_ms", "mean_ms", "p50_ms", "p99_ms")}


def latency(work: Path) -> dict:
    return {fmt: bench_file(work / f"exported/default/model_{fmt}.tflite", work)
            for fmt in ("float32", "int8")}


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle_boot"]  # folder names: the "/" of "T-shirt/top" cannot be one


def _write_pngs(job) -> int:
    """Write ``(path, 28x28 gray, tint)`` jobs as 96x96 RGB PNGs: upscaled, then tinted (R, G, B factors)."""
    import numpy as np
    from PIL import Image

    for path, gray, tint in job:
        big = np.asarray(Image.fromarray(gray).resize((96, 96), Image.Resampling.BILINEAR), np.float32)
        rgb = np.clip(big[..., None] * np.asarray(tint, np.float32)[None, None, :], 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(path, "PNG")
    return len(job)


def fashion_png_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``root/<class>/<index>.png``: the first ``count`` Fashion-MNIST training images as 96x96 RGB PNGs, each
    tinted by a random colour (two processes write them)."""
    import multiprocessing

    import numpy as np

    from pipeline.sources.idx import read_idx

    images = read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz", 3)[:count]
    labels = read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz", 1)[:count]
    tints = np.random.default_rng(seed).uniform(0.35, 1.0, (count, 3)).round(3)
    for name in FASHION_NAMES:
        (root / name).mkdir(parents=True, exist_ok=True)
    jobs = [(root / FASHION_NAMES[int(labels[i])] / f"{i:05d}.png", images[i], tuple(tints[i]))
            for i in range(count)]
    chunks = [jobs[k:k + 500] for k in range(0, count, 500)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        written = sum(pool.imap_unordered(_write_pngs, chunks))
    assert written == count
    return root


def _cnnpipe_rss(args: list, cwd: Path) -> tuple[float, float]:
    """Run one ``cnnpipe`` command; (wall seconds, peak RSS in MiB of the process and the children it waited
    for, from wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tasks.cli", *map(str, args)], cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"})
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise click.ClickException(f"cnnpipe {args[0]} failed (exit {proc.returncode}); see its output above")
    return round(time.perf_counter() - start, 2), round(usage.ru_maxrss / 1024, 1)


def _data_sets(root: Path) -> list:
    return ["--set", f"data.source=folder:{root}", "--set", "data.workers=2", "--set", "data.dedupe=false"]


def large_folder(work: Path, sizes=(10_000, 60_000), epoch_model: str = "[16, 32, 64, 64]",
                 png_dir: Path | None = None) -> dict:
    """Ingest a folder of 96x96 RGB PNGs (Fashion-MNIST upscaled and tinted) of each size with 2 workers, then
    train one epoch on the largest: wall time, images/s, CPU time and peak memory of each process.

    ``png_dir`` keeps the generated folder between runs (made once, reused when complete)."""
    from pipeline import artifacts, data, input_pipeline

    cfg = REPO / "configs" / "folder.yaml"
    big = max(sizes)
    start = time.perf_counter()
    folder = Path(png_dir or work) / f"png{big}"
    if not (folder / ".complete").is_file():
        fashion_png_folder(folder, big)
        (folder / ".complete").touch()
    out = {"generate_seconds": round(time.perf_counter() - start, 1),
           "folder_bytes": sum(p.stat().st_size for p in folder.rglob("*.png"))}
    for n in sorted(sizes):
        root = folder
        if n != big:  # the first n images of the big folder, hard-linked
            root = work / f"png{n}"
            for path in folder.rglob("*.png"):
                if int(path.stem) < n:
                    (root / path.parent.name).mkdir(parents=True, exist_ok=True)
                    os.link(path, root / path.parent.name / path.name)
        run = f"folder{n}"
        seconds, rss = _cnnpipe_rss(["ingest", "--config", cfg, "--run", run, *_data_sets(root)], work)
        data_dir = work / "runs" / run / "data"
        summary = artifacts.read_json(data_dir / "manifest.json")["summary"]
        out[f"ingest_{n}"] = {"images": n, "wall_seconds": seconds,
                              "images_per_second": summary["images_per_second"],
                              "peak_rss_mb": summary["peak_rss_mb"],
                              "worker_peak_rss_mb": summary.get("worker_peak_rss_mb"),
                              "peak_rss_mb_wait4": rss, "cpu_seconds": summary.get("cpu_seconds"),
                              "worker_cpu_seconds": summary.get("worker_cpu_seconds"),
                              "shard_bytes": sum(p.stat().st_size for p in data_dir.glob("*.tfrecord"))}
    run = f"folder{big}"
    meta = data.read_meta(work / "runs" / run / "data")
    epoch = {"model_filters": epoch_model, "cache_auto_picks": input_pipeline.cache_mode(meta, "auto"),
             "train_val_bytes": input_pipeline.split_bytes(meta),
             "free_memory_bytes": input_pipeline.free_memory()}
    sets = [*_data_sets(folder), "--set", f"model.filters={epoch_model}", "--set", "train.epochs=1",
            "--set", "train.warmup_epochs=0", "--set", "train.verbose=2"]
    _cnnpipe(["build", "--config", cfg, "--run", run, *sets], work)
    train_args = ["train", "--config", cfg, "--run", run, *sets]
    epoch["wall_seconds"], epoch["peak_rss_mb"] = _cnnpipe_rss(train_args, work)
    epoch["images"] = meta["counts"]["train"]
    out["train_epoch"] = epoch
    return out


# SIMD features that decide how fast int8 kernels run next to float32 ones: XNNPACK's int8 convolutions need
# VNNI (x86) or the dot-product instructions (ARM) to beat float32 (benchmarks/README.md "Experiments")
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model name and which of :data:`CPU_FEATURES` it has (Linux; elsewhere what platform says)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {"model": platform.processor() or platform.machine(), "features": None}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return {"model": fields.get("model name") or fields.get("cpu model") or platform.machine(),
            "features": [f for f in CPU_FEATURES if f in flags]}


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


ENTRIES = ("digits", "fashion", "sequences", "tasks", "transfer", "profile", "large-folder")
DEFAULT_ENTRIES = ("digits", "fashion", "sequences", "tasks", "transfer")  # 45-48 minutes measured on 2 cores
NEEDS_FASHION = ("fashion", "transfer", "profile", "large-folder")


def chosen_entries(only: tuple, skip: tuple, full: bool) -> list:
    """The entries to run, in :data:`ENTRIES` order: ``only`` when given, else the default set (every entry
    with ``full``), less ``skip``."""
    wanted = set(only) if only else set(ENTRIES if full else DEFAULT_ENTRIES)
    return [e for e in ENTRIES if e in wanted and e not in skip]


def check_inputs(entries: list, full: bool) -> None:
    """Refuse, before anything runs or is deleted, when an entry's data is missing."""
    if any(e in NEEDS_FASHION for e in entries) and not FASHION_DIR.is_dir():
        raise click.ClickException(f"{FASHION_DIR}: missing; apt-get install -y dataset-fashion-mnist "
                                   "(make benchmark installs it)")
    if full and "sequences" in entries:
        from tasks import bench_tasks

        bench_tasks.keyword_clips(REPO)


def _run_entry(name: str, work: Path, fashion_budget: float, full: bool, png_dir: Path | None) -> dict:
    """One entry's results, keyed as they appear in the JSON."""
    if name == "digits":
        return {"digits": digits(work), "latency_batch1": latency(work)}
    if name == "fashion":
        out = {"fashion_mnist": fashion_input(work)}
        if fashion_budget > 0:
            from tasks import bench_fashion

            amx = "amx_int8" in (cpu_info()["features"] or [])
            out["fashion_vs_baseline"] = bench_fashion.compare(work, REPO, fashion_budget, _cnnpipe,
                                                               bench_file, amx)
        return out
    if name in ("sequences", "tasks"):
        from tasks import bench_tasks

        names = bench_tasks.TASKS if name == "tasks" else (
            bench_tasks.SEQUENCES_FULL if full else bench_tasks.SEQUENCES)
        return bench_tasks.run_all(names, work, REPO, _cnnpipe, bench_file)
    if name == "transfer":
        from tasks import bench_transfer

        return {"transfer_fashion": bench_transfer.run(work, REPO, _cnnpipe)}
    if name == "profile":
        from tasks import bench_profile

        return {"training_profile": bench_profile.run(work, REPO, _cnnpipe)}
    return {"large_folder": large_folder(work, png_dir=png_dir.resolve() if png_dir else None)}


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("benchmarks/results"), show_default=True,
              help="Folder of results: <timestamp>.json and latest.json.")
@click.option("--fashion-budget", type=float, default=900.0, show_default=True,
              help="Training seconds for each Fashion-MNIST config (our default and the baseline); "
                   "0 skips them.")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path("benchmarks/work"), show_default=True, help="Scratch folder (emptied first).")
@click.option("--full", is_flag=True,
              help="Also the slow entries: the training-speed profile, the large folder (60,000 PNGs and one "
                   "epoch) and, in sequences, GunPoint, ArrowHead and the spoken keywords.")
@click.option("--only", multiple=True, type=click.Choice(ENTRIES),
              help="Run just this entry (repeatable).")
@click.option("--skip", multiple=True, type=click.Choice(ENTRIES), help="Leave this entry out (repeatable).")
@click.option("--png-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the large folder's PNGs here (made once, reused) instead of in --work.")
def main(out: Path, work: Path, fashion_budget: float, full: bool, only: tuple, skip: tuple,
         png_dir: Path | None):
    """Measure the pipeline on this machine. Entries (default: digits, fashion, sequences, tasks, transfer;
    --full adds profile and large-folder): digits = the default config stage by stage with batch-1 latency;
    fashion = the Fashion-MNIST input pipeline, and our default against the Keras simple convnet for
    --fashion-budget seconds each; sequences = MNIST-1D (--full: GunPoint, ArrowHead, keywords); tasks =
    detection and segmentation on generated scenes; transfer = Fashion-MNIST 0-4 -> 5-9 with 10 images a
    class; profile = training speed under each thread, batch, XLA and oneDNN setting; large-folder = ingest of
    10,000 and 60,000 96x96 PNGs and one training epoch."""
    import shutil

    from pipeline import artifacts

    entries = chosen_entries(only, skip, full)
    if not entries:
        raise click.UsageError("--only and --skip leave no entry to run")
    check_inputs(entries, full)
    marker = work / ".cnnpipe-benchmark"
    if work.exists() and any(work.iterdir()) and not marker.exists():
        raise click.UsageError(f"--work {work}: not empty and not a benchmark scratch folder; "
                               "refusing to empty it")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    marker.touch()
    work = work.resolve()
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform(), "cpu": cpu_info()},
               "entries": entries, "entry_seconds": {}}
    start = time.perf_counter()
    for name in entries:
        began = time.perf_counter()
        results.update(_run_entry(name, work, fashion_budget, full, png_dir))
        results["entry_seconds"][name] = round(time.perf_counter() - began, 1)
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    results["versions"] = artifacts.library_versions()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results["finished"] = stamp
    artifacts.write_json(out / f"{stamp}.json", results)
    artifacts.write_json(out / "latest.json", results)
    own_tables = ("fashion_vs_baseline", "transfer_fashion", "training_profile", "entries")
    click.echo(table({k: v for k, v in results.items() if k not in own_tables}))
    if "fashion_vs_baseline" in results:
        from tasks import bench_fashion

        click.echo("\nFashion-MNIST: our default against the Keras simple convnet, "
                   f"{fashion_budget:.0f} s of training each")
        click.echo(bench_fashion.table(results["fashion_vs_baseline"]))
    if "transfer_fashion" in results:
        from tasks import bench_transfer

        click.echo("\nTransfer learning: Fashion-MNIST 0-4 -> 5-9, 10 training images per class "
                   f"({results['transfer_fashion']['seeds'][0]['n_test']} test images)")
        click.echo(bench_transfer.table(results["transfer_fashion"]))
    if "training_profile" in results:
        from tasks import bench_profile

        click.echo("\nTraining speed of the default Fashion-MNIST model (median of "
                   f"{results['training_profile']['rounds']} interleaved rounds)")
        click.echo(bench_profile.table(results["training_profile"]))
    click.echo(f"\n{len(entries)} entries in {results['total_seconds'] / 60:.1f} minutes")
    click.echo(f"wrote {out / (stamp + '.json')} and {out / 'latest.json'}")


if __name__ == "__main__":
    main()
