"""The stage commands: ingest, build, train, evaluate, export, run (all of them) and config."""
from __future__ import annotations

import time

import click

from tasks.common import Context, echo, stage_options

FORCE = click.option("--force", is_flag=True, help="Run even when the stage is up to date.")


def _table(result) -> str:
    """The end-of-stage table: what was made, where, how long, how big."""
    from pipeline.artifacts import human_bytes

    m = result.manifest
    rows = [(out["path"], human_bytes(out["bytes"])) for out in m.get("outputs", [])]
    width = max([len(p) for p, _ in rows] + [10])
    lines = [f"  {p:<{width}}  {s:>10}" for p, s in rows]
    for key, value in result.summary.items():
        lines.append(f"  {key}: {value}")
    lines.append(f"  wall time: {m.get('wall_time_s', 0):.1f} s")
    return "\n".join(lines)


def prepare_training(ctx: Context) -> None:
    """Set up devices and the distribution strategy before any stage starts TensorFlow (the CPU split and
    MultiWorkerMirroredStrategy can only be configured then)."""
    from pipeline import strategy

    strategy.prepare(ctx.cfg.train)


def run_stage(ctx: Context, stage: str, force: bool = False):
    from pipeline import stages

    echo(click.style(f"[{stage}]", bold=True) + f" run {ctx.run} -> {ctx.run_dir / stages.DIRS[stage]}")
    start = time.time()
    result = stages.STAGES[stage](ctx.cfg, ctx.run_dir, force=force)
    if result.skipped:
        echo(f"  up to date: inputs and config unchanged, skipped ({time.time() - start:.1f} s)")
    else:
        echo(_table(result))
        _notes(stage, result)
    return result


def _notes(stage: str, result) -> None:
    """Stage-specific lines worth a person's attention (preflight table, export report)."""
    if stage == "ingest":
        from pipeline import artifacts, preflight

        report = artifacts.read_json(result.out_dir / "preflight.json")
        echo(preflight.table(report))
    if stage == "export":
        echo(f"  parity report: {result.summary['published']}/report.md")


def _stage_command(stage: str, doc: str):
    """The command of one stage: the shared options, then the stage (the strategy first for train)."""
    @click.command(stage, help=doc)
    @stage_options
    @FORCE
    def command(ctx: Context, force: bool):
        if stage == "train":
            prepare_training(ctx)
        run_stage(ctx, stage, force)
    return command


ingest = _stage_command(
    "ingest", "Load data.source, run preflight checks, split (stratified, seeded) and write TFRecord shards.")
build = _stage_command("build", "Build the untrained Keras model from the model.* keys (writes model/model.keras).")
train = _stage_command(
    "train", "Train the model: Adam, LR schedule, early stopping, history.csv, TensorBoard logs.\n\n"
             "An interrupted run (killed at any moment) continues from its last completed epoch.")
evaluate = _stage_command("evaluate", "Evaluate on the test split: metrics.json and confusion_matrix.png.")
export = _stage_command(
    "export", "Convert to TFLite (export.formats), check parity with LiteRT, publish exported/<run>/.")


@click.command("run")
@stage_options
@FORCE
@click.option("--until", type=click.Choice(["ingest", "build", "train", "evaluate", "export"]),
              default="export", show_default=True, help="Last stage to run.")
def run_all(ctx: Context, force: bool, until: str):
    """Run the stages in order: ingest, build, train, evaluate, export (up to --until)."""
    from pipeline.stages import ORDER

    start = time.time()
    stages = ORDER[:ORDER.index(until) + 1]
    if "train" in stages:
        prepare_training(ctx)
    for stage in stages:
        run_stage(ctx, stage, force)
    echo(f"done: run {ctx.run} in {time.time() - start:.1f} s")


@click.command("config")
@stage_options
def show_config(ctx: Context):
    """Print every config key: its resolved value and what it means."""
    from pipeline.config import describe

    for key, type_name, default, help_ in describe():
        section, name = key.split(".")
        value = getattr(getattr(ctx.cfg, section), name)
        echo(f"{key:<30} = {value!r:<24} ({type_name}) {help_}")
