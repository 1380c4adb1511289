"""The ``cnnpipe`` command group. Each command lives in its own module and is imported only when called,
so ``cnnpipe --help`` is instant. Errors a user can act on print one line and exit 2 (usage) or 1 (runtime).
"""
from __future__ import annotations

import importlib
import os
import select
import sys

import click

# command name -> (module under tasks/, attribute, one-line help shown by `cnnpipe --help`)
COMMANDS = {
    "ingest": ("stages", "ingest", "Load the data source, check it, split it and write TFRecord shards."),
    "build": ("build", "build", "Build the model from model.* keys and print its summary (--show-spec)."),
    "train": ("stages", "train", "Train the model (resumes an interrupted run)."),
    "evaluate": ("stages", "evaluate", "Evaluate on the test split: metrics.json and a confusion matrix."),
    "export": ("stages", "export", "Convert to TFLite, check parity, publish exported/<run>/."),
    "run": ("stages", "run_all", "Run every stage in order (ingest, build, train, evaluate, export)."),
    "preview": ("preview", "preview", "Write a PNG grid of augmented training samples with labels."),
    "bench-data": ("bench_data", "bench_data", "Measure images per second of the input pipeline alone."),
    "predict": ("predict", "predict", "Classify images with a .tflite model (no TensorFlow needed)."),
    "bench": ("predict", "bench", "Time a .tflite model at batch 1 (no TensorFlow needed)."),
    "config": ("stages", "show_config", "Print every config key with its value, type and meaning."),
    "runs": ("runs", "runs", "List every run: model, accuracy, int8 size, arena and state."),
    "compare": ("runs", "compare", "Show two runs side by side: differing config keys and their figures."),
    "report": ("report", "report", "Write runs/<run>/report.html: one self-contained page showing the run."),
    "scenes": ("scenes", "scenes", "Write generated shapes as a yolo: (detect) or masks: (segment) dataset."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(f"tasks.{module}"), attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def make_context(self, *args, **kwargs):  # `cnnpipe --help | head`: help is written while parsing
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:
            if not _output_closed():
                raise
            sys.exit(0)

    def invoke(self, ctx):
        from pipeline.errors import PipelineError

        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            click.secho(f"error: {exc}", err=True, fg="red")
            sys.exit(exc.exit_code)
        except OSError as exc:  # a full disk, a permission problem: the environment, not a bug
            if isinstance(exc, BrokenPipeError) and _output_closed():  # `cnnpipe config | head`
                sys.exit(0)
            where = f"{exc.filename}: " if exc.filename else ""
            click.secho(f"error: {where}{exc.strerror or exc}", err=True, fg="red")
            sys.exit(1)
        except MemoryError as exc:  # e.g. a data.image_size far larger than the images need
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
            click.secho(f"error: not enough memory: {detail[:200]}; use a smaller data.image_size, "
                        "fewer filters or a smaller batch", err=True, fg="red")
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cnnpipe")
def cli():
    """cnnpipe: train a CNN on images and ship it as a quantized TFLite model.

    Stages: ingest -> build -> train -> evaluate -> export, each reading and writing files under
    runs/<run>/. Every stage takes --config FILE, --run NAME and repeatable --set section.key=value.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _output_closed() -> bool:
    """True when the reader of stdout or stderr went away (``cnnpipe config | head``): the rest of the output
    goes to /dev/null, so exiting flushes nothing into a closed pipe and prints no BrokenPipeError."""
    closed = False
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            poll = select.poll()
            poll.register(fd, select.POLLOUT)
            events = [event for _, event in poll.poll(0)]
        except (AttributeError, OSError, ValueError):  # not a real file (tests' in-memory streams)
            continue
        if any(event & (select.POLLERR | select.POLLHUP) for event in events):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            closed = True
    return closed


def main():
    from pipeline import quiet

    quiet.install()
    try:
        cli(prog_name="cnnpipe")
    except BrokenPipeError:
        if not _output_closed():
            raise
        sys.exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
