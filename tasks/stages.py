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


def _suit_output(ctx: Context) -> None:
    """A live progress bar per batch on a terminal; one line per epoch when output goes to a file."""
    from tasks.progress import is_terminal

    if ctx.cfg.train.verbose == 1 and not is_terminal():
        ctx.cfg.train.verbose = 2


def run_stage(ctx: Context, stage: str, force: bool = False):
    from pipeline import stages

    echo(click.style(f"[{stage}]", bold=True) + f" run {ctx.run} -> {ctx.run_dir / stages.DIRS[stage]}")
    start = time.time()
    result = stages.STAGES[stage](ctx.cfg, ctx.run_dir, force=force)
    if result.skipped:
        echo(f"  up to date: inputs and config unchanged, skipped ({time.time() - start:.1f} s)")
    else:
        if result.reason:
            echo(f"  ran because: {result.reason}")
        echo(_table(result))
        _notes(stage, result)
    return result


def _notes(stage: str, result) -> None:
    """Stage-specific lines worth a person's attention (preflight table, export report)."""
    if stage == "ingest":
        from pipeline import artifacts, preflight

        report = artifacts.read_json(result.out_dir / "preflight.json")
        echo(preflight.table(report))
    if stage == "train" and (result.out_dir / "training_curves.png").is_file():
        echo(f"  curves: {result.out_dir / 'training_curves.png'}")
    if stage == "export":
        echo(f"  parity report: {result.summary['published']}/report.md")


def _chief_only(ctx: Context, stage: str) -> bool:
    """Multi-worker: only the chief evaluates and exports; say so on the other workers."""
    from pipeline import strategy

    if stage in ("evaluate", "export") and not strategy.is_chief(ctx.cfg.train):
        echo(f"[{stage}] skipped on this worker: in multi-worker training only the chief evaluates and "
             "exports")
        return False
    return True


def locked(ctx: Context):
    """The run's lock for this command; a multi-worker task that is not the chief writes nothing, takes
    none."""
    import contextlib

    from pipeline import lock, strategy

    if not strategy.is_chief(ctx.cfg.train):
        return contextlib.nullcontext()
    return lock.hold(ctx.run_dir)


def _stage_command(stage: str, doc: str):
    """The command of one stage: the shared options, the run's lock, then the stage (the strategy first for
    train)."""
    @click.command(stage, help=doc)
    @stage_options
    @FORCE
    def command(ctx: Context, force: bool):
        if not _chief_only(ctx, stage):
            return
        from pipeline import stages as graph

        with locked(ctx):
            if stage == "train":  # devices are set up before TensorFlow starts, and only when it will
                graph.require_upstream(ctx.cfg, ctx.run_dir, stage)
                if force or not graph.status(ctx.cfg, ctx.run_dir, stage).fresh:
                    _suit_output(ctx)
                    prepare_training(ctx)
            run_stage(ctx, stage, force)
    return command


ingest = _stage_command(
    "ingest", "Load data.source, run preflight checks, split (stratified, seeded) and write TFRecord shards.")
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
    """Run the stages in order: ingest, build, train, evaluate, export (up to --until).

    Stages that are up to date are skipped; when every stage is, TensorFlow is never started."""
    from pipeline import stages as graph

    start = time.time()
    stages = graph.ORDER[:graph.ORDER.index(until) + 1]
    with locked(ctx):
        if "train" in stages and (force or not all(
                graph.status(ctx.cfg, ctx.run_dir, s).fresh for s in stages[:stages.index("train") + 1])):
            _suit_output(ctx)
            prepare_training(ctx)
        for stage in stages:
            if not _chief_only(ctx, stage):
                break
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
