"""``cnnpipe runs`` (every run as a table) and ``cnnpipe compare A B`` (two runs side by side)."""
from __future__ import annotations

from pathlib import Path

import click

RUNS_DIR = click.option("--runs-dir", "runs_dir", type=click.Path(file_okay=False, path_type=Path),
                        default=Path("runs"), show_default=True, help="Folder holding the run folders.")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value <= 1.0:
        return f"{100 * value:.2f}%"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _print(table) -> None:
    from rich.console import Console

    Console(width=200 if not click.get_text_stream("stdout").isatty() else None).print(table)


@click.command("runs")
@RUNS_DIR
@click.option("--sort", type=click.Choice(["run", "source", "preset", "params", "float_acc", "int8_acc",
                                           "int8_bytes", "arena_bytes", "wall_s", "state"]),
              default="run", show_default=True, help="Column to sort by.")
@click.option("--reverse", is_flag=True, help="Sort in descending order.")
def runs(runs_dir: Path, sort: str, reverse: bool):
    """List every run under runs/: source, model, accuracy, int8 size, arena, wall time and state
    (complete, partial, stale or interrupted)."""
    from rich.table import Table

    from pipeline import runs as runs_mod

    rows = runs_mod.table(runs_dir, sort, reverse)
    if not rows:
        click.echo(f"no runs under {runs_dir}")
        return
    table = Table(title=f"runs in {runs_dir} (sorted by {sort}{', descending' if reverse else ''})")
    for column in runs_mod.COLUMNS:
        table.add_column(column,
                         justify="left" if column in ("run", "source", "preset", "state") else "right")
    for row in rows:
        cells = [_fmt(row[c]) for c in runs_mod.COLUMNS]
        if row["why"]:
            cells[-1] += f" ({row['why']})"
        table.add_row(*cells)
    _print(table)


@click.command("compare")
@RUNS_DIR
@click.argument("a")
@click.argument("b")
def compare(runs_dir: Path, a: str, b: str):
    """Show two runs side by side: the config keys that differ, then their figures."""
    from rich.table import Table

    from pipeline import runs as runs_mod
    from pipeline.errors import UsageError

    for name in (a, b):
        if not (runs_dir / name).is_dir():
            raise UsageError(f"{runs_dir / name}: no such run (see `cnnpipe runs`)")
    result = runs_mod.compare(runs_dir / a, runs_dir / b)
    config = Table(title="config keys that differ")
    for column in ("key", a, b):
        config.add_column(column)
    for key, va, vb in result["config"]:
        config.add_row(key, _fmt(va), _fmt(vb))
    if not result["config"]:
        config.add_row("(none)", "", "")
    figures = Table(title="figures")
    for column in ("figure", a, b):
        figures.add_column(column, justify="right")
    for name, va, vb in result["figures"]:
        figures.add_row(name, _fmt(va), _fmt(vb))
    _print(config)
    _print(figures)
