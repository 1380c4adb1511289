"""Seeded stratified splits, TFRecord shards on disk, and the tf.data pipelines that feed training.

Ingest writes ``runs/<run>/data/<split>-NNNNN-of-NNNNN.tfrecord`` holding raw uint8 pixels (never re-encoded),
``classes.json`` (class names, image shape, split sizes) and ``preflight.json``. Later stages read the shards
with :func:`split_dataset` or :func:`load_split`; nothing decodes the original files again.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError, UsageError

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- splitting

def _stratified_cut(labels: np.ndarray, fraction: float, rng: np.random.Generator):
    """Indices (keep, held_out): ``fraction`` of each class held out (at least one where the class has 2+)."""
    keep, held = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        else:
            n_held = 0
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    keep, held = np.concatenate(keep), np.concatenate(held)
    return np.sort(keep), np.sort(held)


def make_splits(source_splits: dict, data_cfg) -> dict:
    """Return ``{"train", "val", "test"}`` -> (x, y), carving missing splits out stratified and seeded.

    The source's own splits are kept when ``data.use_source_splits`` is true; otherwise everything is pooled
    and re-split by ``data.test_fraction`` and ``data.val_fraction``.
    """
    rng = np.random.default_rng(data_cfg.seed)
    splits = dict(source_splits)
    if not data_cfg.use_source_splits or "all" in splits or "train" not in splits:
        xs = [x for x, _ in splits.values()]
        ys = [y for _, y in splits.values()]
        splits = {"all": (np.concatenate(xs), np.concatenate(ys))}
    if "test" not in splits:
        pool_x, pool_y = splits.pop("all") if "all" in splits else splits.pop("train")
        keep, held = _stratified_cut(pool_y, data_cfg.test_fraction, rng)
        splits["train"] = (pool_x[keep], pool_y[keep])
        splits["test"] = (pool_x[held], pool_y[held])
    if "val" not in splits:
        x, y = splits["train"]
        keep, held = _stratified_cut(y, data_cfg.val_fraction, rng)
        splits["train"] = (x[keep], y[keep])
        splits["val"] = (x[held], y[held])
    x, y = splits["train"]
    order = rng.permutation(len(y))  # shards in random order: the shuffle buffer then mixes classes
    splits["train"] = (x[order], y[order])
    for name in SPLITS:
        if len(splits[name][1]) == 0:
            raise PipelineError(f"data: the {name} split is empty; the source has too few images per class")
    return {name: splits[name] for name in SPLITS}


# ---------------------------------------------------------------- TFRecord shards

def _feature_bytes(value: bytes):
    import tensorflow as tf
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _feature_int(value: int):
    import tensorflow as tf
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def write_split(directory: Path, name: str, images: np.ndarray, labels: np.ndarray, shard_size: int) -> list:
    """Write one split as TFRecord shards (atomically, shard by shard); return the shard paths."""
    import tensorflow as tf

    n_shards = max(1, math.ceil(len(images) / shard_size))
    paths = []
    for shard in range(n_shards):
        path = directory / f"{name}-{shard:05d}-of-{n_shards:05d}.tfrecord"
        with artifacts.atomic_path(path) as tmp:
            with tf.io.TFRecordWriter(str(tmp)) as writer:
                for i in range(shard * shard_size, min(len(images), (shard + 1) * shard_size)):
                    example = tf.train.Example(features=tf.train.Features(feature={
                        "image": _feature_bytes(np.ascontiguousarray(images[i]).tobytes()),
                        "label": _feature_int(labels[i]),
                    }))
                    writer.write(example.SerializeToString(deterministic=True))
        paths.append(path)
    return paths


def shards(data_dir: Path, name: str) -> list:
    return sorted(Path(data_dir).glob(f"{name}-*-of-*.tfrecord"))


def read_meta(data_dir: Path) -> dict:
    path = Path(data_dir) / "classes.json"
    if not path.is_file():
        raise UsageError(f"{path}: not found; run `cnnpipe ingest` first")
    return artifacts.read_json(path)


def split_dataset(data_dir: Path, name: str, meta: dict | None = None):
    """tf.data.Dataset of (image uint8 [H, W, C], label int64) read from the split's shards."""
    import tensorflow as tf

    meta = meta or read_meta(data_dir)
    files = shards(data_dir, name)
    if not files:
        raise UsageError(f"{data_dir}: no {name} shards; run `cnnpipe ingest` first")
    shape = meta["image_shape"]
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), shape)
        return image, ex["label"]

    ds = tf.data.TFRecordDataset([str(f) for f in files], num_parallel_reads=min(4, len(files)))
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def load_split(data_dir: Path, name: str, meta: dict | None = None):
    """The whole split as numpy arrays (images uint8 [N, H, W, C], labels int64 [N])."""
    ds = split_dataset(data_dir, name, meta).batch(4096)
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


# ---------------------------------------------------------------- training input pipeline

def _to_float(num_classes: int):
    import tensorflow as tf

    def fn(image, label):
        return tf.cast(image, tf.float32), tf.one_hot(label, num_classes)
    return fn


def train_dataset(data_dir: Path, meta: dict, batch_size: int, seed: int, augment_fn=None,
                  shuffle_buffer: int = 20000):
    """Training pipeline: parallel parse, cache, seeded shuffle, batch, then augment, then prefetch.

    Yields (float32 pixels in [0, 255], one-hot float32 labels); Rescaling lives inside the model.
    """
    import tensorflow as tf

    k = len(meta["class_names"])
    ds = split_dataset(data_dir, "train", meta).cache()
    ds = ds.shuffle(min(shuffle_buffer, max(1, meta["counts"]["train"])), seed=seed,
                    reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(_to_float(k), num_parallel_calls=tf.data.AUTOTUNE)
    if augment_fn is not None:
        ds = ds.map(augment_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(data_dir: Path, meta: dict, name: str, batch_size: int):
    """Validation/test pipeline: (float32 pixels, one-hot labels), cached, no augmentation."""
    import tensorflow as tf

    k = len(meta["class_names"])
    ds = split_dataset(data_dir, name, meta).cache().batch(batch_size)
    return ds.map(_to_float(k), num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
