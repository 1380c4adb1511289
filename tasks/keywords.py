"""``python -m tasks.keywords OUT``: write a spoken-keyword dataset made offline with espeak-ng
(:mod:`pipeline.keywords`): ``OUT/<class>/<nnnnn>.wav``, 1 s at 16 kHz, for ``audio:OUT``."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-class", type=click.IntRange(min=1), default=300, show_default=True,
              help="Clips of each keyword (and of _unknown_ and _silence_).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every choice.")
def main(out, per_class, seed):
    """Speak yes, no, up, down, left, right, on, off, stop, go and other words in many voices, speeds and
    pitches, with reverb and background noise, into OUT/<class>/*.wav (existing class folders replaced)."""
    from pipeline import keywords
    from pipeline.errors import PipelineError
    from tasks import progress

    progress.install()
    start = time.perf_counter()
    try:
        counts = keywords.generate(out, per_class, seed)
    except PipelineError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    total = sum(counts.values())
    click.echo(f"{total:,} clips in {len(counts)} classes under {out} ({time.perf_counter() - start:.0f} s); "
               f"train with data.source: audio:{out}")


if __name__ == "__main__":
    main()
