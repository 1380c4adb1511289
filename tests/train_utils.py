"""Helpers of the training tests: a quick-to-train config, a prepared run (ingest + build done once) that
each test copies, and ``cnnpipe`` started as a subprocess (a fresh TensorFlow per run, as a user runs it)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from conftest import DEFAULT_CONFIG, REPO

RUN = "r"
# Trains to ~85-90% test accuracy on the digits in 3-4 epochs (no batch norm: its moving averages need
# more steps than that), a few seconds an epoch on 2 cores.
QUICK = ["model.filters=[8, 16]", "model.dense=[32]", "model.batch_norm=false",
         "train.batch_size=32", "train.epochs=4", "train.verbose=2"]


def sets(*extra: str) -> list:
    """``--set`` arguments for QUICK plus ``extra`` (later keys win)."""
    out = []
    for item in [*QUICK, *extra]:
        out += ["--set", item]
    return out


def cli_args(command: str, runs: Path, *extra: str, export_dest: Path | None = None) -> list:
    args = [sys.executable, "-m", "tasks.cli", command, "--config", str(DEFAULT_CONFIG), "--run", RUN,
            "--runs-dir", str(runs), *sets(*extra)]
    if export_dest is not None:
        args += ["--set", f"export.dest={export_dest}"]
    return args


def env(tf_config: str | None = None) -> dict:
    out = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out.pop("TF_CONFIG", None)
    if tf_config is not None:
        out["TF_CONFIG"] = tf_config
    return out


def start(args: list, cwd: Path, log: Path, tf_config: str | None = None) -> subprocess.Popen:
    """Start ``cnnpipe`` in the background, its output going to ``log``."""
    with open(log, "wb") as fh:
        return subprocess.Popen(args, cwd=cwd, env=env(tf_config), stdout=fh, stderr=subprocess.STDOUT)


def run(args: list, cwd: Path, log: Path, timeout: float = 240, tf_config: str | None = None) -> str:
    """Run ``cnnpipe`` to the end; fail with its output when it exits non-zero."""
    proc = start(args, cwd, log, tf_config)
    proc.wait(timeout=timeout)
    text = log.read_text(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return text


def wait_all(procs: list, logs: list, timeout: float = 240) -> None:
    try:
        for proc in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text(errors="replace")[-4000:]


def copy_prepared(prepared: Path, runs: Path) -> Path:
    """A copy of the prepared run (data/ and model/) under ``runs``; returns the run folder."""
    dest = runs / RUN
    for stage in ("data", "model"):
        shutil.copytree(prepared / stage, dest / stage)
    return dest


def free_ports(n: int) -> list:
    """``n`` TCP ports on 127.0.0.1 that were free a moment ago (bound to port 0, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cluster(ports: list, index: int) -> str:
    """TF_CONFIG of worker ``index`` in a cluster of workers on 127.0.0.1 (worker 0 is the chief)."""
    import json

    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def history(run_dir: Path) -> list:
    import csv

    with open(run_dir / "train" / "history.csv") as fh:
        return list(csv.DictReader(fh))


def prepared_run(tmp_path_factory) -> Path:
    """Ingest and build QUICK once per test session (in-process); later calls reuse the folder."""
    from conftest import invoke

    root = tmp_path_factory.getbasetemp() / "prepared-train"
    run_dir = root / RUN
    if not (run_dir / "model" / "manifest.json").is_file():
        result = invoke(["run", "--until", "build", "--config", DEFAULT_CONFIG, "--run", RUN,
                         "--runs-dir", root, *sets()])
        assert result.exit_code == 0, result.output
    return run_dir
