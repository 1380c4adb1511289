"""One command at a time per run: an advisory lock on ``runs/<run>/.lock``.

The lock is an ``fcntl.flock`` on the file, so the kernel releases it when its holder exits, however it exits
(a SIGKILL included): a lock file left by a killed process is simply taken over. The file records who holds it
(pid, host, command, start time), so a second command on the same run stops with one line naming the holder.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError

LOCK = ".lock"


class RunLocked(PipelineError):
    """Another process works on the same run."""


def _holder(fh) -> dict:
    fh.seek(0)
    try:
        return json.loads(fh.read() or "{}")
    except ValueError:
        return {}


def describe(holder: dict) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(holder["started"])) if "started" in holder else "?"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
            f"(`{holder.get('command', '?')}`, since {since})")


@contextlib.contextmanager
def hold(run_dir: Path, command: str | None = None) -> Iterator[Path]:
    """Hold the run's lock for the duration of the block; raise :class:`RunLocked` when another
    process has it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fh = os.fdopen(fd, "r+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"run {run_dir.name} is busy: {describe(_holder(fh))} is working on it; "
                            f"wait for it to finish or stop it, then run again") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "command": command or " ".join(["cnnpipe", *sys.argv[1:]]),
                             "started": time.time()}))
        fh.flush()
        yield path
    finally:
        fh.close()  # closing the descriptor releases the flock
