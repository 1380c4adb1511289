"""Data sources. ``load(cfg.data)`` returns a :class:`SourceData`: int labels with, per split, either uint8
NHWC images (``digits``, ``tfds:``, ``idx:``) or the paths of image files that ingest decodes as it streams
them to the shards (``folder:``, ``csv:``).

A source is named by ``data.source``: ``digits``, ``mnist5k``, ``tfds:<name>``, ``idx:<dir>``,
``folder:<dir>``, ``csv:<file>``, ``mnist1d``, ``npz:<file>``, ``ucr:<name>``, ``audio:<dir>``; for detection
``yolo:<dir>``, for segmentation ``masks:<dir>``, and the generated ``scenes:detect`` / ``scenes:segment``,
whose ``targets`` hold objects or masks (docs/tasks.md). Array sources return images already conformed to
``data.channels`` and ``data.image_size``.
Class names given by a user (folder names, CSV labels) pass :func:`check_class_name`.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, PipelineError


@dataclass
class SourceData:
    """What a source yields before the pipeline splits it.

    ``splits`` maps split names (``train``, ``val``, ``test``, or ``all`` for a single pool) to
    ``(images uint8 [N, H, W, C], labels int64 [N])``, or with ``files`` to ``(paths object [N], labels)``
    ordered by class, then path.
    """

    splits: dict
    class_names: list
    origin: str
    skipped: list = field(default_factory=list)      # [{"path": ..., "reason": ...}] unreadable files
    input_files: list = field(default_factory=list)  # files whose content identifies the data
    notes: list = field(default_factory=list)        # human-readable remarks (e.g. an empty class folder)
    files: bool = False                              # splits hold file paths (object arrays), not pixels
    ignored: dict | None = None                      # {"count", "by_extension"}: files in unread formats
    encoding: dict | None = None                     # sequences / audio: how the source made uint8 pixels
    task: str = "classify"                           # classify | detect | segment: what ``targets`` hold
    targets: dict | None = None                      # detect / segment: split -> object array [N] parallel to
    #   the split's items: detect, float32 [n_objects, 5] rows (class, cx, cy, w, h), coordinates normalized
    #   to 0..1 (n_objects may be 0: background only); segment, a uint8 mask [H, W] of class indices at the
    #   image's final size. The split's labels are then the dominant class (for stratified splits only).


NO_ARGUMENT = ("digits", "mnist5k", "mnist1d")  # sources named without ``:<arg>``


def parse(source: str) -> tuple[str, str]:
    """Split ``kind:arg``; the :data:`NO_ARGUMENT` sources have none."""
    kind, _, arg = source.partition(":")
    kind = kind.strip().lower()
    if kind not in LOADERS:
        raise ConfigError(f"data.source: unknown source {source!r} "
                          f"(use digits, mnist5k, tfds:<name>, idx:<dir>, folder:<dir>, csv:<file>, mnist1d, "
                          f"npz:<file>, ucr:<name>, audio:<dir>, yolo:<dir>, masks:<dir> or "
                          f"scenes:detect|segment)")
    if kind not in NO_ARGUMENT and not arg.strip():
        example = {"tfds": "mnist", "csv": "<file>", "npz": "<file>", "ucr": "GunPoint",
                   "scenes": "detect or scenes:segment"}.get(kind, "<dir>")
        raise ConfigError(f"data.source: {kind}: needs an argument, e.g. {kind}:{example}")
    if kind == "scenes":  # detect or segment, then options: checked now, before any stage runs
        from pipeline.scenes import parse_arg

        parse_arg(arg.strip())
    return kind, arg.strip()


def load(data_cfg) -> SourceData:
    """Load the configured source, falling back to ``data.fallback`` when the primary is unavailable."""
    kind, arg = parse(data_cfg.source)
    try:
        return LOADERS[kind](arg, data_cfg)
    except SourceUnavailable as exc:
        if not data_cfg.fallback:
            raise PipelineError(str(exc)) from None
        fkind, farg = parse(data_cfg.fallback)
        data = LOADERS[fkind](farg, data_cfg)
        data.notes.append(f"{data_cfg.source} unavailable ({exc}); used fallback {data_cfg.fallback}")
        return data


class SourceUnavailable(PipelineError):
    """The source cannot be reached (e.g. a TFDS dataset offline with no cached copy)."""


def _digits(arg: str, data_cfg) -> SourceData:
    from sklearn.datasets import load_digits

    from pipeline.imaging import conform

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    images = conform(images, data_cfg.channels, data_cfg.image_size, data_cfg.resize)
    return SourceData(splits={"all": (images, labels)},
                      class_names=[str(i) for i in range(10)],
                      origin="scikit-learn digits (1,797 8x8 images, bundled)")


def _lazy(module: str, func: str):
    def call(arg, data_cfg):
        import importlib
        return getattr(importlib.import_module(f"pipeline.sources.{module}"), func)(arg, data_cfg)
    return call


LOADERS = {
    "digits": _digits,
    "tfds": _lazy("tfds", "load_tfds"),
    "idx": _lazy("idx", "load_idx"),
    "folder": _lazy("folder", "load_folder"),
    "csv": _lazy("csv", "load_csv"),
    "mnist1d": _lazy("mnist1d", "load_mnist1d"),
    "mnist5k": _lazy("mnist5k", "load_mnist5k"),
    "npz": _lazy("npz", "load_npz"),
    "ucr": _lazy("ucr", "load_ucr"),
    "audio": _lazy("audio", "load_audio"),
    "yolo": _lazy("yolo", "load_yolo"),
    "masks": _lazy("masks", "load_masks"),
    "scenes": lambda arg, data_cfg: __import__("pipeline.scenes", fromlist=["load_source"]).load_source(
        arg, data_cfg),
}

SPLIT_NAMES = ("train", "val", "validation", "test")
LINE_BREAKS = {"\u2028", "\u2029"}


def check_class_name(name: str, where: str, what: str = "class name") -> str:
    """A class name a user gave must be UTF-8 text of one line: labels.txt, the model card and C headers
    carry it. Emoji, quotes, spaces and any letters are fine; control characters and line breaks are not."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        raise PipelineError(f"{where}: {what} {raw!r} is not valid UTF-8; rename it") from None
    if not name.strip():
        raise PipelineError(f"{where}: {what} {name!r} is blank; rename it")
    bad = [c for c in name if unicodedata.category(c) == "Cc" or c in LINE_BREAKS]
    if bad:
        raise PipelineError(f"{where}: {what} {name!r} holds a line break or control character "
                            f"({ascii(bad[0])}); rename it")
    return name


def sort_names(names) -> list:
    """Class order: by name, numerically when every name is an integer (2 before 10)."""
    names = list(names)
    if names and all(n.strip().lstrip("-").isdigit() and n.isascii() for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def path_key(rel: str | Path) -> tuple:
    """The order of files within a class: by path components (a folder's files before the next name)."""
    return Path(rel).parts


def list_files(folder: Path, extensions) -> tuple[list, list]:
    """(files under ``folder`` whose suffix is in ``extensions``, sorted by :func:`path_key`; the other
    files). Hidden files and folders (a leading dot) are skipped."""
    matching, other = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath) / name
                (matching if path.suffix.lower() in extensions else other).append(path)
    return sorted(matching, key=lambda p: path_key(p.relative_to(folder))), other


def source_path(arg: str) -> Path:
    return Path(arg).expanduser()


def _tfds_prepared(name: str, data_cfg) -> bool:
    import os

    root = Path(data_cfg.tfds_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()
    folder = root / name.split(":")[0].split("/")[0]
    return folder.is_dir() and any(folder.rglob("dataset_info.json"))


def identity(data_cfg) -> dict:
    """A cheap description of what the source currently holds, so ingest reruns when the data changes.

    Files are identified by path, size and modification time (hashing every image of a large folder on each
    call would cost as much as ingesting it); the written shards are hashed into later stages' manifests.
    """
    from pipeline.artifacts import sha256_json

    out = {}
    for key in ("source", "fallback"):
        value = getattr(data_cfg, key)
        if not value:
            continue
        kind, arg = parse(value)
        if kind == "csv":
            from pipeline.sources.csv import identity as csv_identity

            out[key] = csv_identity(arg)
        elif kind in ("mnist1d", "mnist5k", "npz", "ucr", "audio"):
            from importlib import import_module

            out[key] = import_module(f"pipeline.sources.{kind}").identity(arg, data_cfg)
        elif kind in ("idx", "folder", "yolo", "masks"):
            root = source_path(arg)
            listing = sorted((str(p.relative_to(root)), st.st_size, int(st.st_mtime))
                             for p, st in ((p, p.stat()) for p in root.rglob("*") if p.is_file())
                             ) if root.is_dir() else None
            out[key] = {"path": str(root.resolve()), "files": sha256_json(listing)}
        elif kind == "scenes":  # generated: the argument and the drawing's version say it all
            from pipeline.scenes import VERSION

            out[key] = {"scenes": arg, "version": VERSION}
        elif kind == "tfds":  # a prepared copy appearing later (after an offline fallback) re-ingests
            out[key] = {"name": arg, "dir": data_cfg.tfds_dir, "prepared": _tfds_prepared(arg, data_cfg)}
        else:
            from importlib import metadata
            out[key] = {"scikit-learn": metadata.version("scikit-learn")}
    return out
