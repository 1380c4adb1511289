"""``cnnpipe scenes``: write a generated detection or segmentation dataset (shapes on textured backgrounds) as
files that ``yolo:<dir>`` or ``masks:<dir>`` read back (pipeline/scenes.py)."""
from __future__ import annotations

from pathlib import Path

import click

from tasks.common import echo


@click.command()
@click.option("--task", "task", type=click.Choice(["detect", "segment"]), required=True,
              help="detect: images/ + labels/ (YOLO boxes); segment: images/ + masks/ (class-index PNGs).")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True,
              help="Folder to create (must not exist, or be empty).")
@click.option("--n", "n", type=click.IntRange(1, 200_000), default=1200, show_default=True,
              help="Number of images.")
@click.option("--size", "size", type=click.IntRange(32, 1024), default=96, show_default=True,
              help="Image side in pixels.")
@click.option("--seed", "seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed: the same seed writes the same images.")
def scenes(task: str, out: Path, n: int, size: int, seed: int):
    """Write generated scenes (circles, squares, triangles) for detection or segmentation to a new folder."""
    from pipeline import scenes as gen
    from pipeline.errors import UsageError

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise UsageError(f"--out {out}: is {what}; choose a new folder (nothing written)")
    summary = gen.write(task, out, n, size, seed)
    source = "yolo" if task == "detect" else "masks"
    extra = (f"; {summary['without_label_file']:,} of them without a label file"
             if task == "detect" and summary["without_label_file"] else "")
    echo(f"wrote {out}: {n:,} {size}x{size} images ({task}), {summary['objects']:,} objects of "
         f"{', '.join(gen.class_names('detect'))}; {summary['background']:,} background-only images{extra}")
    echo(f"classes: {', '.join(summary['classes'])} (classes.txt)")
    echo(f"use it with: --set data.source={source}:{out}")
