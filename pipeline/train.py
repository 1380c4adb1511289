"""Compile and fit: Adam (AdamW with weight decay) on a warm-up + cosine schedule, early stopping on
validation loss with the best weights kept, ``history.csv``, TensorBoard logs and a line per epoch.
"""
from __future__ import annotations

import math
from pathlib import Path

from pipeline import artifacts, data


def learning_rate(train_cfg, steps_per_epoch: int):
    """A float for ``constant``; a Keras schedule (linear warm-up, then cosine decay) for ``cosine``."""
    import keras

    if train_cfg.schedule == "constant":
        return train_cfg.learning_rate
    warmup = train_cfg.warmup_epochs * steps_per_epoch
    decay = max(1, train_cfg.epochs * steps_per_epoch - warmup)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(train_cfg.learning_rate, decay, alpha=0.01)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay, alpha=0.01, warmup_target=train_cfg.learning_rate, warmup_steps=warmup)


def optimizer(train_cfg, steps_per_epoch: int):
    import keras

    lr = learning_rate(train_cfg, steps_per_epoch)
    if train_cfg.weight_decay > 0:
        return keras.optimizers.AdamW(lr, weight_decay=train_cfg.weight_decay)
    return keras.optimizers.Adam(lr)


def compile_model(model, train_cfg, steps_per_epoch: int):
    import keras

    model.compile(optimizer=optimizer(train_cfg, steps_per_epoch),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg.label_smoothing),
                  metrics=["accuracy"])
    return model


def datasets(data_dir: Path, meta: dict, cfg):
    """(train, val) tf.data pipelines, the training one augmented as configured."""
    from pipeline import augment

    augment_fn = augment.build(cfg.augment, len(meta["class_names"]), cfg.train.seed)
    train_ds = data.train_dataset(data_dir, meta, cfg.train.batch_size, cfg.train.seed, augment_fn)
    val_ds = data.eval_dataset(data_dir, meta, "val", cfg.train.batch_size)
    return train_ds, val_ds


def callbacks(out_dir: Path, train_cfg):
    import keras

    return [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=train_cfg.patience,
                                      restore_best_weights=True, verbose=0),
        keras.callbacks.CSVLogger(str(out_dir / "history.csv")),
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard"), histogram_freq=0,
                                    write_graph=False, profile_batch=0),
    ]


def save_model(model, path: Path) -> Path:
    """Save a ``.keras`` file atomically."""
    with artifacts.atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


def fit(model_path: Path, data_dir: Path, cfg, out_dir: Path) -> dict:
    """Train the model stored at ``model_path``; write ``model.keras`` and ``history.csv`` to ``out_dir``."""
    import keras

    from pipeline import models

    out_dir.mkdir(parents=True, exist_ok=True)
    meta = data.read_meta(data_dir)
    keras.utils.set_random_seed(cfg.train.seed)
    model = models.load(model_path, compile=False)
    steps = math.ceil(meta["counts"]["train"] / cfg.train.batch_size)
    compile_model(model, cfg.train, steps)
    train_ds, val_ds = datasets(data_dir, meta, cfg)
    history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.train.epochs,
                        callbacks=callbacks(out_dir, cfg.train), verbose=cfg.train.verbose)
    save_model(model, out_dir / "model.keras")
    hist = history.history
    best = min(range(len(hist["val_loss"])), key=hist["val_loss"].__getitem__)
    return {"epochs_run": len(hist["val_loss"]), "best_epoch": best + 1,
            "best_val_loss": float(hist["val_loss"][best]),
            "best_val_accuracy": float(hist["val_accuracy"][best])}
