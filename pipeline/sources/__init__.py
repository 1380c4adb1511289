"""Data sources. ``load(cfg.data)`` returns a :class:`SourceData` of uint8 NHWC images and int labels.

A source is named by ``data.source``: ``digits``, ``tfds:<name>``, ``idx:<dir>`` or ``folder:<dir>``.
Every source returns images already conformed to ``data.channels`` and ``data.image_size``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, PipelineError

@dataclass
class SourceData:
    """What a source yields before the pipeline splits it.

    ``splits`` maps split names (``train``, ``val``, ``test``, or ``all`` for a single pool) to
    ``(images uint8 [N, H, W, C], labels int64 [N])``.
    """

    splits: dict
    class_names: list
    origin: str
    skipped: list = field(default_factory=list)      # [{"path": ..., "reason": ...}] unreadable files
    input_files: list = field(default_factory=list)  # files whose content identifies the data
    notes: list = field(default_factory=list)        # human-readable remarks (e.g. an empty class folder)


def parse(source: str) -> tuple[str, str]:
    """Split ``kind:arg``; ``digits`` has no argument."""
    kind, _, arg = source.partition(":")
    kind = kind.strip().lower()
    if kind not in LOADERS:
        raise ConfigError(f"data.source: unknown source {source!r} "
                          f"(use digits, tfds:<name>, idx:<dir> or folder:<dir>)")
    if kind != "digits" and not arg.strip():
        raise ConfigError(f"data.source: {kind}: needs an argument, e.g. {kind}:{'mnist' if kind == 'tfds' else '<dir>'}")
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
}


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
        if kind in ("idx", "folder"):
            root = source_path(arg)
            listing = sorted((str(p.relative_to(root)), st.st_size, int(st.st_mtime))
                             for p, st in ((p, p.stat()) for p in root.rglob("*") if p.is_file())
                             ) if root.is_dir() else None
            out[key] = {"path": str(root.resolve()), "files": sha256_json(listing)}
        elif kind == "tfds":  # a prepared copy appearing later (after an offline fallback) re-ingests
            out[key] = {"name": arg, "dir": data_cfg.tfds_dir, "prepared": _tfds_prepared(arg, data_cfg)}
        else:
            from importlib import metadata
            out[key] = {"scikit-learn": metadata.version("scikit-learn")}
    return out
