"""``cnnpipe build``: the untrained model, its summary table (shapes, parameters, MACs, receptive field,
int8 size and memory estimates) and the device budget; ``--show-spec`` prints the resolved layer spec."""
from __future__ import annotations

import click

from tasks.common import Context, echo, stage_options
from tasks.stages import FORCE


def _input_shape(ctx: Context) -> tuple:
    """The model's input: the ingested data's shape, else data.image_size and data.channels."""
    from pipeline import artifacts
    from pipeline.errors import UsageError

    classes = ctx.run_dir / "data" / "classes.json"
    if classes.is_file():
        return tuple(artifacts.read_json(classes)["image_shape"])
    if ctx.cfg.data.image_size:
        return (*ctx.cfg.data.image_size, ctx.cfg.data.channels)
    raise UsageError(f"{classes}: not found; run `cnnpipe ingest` first or set data.image_size, so the "
                     f"spec can be resolved for the input")


def show_spec(ctx: Context) -> str:
    """``model:\\n  layers: ...`` as YAML, checked against the input shape."""
    import yaml

    from pipeline import models
    from pipeline.errors import ConfigError

    if models.is_transfer(ctx.cfg.model):
        raise ConfigError("--show-spec: a transfer model (model.base_model / model.backbone) "
                          "has no layer spec")
    shape = _input_shape(ctx)
    blocks = models.resolved_spec(ctx.cfg.model, shape)
    models.plan(ctx.cfg.model, shape, 2)  # the same checks as build: shapes, kernels, residual joins
    text = yaml.safe_dump({"model": {"layers": models.spec.to_yaml_blocks(blocks)}}, sort_keys=False,
                          default_flow_style=None, width=110)
    source = "model.layers" if ctx.cfg.model.layers else f"preset {ctx.cfg.model.preset}"
    return f"# {source} resolved for input {'x'.join(map(str, shape))}; the class layer is appended\n{text}"


@click.command("build", help="Build the untrained Keras model from the model.* keys (writes "
                             "model/model.keras, summary.json) and print its summary: output shape, "
                             "parameters, MACs and receptive field of each layer, estimated int8 size and "
                             "memory, checked against model.budget.")
@stage_options
@FORCE
@click.option("--show-spec", "spec_only", is_flag=True,
              help="Print the resolved layer spec as YAML (paste it into model.layers) and exit.")
def build(ctx: Context, force: bool, spec_only: bool):
    from pipeline import artifacts
    from pipeline import build as build_mod
    from pipeline.models import summary
    from tasks.stages import locked, run_stage

    if spec_only:
        echo(show_spec(ctx), nl=False)
        return
    data_dir = ctx.run_dir / "data"
    with locked(ctx):
        if (data_dir / "classes.json").is_file():
            build_mod.check(ctx.cfg, data_dir)  # refuse a bad spec or budget before the stage writes anything
        result = run_stage(ctx, "build", force)
    path = result.out_dir / "summary.json"
    if path.is_file():
        echo(summary.table(artifacts.read_json(path)))
