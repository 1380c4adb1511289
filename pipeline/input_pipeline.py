"""The tf.data pipelines that feed training and validation from the shards of :mod:`pipeline.data`: parallel
parse, cache (in memory when it fits, on disk, or none), seeded shuffle in a byte-sized buffer, batch,
augment, encode the targets, prefetch.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline import data

SHUFFLE_BYTES = 128 << 20   # shuffle buffer of the training pipeline, in bytes of decoded pixels
CACHE_SHARE = 0.25          # train.cache auto: memory when train + val take at most this share of free memory


def split_bytes(meta: dict, names=("train", "val")) -> int:
    """Bytes of decoded pixels of the named splits."""
    return int(np.prod(meta["image_shape"])) * sum(int(meta["counts"][n]) for n in names)


def free_memory() -> int:
    """Bytes of memory available to new allocations (MemAvailable; the free pages where that is unknown)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def cache_mode(meta: dict, mode: str = "auto") -> str:
    """``train.cache`` resolved: ``auto`` is ``memory`` when train and val together take at most a quarter of
    the free memory, else ``none`` (the shards are already an uncompressed copy on disk)."""
    if mode != "auto":
        return mode
    return "memory" if split_bytes(meta) <= CACHE_SHARE * free_memory() else "none"


def _cached(ds, mode: str, data_dir: Path, cache_dir: Path | None, name: str):
    if mode == "memory":
        return ds.cache()
    if mode == "disk":
        cache_dir = Path(cache_dir) if cache_dir is not None else Path(data_dir).parent / "train" / "cache"
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in cache_dir.glob(f"{name}.*"):  # left by an interrupted run: TF refuses to reuse them
            stale.unlink()
        return ds.cache(str(cache_dir / name))
    return ds


def shuffle_size(meta: dict, shuffle_bytes: int = SHUFFLE_BYTES, shuffle_buffer: int | None = None) -> int:
    """Images in the shuffle buffer: ``shuffle_bytes`` of decoded pixels, at most the split (and
    ``shuffle_buffer`` images when given)."""
    n = max(1, int(shuffle_bytes) // max(1, int(np.prod(meta["image_shape"]))))
    if shuffle_buffer is not None:
        n = min(n, int(shuffle_buffer))
    return max(1, min(n, int(meta["counts"]["train"])))


def _to_float(num_classes: int, kind: str = "classify"):
    """Pixels as float32; a label one-hot; objects and masks as they are (encoded after augmentation)."""
    import tensorflow as tf

    def fn(image, target):
        if kind != "classify":
            return tf.cast(image, tf.float32), target
        return tf.cast(image, tf.float32), tf.one_hot(target, num_classes)
    return fn


def train_dataset(data_dir: Path, meta: dict, batch_size: int, seed: int, augment_fn=None,
                  shuffle_buffer: int | None = None, cache: str = "auto", shuffle_bytes: int = SHUFFLE_BYTES,
                  cache_dir: Path | None = None, encode_fn=None):
    """Training pipeline: parallel parse, cache (``cache``: auto | memory | disk | none), seeded shuffle in a
    buffer of ``shuffle_bytes``, batch, then augment, then encode the targets, then prefetch.

    Yields (float32 pixels in [0, 255], one-hot float32 labels); Rescaling lives inside the model. Detection
    and segmentation records keep their objects / masks through augmentation (which moves them with the
    pixels); ``encode_fn(images, targets)`` then turns them into what the model's output is trained against.
    """
    import tensorflow as tf

    k = len(meta["class_names"])
    mode = cache_mode(meta, cache)
    ds = _cached(data.split_dataset(data_dir, "train", meta), mode, data_dir, cache_dir, "train")
    buffer = shuffle_size(meta, shuffle_bytes, shuffle_buffer)
    ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(_to_float(k, data.task(meta)), num_parallel_calls=tf.data.AUTOTUNE)
    if augment_fn is not None:
        ds = ds.map(augment_fn, num_parallel_calls=tf.data.AUTOTUNE)
    if encode_fn is not None:
        ds = ds.map(encode_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def eval_dataset(data_dir: Path, meta: dict, name: str, batch_size: int, cache: str = "auto",
                 cache_dir: Path | None = None, encode_fn=None):
    """Validation/test pipeline: (float32 pixels, one-hot labels or ``encode_fn``'s targets), no
    augmentation, cached as ``cache`` says (``auto`` decides as for training)."""
    import tensorflow as tf

    k = len(meta["class_names"])
    ds = _cached(data.split_dataset(data_dir, name, meta), cache_mode(meta, cache), data_dir, cache_dir, name)
    ds = ds.batch(batch_size).map(_to_float(k, data.task(meta)), num_parallel_calls=tf.data.AUTOTUNE)
    if encode_fn is not None:
        ds = ds.map(encode_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
