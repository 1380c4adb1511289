"""How progress looks: a live bar with rate and ETA on a terminal (tqdm), plain periodic lines otherwise,
never control codes in a file. Also the one-line messages the library logs (``resuming from epoch N``)."""
from __future__ import annotations

import logging
import sys
import time

import click


class Lines:
    """Plain lines for a log file: one every ``every`` seconds and one at the end."""

    def __init__(self, total: int, description: str, unit: str, every: float = 15.0):
        self.total, self.description, self.unit, self.every = max(1, int(total)), description, unit, every
        self.done, self.start, self.last = 0, time.time(), time.time()

    def _line(self) -> str:
        elapsed = max(time.time() - self.start, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0
        return (f"  {self.description}: {self.done:,}/{self.total:,} {self.unit} "
                f"({100 * self.done / self.total:.0f}%), {rate:,.0f} {self.unit}/s, "
                + (f"ETA {eta:.0f} s" if self.done < self.total else f"{elapsed:.1f} s"))

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.time() - self.last >= self.every and self.done < self.total:
            self.last = time.time()
            click.echo(self._line())

    def close(self) -> None:
        click.echo(self._line())


def _bar(total: int, description: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"  {description}", unit=unit, unit_scale=True, leave=False,
                file=sys.stderr, dynamic_ncols=True)


def is_terminal() -> bool:
    return sys.stdout.isatty() and sys.stderr.isatty()


def install() -> None:
    """Show the library's progress and messages on this command's output."""
    from pipeline import progress

    progress.set_reporter(_bar if is_terminal() else Lines)
    logger = logging.getLogger("cnnpipe")
    if not any(getattr(h, "_cnnpipe", False) for h in logger.handlers):
        handler = _EchoHandler()
        handler._cnnpipe = True
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


class _EchoHandler(logging.Handler):
    def emit(self, record):
        click.echo(f"  {record.getMessage()}")
