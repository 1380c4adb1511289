"""``cnnpipe report``: the run report, one self-contained HTML page at ``runs/<run>/report.html``."""
from __future__ import annotations

import time
from pathlib import Path

import click

from tasks.common import DEFAULT_CONFIG, echo


@click.command("report")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Config file whose name is the run name (default: configs/default.yaml); the report shows "
                   "the config the stages recorded.")
@click.option("--run", "run", default=None, metavar="NAME",
              help="Run name (default: the config file's name).")
@click.option("--runs-dir", "runs_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("runs"), show_default=True, help="Folder holding the run folders.")
@click.option("--bench-runs", type=click.IntRange(0, 10000), default=30, show_default=True,
              help="Timed inferences per exported file for the latency table (0: none).")
def report(config: Path | None, run: str | None, runs_dir: Path, bench_runs: int):
    """Write runs/<run>/report.html: config, data, curves, metrics, mistakes, int8 changes, layers, filters,
    feature maps and device figures, images embedded; readable offline and on a phone.

    The run must have been trained and evaluated; sections of stages that have not run (export) say so."""
    from pipeline import artifacts, lock
    from pipeline import report as report_mod
    from pipeline.errors import ConfigError

    if run is None:
        config = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
        run = Path(config).stem if config else "default"
    if not run.strip() or "/" in run or "\\" in run or run.startswith(".") or "\n" in run:
        raise ConfigError(f"--run {run!r}: a run name is a plain, non-empty folder name")
    run_dir = runs_dir / run
    report_mod.check(run_dir)  # before the lock, which would create the run folder
    start = time.time()
    with lock.hold(run_dir):
        path = report_mod.write(run_dir, bench_runs=bench_runs)
    echo(f"report: {path} ({artifacts.human_bytes(path.stat().st_size)}, {time.time() - start:.1f} s)")
