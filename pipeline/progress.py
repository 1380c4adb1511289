"""Progress of long steps behind one seam: the library says how far it is, the command decides how that
looks (a live bar on a terminal, plain periodic lines in a log file). Without a reporter nothing is shown.

    with progress.track(len(files), "ingest", unit="img") as advance:
        for ...:
            advance(1)
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

_factory: Callable | None = None   # (total, description, unit) -> object with update(n) and close()


def set_reporter(factory: Callable | None) -> None:
    global _factory
    _factory = factory


@contextlib.contextmanager
def track(total: int, description: str, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; the installed reporter shows it, and is closed when the block ends."""
    reporter = _factory(total, description, unit) if _factory is not None else None
    try:
        yield (reporter.update if reporter is not None else (lambda n=1: None))
    finally:
        if reporter is not None:
            reporter.close()
