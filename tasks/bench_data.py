"""``cnnpipe bench-data``: images per second of the training input pipeline alone, and (for comparison) of
training steps fed from memory, so the two can be compared: the input pipeline should be the faster one."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import click

from tasks.common import Context, echo, stage_options

# TensorFlow's CPU settings read from the environment at start-up, recorded with the figures when set
TF_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_ENABLE_ONEDNN_OPTS")


def time_pipeline(ds, epochs: int) -> dict:
    """Iterate one warm-up epoch (fills the cache, traces the map functions), then ``epochs`` timed ones."""
    def one_epoch():
        start, n = time.perf_counter(), 0
        for images, _ in ds:
            n += int(images.shape[0])
        return n, time.perf_counter() - start

    images, warmup = one_epoch()
    seconds = [one_epoch()[1] for _ in range(epochs)]
    return {"images_per_epoch": images, "warmup_seconds": round(warmup, 3),
            "epoch_seconds": [round(s, 3) for s in seconds],
            "images_per_second": round(images * epochs / max(sum(seconds), 1e-9), 1)}


def time_training(cfg, meta: dict, batch, steps: int, warmup: int = 5, jit_compile: bool = False) -> dict:
    """Training images per second on one real batch held in memory: what the model consumes, input excluded.

    One ``fit`` of ``warmup + steps`` steps; the clock starts after the warm-up steps (tracing, first-step
    allocations; XLA's compilation with ``jit_compile``) and stops after the last step. The model computes in
    the dtype policy ``train.mixed_precision`` gives training on this machine.
    """
    import keras
    import tensorflow as tf

    from pipeline import heads, models, strategy, train

    policy = strategy.precision(cfg.train)
    with strategy.dtype_policy(policy):  # as `cnnpipe train` builds it
        model = models.build(cfg.model, meta["image_shape"], len(meta["class_names"]),
                             stride=cfg.detect.stride, boxes=cfg.detect.boxes)
    batch_size = int(batch[0].shape[0])
    train.compile_model(model, dataclasses.replace(cfg.train, batch_size=batch_size), warmup + steps,
                        heads.loss(cfg, meta))
    model.jit_compile = jit_compile
    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (warmup, warmup + steps):
                marks[batch + 1] = time.perf_counter()

    ds = tf.data.Dataset.from_tensors(batch).cache().repeat(warmup + steps)
    model.fit(ds, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()])
    seconds = marks[warmup + steps] - marks[warmup]
    return {"steps": steps, "jit_compile": jit_compile, "precision": policy, "seconds": round(seconds, 3),
            "images_per_second": round(steps * batch_size / max(seconds, 1e-9), 1)}


@click.command()
@stage_options
@click.option("--epochs", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Timed epochs, after one warm-up epoch that fills the cache.")
@click.option("--batch-size", type=click.IntRange(1, 65536), default=None,
              help="Batch size (default: train.batch_size).")
@click.option("--train-steps", type=click.IntRange(0, 100000), default=30, show_default=True,
              help="Also time this many training steps of the configured model (0 skips it).")
@click.option("--jit-compile", is_flag=True,
              help="Time training steps compiled by XLA (jit_compile=True) instead of TensorFlow's kernels.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures as JSON to this file.")
def bench_data(ctx: Context, epochs: int, batch_size: int | None, train_steps: int, jit_compile: bool,
               json_out: Path | None):
    """Measure images/second of the training input pipeline (read, cache, shuffle, batch, augment)."""
    from pipeline import artifacts, data, heads, input_pipeline, models, train

    cfg, data_dir = ctx.cfg, ctx.stage_dir("data")
    meta = data.read_meta(data_dir)
    batch_size = batch_size or cfg.train.batch_size
    augment_fn = train.augmentation(cfg, meta)
    ops = augment_fn.ops if augment_fn is not None else []
    cache = input_pipeline.cache_mode(meta, cfg.train.cache)
    echo(f"input pipeline: {meta['counts']['train']:,} training images, batch {batch_size}, "
         f"augmentation: {', '.join(ops) or 'off'}, cache: {cache}, {epochs} timed epoch(s) after 1 warm-up")
    ds = input_pipeline.train_dataset(data_dir, meta, batch_size, cfg.train.seed, augment_fn,
                                      cache=cfg.train.cache, encode_fn=heads.encode_fn(cfg, meta))
    result = {"run": ctx.run, "batch_size": batch_size, "augmentation": ops, "cache": cache,
              "cpu_count": os.cpu_count(), "env": {k: os.environ[k] for k in TF_ENV if k in os.environ},
              "pipeline": time_pipeline(ds, epochs)}
    pipe = result["pipeline"]
    echo(f"  pipeline: {pipe['images_per_second']:>12,.0f} images/s  (epochs {pipe['epoch_seconds']} s, "
         f"warm-up {pipe['warmup_seconds']} s)")
    if train_steps:
        result["training"] = time_training(cfg, meta, next(iter(ds)), train_steps, jit_compile=jit_compile)
        rate = result["training"]["images_per_second"]
        result["ratio"] = round(pipe["images_per_second"] / max(rate, 1e-9), 2)
        echo(f"  training: {rate:>12,.0f} images/s  ({train_steps} steps of {models.spec_name(cfg.model)}"
             f"{', XLA' if jit_compile else ''}, {result['training']['precision']}, input excluded)")
        echo(f"  the input pipeline is {result['ratio']}x as fast as training consumes "
             f"({'ok' if result['ratio'] >= 1 else 'the pipeline is the bottleneck'})")
    epoch_time = meta["counts"]["train"] / max(pipe["images_per_second"], 1e-9)
    result["pipeline_seconds_per_epoch"] = round(epoch_time, 2)
    if json_out:
        artifacts.write_json(json_out, result)
        echo(f"wrote {json_out}")
