"""``tfds:<name>``: a TensorFlow Datasets image-classification dataset (mnist, fashion_mnist, cifar10, ...).

``<name>`` is anything ``tfds.builder`` accepts (``mnist``, ``mnist:3.0.1``, ``cifar10``, ``tf_flowers``).
The dataset needs an ``Image`` feature and a ``ClassLabel`` feature (its supervised keys when it has them).

Order of work, so an offline machine never sits in TFDS' retry loop:

1. a prepared copy under ``data.tfds_dir`` (or TFDS' default ``~/tensorflow_datasets``) is used as is;
2. otherwise a 2-second connection probe to the download host (or the configured HTTPS proxy) decides:
   reachable -> ``download_and_prepare``; unreachable -> :class:`SourceUnavailable` at once, with a one-line
   message on how to pre-download, so ``data.fallback`` (e.g. ``idx:<dir>``) takes over.

The source's own splits are returned with ``validation`` renamed ``val``; other split names (e.g. ``extra``)
are left out with a note. ``data.use_source_splits: false`` pools them and re-splits (pipeline.data).
"""
from __future__ import annotations

import contextlib
import logging
import socket
import tempfile
import threading
import urllib.parse
import urllib.request

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sources import SourceData, SourceUnavailable, source_path

DOWNLOAD_HOST = ("storage.googleapis.com", 443)
PROBE_SECONDS = 2.0
SPLIT_NAMES = {"train": "train", "validation": "val", "test": "test"}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _probe_target() -> tuple[str, int]:
    """The host a download would connect to first: the HTTPS proxy when one is configured."""
    proxy = urllib.request.getproxies().get("https")
    if proxy:
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.hostname:
            return parts.hostname, parts.port or 3128
    return DOWNLOAD_HOST


def _reachable(target: tuple[str, int] | None = None, timeout: float = PROBE_SECONDS) -> bool:
    """True when a TCP connection to ``target`` opens within ``timeout`` seconds (DNS lookup included)."""
    host, port = target or _probe_target()
    result = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)  # a hanging DNS lookup is not covered by the socket timeout
    return bool(result and result[0])


def _offline_message(name: str, where: str) -> str:
    return (f"tfds:{name}: no prepared copy in {where} and the download host is unreachable (offline?); "
            f"pre-download it on a connected machine with `tfds build {name}` or "
            f"`python -c \"import tensorflow_datasets as tfds; tfds.load('{name}')\"`, copy "
            f"~/tensorflow_datasets here (or point data.tfds_dir at it), or use a local source via "
            f"data.fallback (idx:<dir> or folder:<dir>)")


@contextlib.contextmanager
def _own_tempdir():
    """TFDS (4.9) makes an empty temporary folder each time a builder of a dataset that is not prepared reads
    its info "from the GCS bucket", even with GCS disabled, and never removes it: one more ``/tmp/tmp*tfds``
    per ingest. Inside this block temporary files go to a folder of ours, removed at its end."""
    with tempfile.TemporaryDirectory(prefix="cnnpipe-tfds-") as scratch:
        saved, tempfile.tempdir = tempfile.tempdir, scratch
        try:
            yield
        finally:
            tempfile.tempdir = saved


def _builder(name: str, tfds_dir: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise PipelineError(f"tfds:{name}: tensorflow-datasets cannot be imported "
                            f"({_first_line(exc)})") from None
    data_dir = str(source_path(tfds_dir)) if tfds_dir else None
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # silence "Variant folder ... has no dataset_info.json" (not prepared)
    try:
        with _own_tempdir():
            return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise PipelineError(f"tfds:{name}: no such TFDS dataset "
                            "(see https://www.tensorflow.org/datasets/catalog)") from None
    except (ValueError, KeyError, OSError) as exc:
        raise PipelineError(f"tfds:{name}: {_first_line(exc)}") from None
    finally:
        absl_log.setLevel(level)


def _feature_keys(builder, name: str) -> tuple[str, str]:
    """(image key, label key): the supervised keys when they fit, else the first Image and ClassLabel."""
    import tensorflow_datasets as tfds

    features = builder.info.features
    keys = builder.info.supervised_keys
    if (isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) and k in features for k in keys)
            and isinstance(features[keys[0]], tfds.features.Image)
            and isinstance(features[keys[1]], tfds.features.ClassLabel)):
        return keys
    images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not images or not labels:
        raise PipelineError(f"tfds:{name}: not an image-classification dataset "
                            "(needs an Image feature and a ClassLabel feature)")
    return images[0], labels[0]


def _prepare(builder, name: str) -> None:
    """Download and prepare, failing fast with :class:`SourceUnavailable` when the network is unreachable."""
    where = str(builder.data_dir_root)
    if not _reachable():
        raise SourceUnavailable(_offline_message(name, where))
    try:
        builder.download_and_prepare()
    except Exception as exc:  # TFDS raises many types here: download, checksum, manual-download errors
        raise SourceUnavailable(f"tfds:{name}: download failed ({_first_line(exc)}); "
                                + _offline_message(name, where).split("; ", 1)[1]) from None


def _conform_stream(ds, data_cfg, name: str, split: str):
    """Images of varying size, one at a time: channels converted, resized to data.image_size."""
    from pipeline.imaging import resize_one, to_channels

    xs, ys = [], []
    for image, label in ds.as_numpy_iterator():
        image = resize_one(to_channels(image, data_cfg.channels), data_cfg.image_size, data_cfg.resize)
        if xs and image.shape != xs[0].shape:
            raise PipelineError(f"tfds:{name}: images of different sizes in {split} ({xs[0].shape[:2]} and "
                                f"{image.shape[:2]}); set data.image_size: [height, width]")
        xs.append(image)
        ys.append(label)
    if not xs:
        return None
    return np.stack(xs), np.asarray(ys, np.int64)


def _read_split(builder, split: str, keys, data_cfg, name: str):
    """One split as (uint8 [N, H, W, C], int64 [N]), conformed to the data config."""
    import tensorflow as tf

    from pipeline.imaging import conform

    image_key, label_key = keys
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key]), num_parallel_calls=tf.data.AUTOTUNE)
    if None in tuple(builder.info.features[image_key].shape):
        return _conform_stream(ds.prefetch(tf.data.AUTOTUNE), data_cfg, name, split)
    xs, ys = [], []
    for x, y in ds.batch(4096).prefetch(2).as_numpy_iterator():
        xs.append(conform(x, data_cfg.channels, data_cfg.image_size, data_cfg.resize))
        ys.append(y.astype(np.int64))
    if not xs:
        return None
    return np.concatenate(xs), np.concatenate(ys)


def _split_plan(builder, name: str) -> tuple[dict, list]:
    """{our split name: TFDS split expression}, notes about split names left out."""
    available = list(builder.info.splits)
    if not available:
        raise PipelineError(f"tfds:{name}: the dataset declares no splits")
    plan = {ours: theirs for theirs, ours in SPLIT_NAMES.items() if theirs in available}
    others = [s for s in available if s not in SPLIT_NAMES]
    if not plan:
        return {"all": "+".join(available)}, []
    notes = [f"tfds:{name}: split(s) {', '.join(others)} not used"] if others else []
    return plan, notes


def load_tfds(arg: str, data_cfg) -> SourceData:
    """Load a TFDS dataset (preparing it first when it is reachable) as uint8 NHWC arrays per split."""
    name = arg.strip()
    builder = _builder(name, data_cfg.tfds_dir)
    keys = _feature_keys(builder, name)
    dtype = builder.info.features[keys[0]].np_dtype
    if dtype != np.uint8:
        raise PipelineError(f"tfds:{name}: images are {dtype}, expected uint8")
    if not builder.is_prepared():
        _prepare(builder, name)
    plan, notes = _split_plan(builder, name)
    splits = {}
    for ours, theirs in plan.items():
        part = _read_split(builder, theirs, keys, data_cfg, name)
        if part is None:
            raise PipelineError(f"tfds:{name}: the {theirs} split is empty")
        splits[ours] = part
    shapes = {v[0].shape[1:] for v in splits.values()}
    if len(shapes) > 1:
        raise PipelineError(f"tfds:{name}: splits differ in image size {sorted(shapes)}; set data.image_size")
    class_names = list(builder.info.features[keys[1]].names)
    counts = ", ".join(f"{len(v[1]):,} {k}" for k, v in splits.items())
    return SourceData(splits=splits, class_names=class_names,
                      origin=f"TFDS {builder.name} {builder.version} in {builder.data_dir_root} ({counts})",
                      notes=notes)
