"""Compile and fit: Adam (AdamW with weight decay) or SGD with Nesterov momentum on a warm-up + cosine
schedule (:mod:`pipeline.schedules`: over the epochs that fit ``train.time_budget_s`` when set), early
stopping on validation loss with the best weights kept, ``history.csv``, TensorBoard logs and a line per
epoch.

A transfer model (a frozen base under a new class layer) trains in two phases: the head for
``train.epochs``, then, when ``train.finetune_epochs`` > 0, the base unfrozen from ``model.unfreeze_from``
(batch norm stays frozen) at ``train.finetune_lr``. Each phase checkpoints its own state (``checkpoint/`` and
``checkpoint/finetune/``), so a kill in either phase resumes where it stopped.

Training resumes from the last completed epoch after a kill (:mod:`pipeline.resume`), runs under the
``tf.distribute`` strategy that ``train.strategy`` picks (:mod:`pipeline.strategy`) with ``train.batch_size``
as the global batch, in ``mixed_float16`` where configured; the saved ``model.keras`` is always float32.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

from pipeline import artifacts, data, input_pipeline, schedules
from pipeline.errors import PipelineError
from pipeline.schedules import learning_rate


def optimizer(train_cfg, steps_per_epoch: int, schedule=None):
    """The configured optimizer on ``schedule`` (default: :func:`pipeline.schedules.learning_rate`)."""
    import keras

    lr = learning_rate(train_cfg, steps_per_epoch) if schedule is None else schedule
    if train_cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=train_cfg.momentum, nesterov=train_cfg.momentum > 0,
                                    weight_decay=train_cfg.weight_decay or None)
    if train_cfg.weight_decay > 0:
        return keras.optimizers.AdamW(lr, weight_decay=train_cfg.weight_decay)
    return keras.optimizers.Adam(lr)


def compile_model(model, train_cfg, steps_per_epoch: int, loss=None, schedule=None):
    """Compile with the task's loss (:func:`pipeline.heads.loss`; a classifier's cross-entropy by default)
    and accuracy: of labels, of detection cells, of segmentation pixels. Stride-1 convolutions get the
    gradients ``train.conv_backprop`` picks (:mod:`pipeline.conv_grad`)."""
    import keras

    from pipeline import conv_grad

    conv_grad.install(model, conv_grad.resolve(train_cfg), train_cfg.batch_size)
    if loss is None:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg.label_smoothing)
    model.compile(optimizer=optimizer(train_cfg, steps_per_epoch, schedule), loss=loss, metrics=["accuracy"])
    return model


def augmentation(cfg, meta: dict):
    """The training augmentation for the data's task (None when every op is off): a classifier's
    (:mod:`pipeline.augment`), or the one that moves objects and masks with the pixels
    (:mod:`pipeline.augment_targets`)."""
    from pipeline import augment, augment_targets

    task = data.task(meta)
    if task == "classify":
        return augment.build(cfg.augment, len(meta["class_names"]), cfg.train.seed)
    return augment_targets.build(cfg.augment, task, cfg.train.seed)


def datasets(data_dir: Path, meta: dict, cfg, strategy=None):
    """(train, val) tf.data pipelines, the training one augmented as configured, sharded across workers."""
    import tensorflow as tf

    from pipeline import heads
    from pipeline import strategy as strategies

    augment_fn = augmentation(cfg, meta)
    encode = heads.encode_fn(cfg, meta)
    batch = cfg.train.batch_size
    train_ds = input_pipeline.train_dataset(data_dir, meta, batch, cfg.train.seed, augment_fn,
                                            cache=cfg.train.cache, encode_fn=encode)
    val_ds = input_pipeline.eval_dataset(data_dir, meta, "val", batch, cache=cfg.train.cache,
                                         encode_fn=encode)
    # TFRecord pipelines have an unknown length, on which Keras steps the optimizer's iteration count (the
    # schedule's clock) once more per epoch than it trains; state the number of batches
    batches = {name: math.ceil(meta["counts"][name] / batch) for name in ("train", "val")}
    train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(batches["train"]))
    val_ds = val_ds.apply(tf.data.experimental.assert_cardinality(batches["val"]))
    if strategy is not None:
        train_ds, val_ds = strategies.shard(train_ds, strategy), strategies.shard(val_ds, strategy)
    return train_ds, val_ds


def callbacks(out_dir: Path, train_cfg, checkpoint, state, best_weights, replan=None) -> list:
    """Early stopping and the per-epoch checkpoint (both resumable; ``replan`` re-plans a time-budget
    schedule after each epoch), then TensorBoard."""
    import keras

    from pipeline import resume

    return resume.callbacks(checkpoint, state, out_dir / "history.csv", train_cfg, best_weights, replan) + [
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard"), histogram_freq=0,
                                    write_graph=False, profile_batch=0),
    ]


def save_model(model, path: Path) -> Path:
    """Save a ``.keras`` file atomically."""
    with artifacts.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def default_resume_key(model_path: Path, data_dir: Path, cfg) -> str:
    """What a checkpoint must match to be resumed: the train stage's fingerprint (inputs + config)."""
    from pipeline import stages

    return artifacts.fingerprint(*stages.train_inputs(cfg, Path(data_dir).parent))


def discard_checkpoint(out_dir: Path) -> None:
    """Remove the resume state once the stage's manifest says the run is complete."""
    from pipeline import resume

    resume.Checkpoint(Path(out_dir) / "checkpoint", "").clear()


def training_model(model_path: Path, meta: dict, cfg, policy: str, runs_root: Path | str = "runs"):
    """The model to train: the built float32 model, or the same architecture rebuilt under the mixed
    policy (the softmax stays float32) with the built model's weights copied in."""
    from pipeline import models, strategy

    built = models.load(model_path, compile=False)
    if policy == "float32":
        return built
    with strategy.dtype_policy(policy):
        model = models.build(cfg.model, meta["image_shape"], len(meta["class_names"]), runs_root,
                             cfg.detect.stride, cfg.detect.boxes)
    try:
        model.set_weights(built.get_weights())
    except ValueError:
        raise PipelineError(f"{model_path}: does not match the model.* config; run `cnnpipe build`") from None
    return model


def float32_copy(model, model_path: Path):
    """The trained weights in a fresh float32 model outside any strategy: what export expects."""
    from pipeline import models

    final = models.load(model_path, compile=False)
    final.set_weights(model.get_weights())
    return final


def fit(model_path: Path, data_dir: Path, cfg, out_dir: Path, resume_key: str | None = None,
        resume_dir: Path | None = None) -> dict:
    """Train the model stored at ``model_path``; write ``model.keras`` and ``history.csv`` to ``out_dir``.

    Continues from ``<resume_dir or out_dir>/checkpoint`` when it holds a checkpoint of the same run
    (``resume_key``, default: the train stage's fingerprint). Returns the stage summary, with the manifest
    additions (seeds, strategy, devices, precision) under the key ``manifest``.
    """
    import keras

    from pipeline import conv_grad, resume
    from pipeline import strategy as strategies

    tc, out_dir = cfg.train, Path(out_dir)
    strategies.configure(tc)  # devices, seeds, determinism: before TensorFlow runs an op here
    strategy = strategies.make(tc)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.tmp*"):  # left by a write that was killed half-way
        stale.unlink()
    meta = data.read_meta(data_dir)
    policy = strategies.precision(tc)
    key = f"{resume_key or default_resume_key(model_path, data_dir, cfg)}/{policy}"
    ckpt = resume.Checkpoint(Path(resume_dir or out_dir) / "checkpoint", key, out_dir / "checkpoint")
    state = resume_state(ckpt, strategy)
    resumed_from = state.epoch if state else None
    with strategy.scope():
        steps = math.ceil(meta["counts"]["train"] / tc.batch_size)
        from pipeline import heads

        schedule = learning_rate(tc, steps, budget=True)
        model = compile_model(training_model(model_path, meta, cfg, policy, Path(data_dir).parent.parent), tc,
                              steps, heads.loss(cfg, meta), schedule)
        if state is not None:
            ckpt.restore(model, state)
    state = state or resume.State(key)
    replan = None
    if schedules.budgeted(tc):  # the cosine spans the epochs that fit train.time_budget_s
        replan = functools.partial(schedules.replan, schedule, train_cfg=tc, steps_per_epoch=steps)
        replan(state.history)  # a resumed run continues its plan
    best = ckpt.best_weights(state)
    keras.utils.set_random_seed(tc.seed)  # again: rebuilding a mixed-precision model reseeds
    train_ds = val_ds = None
    if not state.finished(tc.epochs):
        train_ds, val_ds = datasets(data_dir, meta, cfg, strategy)
        strategies.local_symbolic_build(model, strategy)
        model.fit(train_ds, validation_data=val_ds, epochs=tc.epochs, initial_epoch=state.epoch,
                  callbacks=callbacks(out_dir, tc, ckpt, state, best, replan), verbose=tc.verbose,
                  shuffle=False)
    elif best is not None:
        model.set_weights(best)  # it had finished before the kill: what early stopping restores at the end
    finetune = None
    if tc.finetune_epochs > 0 and _frozen_base(model):
        head_epochs = len(state.history)
        state, resumed_ft = finetune_phase(model, ckpt, state, steps, strategy, cfg, out_dir,
                                           lambda: (train_ds, val_ds) if train_ds is not None
                                           else datasets(data_dir, meta, cfg, strategy))
        finetune = {"head_epochs": head_epochs, "finetune_epochs": len(state.history) - head_epochs,
                    "unfreeze_from": cfg.model.unfreeze_from or 0}
        resumed_from = resumed_from if resumed_ft is None else resumed_ft
    save_model(float32_copy(model, model_path), out_dir / "model.keras")
    resume.write_history(out_dir / "history.csv", state.history)
    summary = summarize(state, resumed_from, strategy, cfg, conv_grad.installed(model))
    if finetune is not None:
        summary["transfer"] = finetune
        summary["manifest"]["transfer"] = finetune
    return summary


def _frozen_base(model) -> bool:
    from pipeline.models import transfer

    return transfer.frozen_base(model) is not None


def finetune_phase(model, head_ckpt, head_state, steps: int, strategy, cfg, out_dir: Path, make_datasets):
    """Fine-tune the base from ``model.unfreeze_from`` for ``train.finetune_epochs`` epochs at
    ``train.finetune_lr``, after the head's epochs; returns (the combined state, the epoch it resumed from or
    None). Its checkpoint lives in ``checkpoint/finetune/`` with the head's key, so a kill resumes here."""
    import dataclasses

    import keras

    from pipeline import resume
    from pipeline.models import transfer

    tc = cfg.train
    ft = dataclasses.replace(tc, learning_rate=tc.finetune_lr, epochs=tc.finetune_epochs, warmup_epochs=0)
    key = f"{head_ckpt.key}/finetune"
    ckpt = resume.Checkpoint(head_ckpt.read_dir / "finetune", key, head_ckpt.write_dir / "finetune")
    state = resume_state(ckpt, strategy)
    resumed_from = state.epoch if state else None
    with strategy.scope():
        transfer.unfreeze(model, cfg.model.unfreeze_from)
        compile_model(model, ft, steps)
        if state is not None:
            ckpt.restore(model, state)
    start = len(head_state.history)
    state = state or resume.State(key, epoch=start, history=list(head_state.history))
    best = ckpt.best_weights(state)
    keras.utils.set_random_seed(tc.seed + 1)
    total = start + tc.finetune_epochs
    if not state.finished(total):
        train_ds, val_ds = make_datasets()
        model.fit(train_ds, validation_data=val_ds, epochs=total, initial_epoch=state.epoch,
                  callbacks=callbacks(out_dir, ft, ckpt, state, best), verbose=tc.verbose, shuffle=False)
    elif best is not None:
        model.set_weights(best)
    return state, resumed_from


def resume_state(ckpt, strategy):
    """The checkpoint state to continue from, or None (and any checkpoint of another run is removed).

    Multi-worker: every worker must continue from the same epoch; when one of them has no copy of the
    chief's checkpoint (no shared storage), all of them start afresh."""
    from pipeline import strategy as strategies

    state = ckpt.load()
    if not strategies.same_on_all_workers(strategy, state.epoch if state else -1):
        state = None
    if state is None:
        ckpt.clear()
    return state


def summarize(state, resumed_from, strategy, cfg, conv_backprop: dict) -> dict:
    from pipeline import strategy as strategies

    hist = state.history
    best = min(range(len(hist)), key=lambda i: hist[i]["val_loss"])
    where = strategies.describe(strategy, cfg.train)
    summary = {"epochs_run": len(hist), "best_epoch": best + 1,
               "best_val_loss": float(hist[best]["val_loss"]),
               "best_val_accuracy": float(hist[best]["val_accuracy"]),
               "strategy": f"{where['strategy']}, {where['replicas']} replica(s), {where['precision']}"}
    if resumed_from is not None:
        summary["resumed_from_epoch"] = resumed_from
    summary["manifest"] = {
        "seeds": {"data": cfg.data.seed, "model": cfg.model.seed, "train": cfg.train.seed},
        "deterministic": cfg.train.deterministic, "distribution": where, "resumed_from_epoch": resumed_from,
        "conv_backprop": {"setting": cfg.train.conv_backprop, **conv_backprop}}
    return summary
