"""Seeded stratified splits and the TFRecord shards on disk (the tf.data pipelines that feed training from
them are in :mod:`pipeline.input_pipeline`).

Ingest writes ``runs/<run>/data/<split>-NNNNN-of-NNNNN.tfrecord`` holding raw uint8 pixels (never re-encoded),
``classes.json`` (class names, image shape, split sizes) and ``preflight.json``. Later stages read the shards
as streams (:func:`split_dataset`, :func:`read_labels`, :func:`take`); nothing decodes the original files
again, and a whole split is loaded (:func:`load_split`) or cached in memory only when it fits a budget.

A split depends only on each item's class and its rank within the class (file path for files, position for
arrays) and the seed: the same images split the same way whichever source lists them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.errors import PipelineError, UsageError

SPLITS = ("train", "val", "test")
EMPTY = "data: the {name} split is empty; the source has too few images per class"


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


def split_indices(labels: dict, data_cfg, allow_empty: bool = False) -> dict:
    """``{"train", "val", "test"}`` -> indices into the source's items (its splits concatenated in order).

    ``labels`` maps the source's split names (``train``, ``val``, ``test`` or ``all``) to int labels. The
    source's own splits are kept when ``data.use_source_splits`` is true; otherwise everything is pooled and
    re-split by ``data.test_fraction`` and ``data.val_fraction`` (stratified, seeded). The train indices come
    in a seeded random order (the shards are written in it, so a shuffle buffer mixes classes). An empty split
    is an error unless ``allow_empty`` (ingest reports it after reading the images, whose problems
    come first).
    """
    rng = np.random.default_rng(data_cfg.seed)
    all_labels = np.concatenate([np.asarray(y, np.int64) for y in labels.values()]) if labels else np.zeros(0)
    groups, start = {}, 0
    for name, y in labels.items():
        groups[name] = np.arange(start, start + len(y))
        start += len(y)
    if not data_cfg.use_source_splits or "all" in groups or "train" not in groups:
        groups = {"all": np.arange(start)}
    if "test" not in groups:
        pool = groups.pop("all") if "all" in groups else groups.pop("train")
        keep, held = _stratified_cut(all_labels[pool], data_cfg.test_fraction, rng)
        groups["train"], groups["test"] = pool[keep], pool[held]
    if "val" not in groups:
        pool = groups["train"]
        keep, held = _stratified_cut(all_labels[pool], data_cfg.val_fraction, rng)
        groups["train"], groups["val"] = pool[keep], pool[held]
    for name in SPLITS:  # class, then rank within the class: the same order whichever source lists the items
        groups[name] = groups[name][np.argsort(all_labels[groups[name]], kind="stable")]
    groups["train"] = groups["train"][rng.permutation(len(groups["train"]))]
    for name in SPLITS:
        if len(groups[name]) == 0 and not allow_empty:
            raise PipelineError(EMPTY.format(name=name))
    return {name: groups[name] for name in SPLITS}


def gather(source_splits: dict, index: np.ndarray) -> np.ndarray:
    """Items at global ``index`` (the source splits concatenated in order) without concatenating them."""
    index = np.asarray(index, np.int64)
    parts = list(source_splits.values())
    out = None
    start = 0
    for x, _ in parts:
        mask = (index >= start) & (index < start + len(x))
        if mask.any():
            picked = x[index[mask] - start]
            if out is None:
                out = np.empty((len(index), *picked.shape[1:]), dtype=picked.dtype)
            out[mask] = picked
        start += len(x)
    return out if out is not None else np.empty((0,), dtype=object)


def make_splits(source_splits: dict, data_cfg) -> dict:
    """``{"train", "val", "test"}`` -> (x, y) for arrays held in memory (see :func:`split_indices`)."""
    plan = split_indices({k: y for k, (_, y) in source_splits.items()}, data_cfg)
    labels = np.concatenate([np.asarray(y, np.int64) for _, y in source_splits.values()])
    return {name: (gather(source_splits, idx), labels[idx]) for name, idx in plan.items()}


# ---------------------------------------------------------------- TFRecord shards

def _example(image: np.ndarray, label: int, target: np.ndarray | None = None) -> bytes:
    import tensorflow as tf

    feature = {
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[np.ascontiguousarray(image).tobytes()])),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }
    if target is not None:  # detect: float32 [n, 5] objects; segment: uint8 [H, W] mask
        feature["target"] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[np.ascontiguousarray(target).tobytes()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


class ShardWriter:
    """Writes one split record by record into shards of ``shard_size`` under hidden temporary names; ``close``
    renames them to ``<split>-NNNNN-of-NNNNN.tfrecord`` once the count is known, ``abort`` removes them."""

    def __init__(self, directory: Path, name: str, shard_size: int):
        self.directory, self.name, self.shard_size = Path(directory), name, shard_size
        self.tmp_paths: list = []
        self.count = 0
        self._writer = None

    def _open(self):
        import tensorflow as tf

        path = self.directory / f".{self.name}-{len(self.tmp_paths):05d}.tfrecord.tmp"
        self.tmp_paths.append(path)
        self._writer = tf.io.TFRecordWriter(str(path))

    def _finish_shard(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            with open(self.tmp_paths[-1], "rb+") as fh:
                os.fsync(fh.fileno())

    def write(self, image: np.ndarray, label: int, target: np.ndarray | None = None) -> None:
        if self._writer is None:
            self._open()
        self._writer.write(_example(image, label, target))
        self.count += 1
        if self.count % self.shard_size == 0:
            self._finish_shard()

    def close(self) -> list:
        self._finish_shard()
        n = len(self.tmp_paths)
        paths = []
        for k, tmp in enumerate(self.tmp_paths):
            path = self.directory / f"{self.name}-{k:05d}-of-{n:05d}.tfrecord"
            os.replace(tmp, path)
            paths.append(path)
        self.tmp_paths = []
        return paths

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for tmp in self.tmp_paths:
            Path(tmp).unlink(missing_ok=True)
        self.tmp_paths = []


def write_split(directory: Path, name: str, images: np.ndarray, labels: np.ndarray, shard_size: int) -> list:
    """Write one in-memory split as TFRecord shards; return the shard paths."""
    writer = ShardWriter(directory, name, shard_size)
    try:
        for image, label in zip(images, labels):
            writer.write(image, label)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def shards(data_dir: Path, name: str) -> list:
    return sorted(Path(data_dir).glob(f"{name}-*-of-*.tfrecord"))


def read_meta(data_dir: Path) -> dict:
    path = Path(data_dir) / "classes.json"
    if not path.is_file():
        raise UsageError(f"{path}: not found; run `cnnpipe ingest` first")
    return artifacts.read_json(path)


def _files(data_dir: Path, name: str) -> list:
    files = shards(data_dir, name)
    if not files:
        raise UsageError(f"{data_dir}: no {name} shards; run `cnnpipe ingest` first")
    return [str(f) for f in files]


def task(meta: dict) -> str:
    """classify | detect | segment: what the shards' targets are (classes.json, written by ingest)."""
    return meta.get("task", "classify")


def target_shape(meta: dict) -> tuple:
    """The shape of one record's target as :func:`split_dataset` yields it: () for a label, [M, 5] for the
    objects of a detection record (padded to ``max_objects`` with class -1), [H, W] for a mask."""
    kind = task(meta)
    if kind == "detect":
        return (int(meta["max_objects"]), 5)
    if kind == "segment":
        return tuple(meta["image_shape"][:2])
    return ()


def _parser(shape, fields=("image", "label"), meta: dict | None = None):
    import tensorflow as tf

    kind = task(meta or {})
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    spec = {k: spec[k] for k in fields}
    if kind != "classify" and "image" in spec:
        spec["target"] = tf.io.FixedLenFeature([], tf.string)

    def target(ex):
        if kind == "detect":  # float32 rows (class, cx, cy, w, h), padded with class -1 to max_objects
            objects = tf.reshape(tf.io.decode_raw(ex["target"], tf.float32), [-1, 5])
            pad = int(meta["max_objects"]) - tf.shape(objects)[0]
            filler = tf.concat([-tf.ones([pad, 1]), tf.zeros([pad, 4])], axis=1)
            return tf.ensure_shape(tf.concat([objects, filler], axis=0), [int(meta["max_objects"]), 5])
        if kind == "segment":
            return tf.reshape(tf.io.decode_raw(ex["target"], tf.uint8), shape[:2])
        return ex["label"]

    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        if "image" not in spec:
            return ex["label"]
        image = tf.reshape(tf.io.decode_raw(ex["image"], tf.uint8), shape)
        return image, target(ex)
    return parse


def split_dataset(data_dir: Path, name: str, meta: dict | None = None):
    """tf.data.Dataset of (image uint8 [H, W, C], target) read from the split's shards: the label (int64) of
    a classification record, the objects or the mask of a detection or segmentation one
    (:func:`target_shape`).
    """
    import tensorflow as tf

    meta = meta or read_meta(data_dir)
    files = _files(data_dir, name)
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(4, len(files)))
    return ds.map(_parser(meta["image_shape"], meta=meta), num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)


def load_split(data_dir: Path, name: str, meta: dict | None = None):
    """The whole split as numpy arrays (images uint8 [N, H, W, C], targets: labels int64 [N], or the
    objects / masks of :func:`target_shape`), filled in place."""
    meta = meta or read_meta(data_dir)
    n = int(meta["counts"][name])
    x = np.empty((n, *meta["image_shape"]), np.uint8)
    kind = task(meta)
    y = np.empty((n, *target_shape(meta)), {"detect": np.float32, "segment": np.uint8}.get(kind, np.int64))
    at = 0
    for xb, yb in split_dataset(data_dir, name, meta).batch(1024).as_numpy_iterator():
        x[at:at + len(yb)], y[at:at + len(yb)] = xb, yb
        at += len(yb)
    if at != n:
        raise PipelineError(f"{data_dir}: the {name} shards hold {at} records, classes.json says {n}; "
                            "run `cnnpipe ingest --force`")
    return x, y


def read_labels(data_dir: Path, name: str) -> np.ndarray:
    """The labels of a split in record order (shard by shard), streamed: the pixels are never kept."""
    import tensorflow as tf

    ds = tf.data.TFRecordDataset(_files(data_dir, name))
    ds = ds.map(_parser(None, ("label",)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    parts = [y for y in ds.batch(8192).as_numpy_iterator()]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def take(data_dir: Path, name: str, indices, meta: dict | None = None) -> np.ndarray:
    """Images at ``indices`` (record order, as :func:`read_labels`), streamed: only those are decoded, kept.

    Returns uint8 [len(indices), H, W, C] in the order of ``indices``.
    """
    import tensorflow as tf

    meta = meta or read_meta(data_dir)
    indices = np.asarray(indices, np.int64)
    wanted = np.unique(indices)
    mask = np.zeros(int(wanted.max()) + 1 if len(wanted) else 1, bool)
    mask[wanted] = True
    mask_t = tf.constant(mask)
    ds = tf.data.TFRecordDataset(_files(data_dir, name)).take(len(mask)).enumerate()  # stops after the last
    ds = ds.filter(lambda i, rec: tf.gather(mask_t, i))
    parse = _parser(meta["image_shape"], meta=meta)
    ds = ds.map(lambda i, rec: (i, parse(rec)[0]), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    found = {}
    for i, image in ds.as_numpy_iterator():
        found[int(i)] = image
    missing = [int(i) for i in wanted if int(i) not in found]
    if missing:
        raise PipelineError(f"{data_dir}: the {name} split has no record {missing[0]}")
    out = np.empty((len(indices), *meta["image_shape"]), np.uint8)
    for k, i in enumerate(indices):
        out[k] = found[int(i)]
    return out
