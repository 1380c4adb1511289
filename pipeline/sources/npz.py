"""``npz:<file>``: labelled sequences in a numpy ``.npz`` archive (sensor windows, time series, signals).

Keys of the archive::

    x             float or int [n, length, channels] (or [n, length]: one channel)
    y             int labels [n] (0..K-1), or strings (the sorted distinct strings become the classes)
    class_names   optional [K] strings naming the integer labels
    x_train, y_train, x_test, y_test (and optionally x_val, y_val)
                  instead of x / y: the dataset's own splits, kept when data.use_source_splits is true

Every sequence is stored as the one-row uint8 image [1, length, channels] (:mod:`pipeline.sequence`): one
offset and scale per channel are chosen from the training split (the split ingest will make, when the archive
defines none) and recorded in ``classes.json`` and the model card. Wrong shapes, ragged (object) arrays,
NaN or infinite values, a label count that differs from the sequence count and fewer than two classes are
one-line errors naming the key.

:func:`sequence_source` is the common end of the sequence sources (``npz``, ``ucr``, ``mnist1d``).
"""
from __future__ import annotations

import zipfile

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sources import SourceData, check_class_name, sort_names, source_path

SPLIT_KEYS = ("train", "val", "test")


def sequence_source(splits: dict, class_names: list, data_cfg, origin: str, where: str,
                    **extra) -> SourceData:
    """SourceData of uint8 one-row images from float splits
    ``{name: (list of [length_i, channels], labels)}``.

    Lengths are brought to ``data.sequence_length`` (0: the longest) by ``data.sequence_fit``; the encoding
    is fitted on the training split as :func:`pipeline.data.split_indices` will make it."""
    from pipeline import data, sequence

    channels = {s.shape[1] for xs, _ in splits.values() for s in xs}
    if len(channels) > 1:
        raise PipelineError(f"{where}: sequences differ in their number of channels ({sorted(channels)})")
    lengths = [s.shape[0] for xs, _ in splits.values() for s in xs]
    length = data_cfg.sequence_length or max(lengths)
    fit = data_cfg.sequence_fit
    arrays = {k: (np.stack([sequence.fit_length(s, length, fit) for s in xs]).astype(np.float32),
                  np.asarray(y, np.int64)) for k, (xs, y) in splits.items()}
    plan = data.split_indices({k: y for k, (_, y) in arrays.items()}, data_cfg, allow_empty=True)
    train = data.gather(arrays, plan["train"])
    if train is None or not len(train):
        raise PipelineError(f"{where}: no sequence is left for the training split")
    encoding = {**sequence.fit_encoding(train), "length": int(length), "channels": int(next(iter(channels))),
                "fit": fit}
    out = {k: (sequence.encode(x, encoding)[:, None], y) for k, (x, y) in arrays.items()}
    notes = list(extra.pop("notes", []))
    if min(lengths) != max(lengths) or length != max(lengths):
        how = "padded with zeros or cut" if fit == "pad" else "resampled"
        notes.append(f"{where}: lengths {min(lengths)}..{max(lengths)} {how} to {length}")
    return SourceData(splits=out, class_names=class_names, origin=origin, encoding=encoding, notes=notes,
                      **extra)


def _open(path, where: str):
    if not path.exists():
        raise PipelineError(f"{where}: no such file")
    if not path.is_file():
        raise PipelineError(f"{where}: not a file")
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{where}: not a readable .npz archive (not a zip file; save with numpy.savez)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PipelineError(f"{where}: not a readable .npz archive ({text})") from None


def _get(archive, key: str, where: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError:  # an object array in the archive: numpy refuses it without pickle
        raise PipelineError(f"{where}: {key} is an object array (ragged sequences?); store equal-length "
                            "numeric arrays [n, length, channels]") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PipelineError(f"{where}: {key}: cannot read ({exc})") from None


def _sequences(x: np.ndarray, key: str, where: str) -> list:
    numeric = np.issubdtype(x.dtype, np.number) or x.dtype == bool
    if not numeric or np.issubdtype(x.dtype, np.complexfloating):
        raise PipelineError(f"{where}: {key} holds {x.dtype} values; expected real numbers")
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or 0 in x.shape[1:]:
        raise PipelineError(f"{where}: {key} has shape {list(x.shape)}; expected [n, length, channels] "
                            "or [n, length]")
    if not len(x):
        raise PipelineError(f"{where}: {key} holds no sequence")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if bad.any():
        raise PipelineError(f"{where}: {key}[{int(np.flatnonzero(bad)[0])}] holds NaN or infinite values")
    return list(x)


def _labels(y: np.ndarray, key: str, n: int, where: str) -> np.ndarray:
    if y.ndim != 1:
        raise PipelineError(f"{where}: {key} has shape {list(y.shape)}; expected [n] labels")
    if len(y) != n:
        raise PipelineError(f"{where}: {key} holds {len(y)} labels but the sequences number {n}")
    return y


def _class_index(ys: list, names, where: str) -> tuple[list, list]:
    """(class names, int label arrays) from integer or string labels."""
    if all(np.issubdtype(y.dtype, np.integer) for y in ys):
        ys = [y.astype(np.int64) for y in ys]
        top = max(int(y.max()) for y in ys if len(y)) + 1
        if min(int(y.min()) for y in ys if len(y)) < 0:
            raise PipelineError(f"{where}: y holds a negative label")
        if names is not None:
            names = [check_class_name(str(n), where) for n in names.tolist()]
            if len(names) < top:
                raise PipelineError(f"{where}: class_names lists {len(names)} names but the labels go up to "
                                    f"{top - 1}")
        else:
            names = [str(i) for i in range(top)]
        return names, ys
    if all(y.dtype.kind in "US" for y in ys):
        texts = [np.char.decode(y, "utf-8") if y.dtype.kind == "S" else y for y in ys]
        names = sort_names({check_class_name(str(v), where, "label") for y in texts for v in y.tolist()})
        index = {n: i for i, n in enumerate(names)}
        return names, [np.asarray([index[str(v)] for v in y.tolist()], np.int64) for y in texts]
    raise PipelineError(f"{where}: y holds {ys[0].dtype} values; expected integer or string labels")


def load_npz(arg: str, data_cfg) -> SourceData:
    path = source_path(arg)
    where = f"data.source npz:{path}"
    with _open(path, where) as archive:
        keys = set(archive.files)
        if "x" in keys:
            pairs = {"all": ("x", "y")}
        elif "x_train" in keys:
            pairs = {s: (f"x_{s}", f"y_{s}") for s in SPLIT_KEYS if f"x_{s}" in keys}
        else:
            found = ", ".join(sorted(keys)) or "none"
            raise PipelineError(f"{where}: no array x (or x_train); found {found}")
        raw = {}
        for split, (xk, yk) in pairs.items():
            if yk not in keys:
                raise PipelineError(f"{where}: {xk} has no labels {yk}")
            xs = _sequences(_get(archive, xk, where), xk, where)
            raw[split] = (xs, _labels(_get(archive, yk, where), yk, len(xs), where))
        names = _get(archive, "class_names", where) if "class_names" in keys else None
    class_names, ys = _class_index([y for _, y in raw.values()], names, where)
    splits = {k: (xs, y) for (k, (xs, _)), y in zip(raw.items(), ys)}
    if len(class_names) < 2:
        raise PipelineError(f"{where}: needs at least 2 classes, found {len(class_names)}")
    n = sum(len(y) for _, y in splits.values())
    return sequence_source(splits, class_names, data_cfg, f"npz {path} ({n:,} sequences)", where,
                           input_files=[path])


def identity(arg: str, data_cfg) -> dict:
    from pipeline.artifacts import sha256_file

    path = source_path(arg)
    return {"path": str(path.resolve()), "sha256": sha256_file(path) if path.is_file() else None}
