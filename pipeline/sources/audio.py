"""``audio:<dir>``: spoken keywords or other short sounds, one subfolder of ``.wav`` clips per class.

The layouts are those of ``folder:`` (``<dir>/<class>/*.wav``, or ``<dir>/{train,val,test}/<class>/*.wav``).
Every clip is turned into a uint8 log-mel spectrogram image [frames, mels, 1] by
:func:`pipeline.audio.load_features` with the ``data.audio`` settings; the same function runs on the device.
A spectrogram is 2 KB (49 x 40 at the defaults), so the source holds them in memory and ingest streams them
to the shards as it does any array source.

Policies (as for images): a clip that cannot be used (corrupt, empty, not PCM, or at another sample rate
than ``data.audio.sample_rate``: refused, not resampled) is listed in ``preflight.json`` with the reason and
left out; several channels are averaged to mono; longer clips keep their first ``clip_seconds``, shorter ones
are padded with silence; a class none of whose clips can be used is an error naming the first reason; other
files are counted by extension and ignored.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, PipelineError
from pipeline.sources import SourceData, check_class_name, list_files, sort_names, source_path

EXTENSIONS = {".wav", ".wave"}


def settings(given: dict | None, where: str = "data.audio") -> dict:
    """``pipeline.audio.settings`` with a bad value as a one-line ConfigError."""
    from pipeline import audio

    try:
        return audio.settings(given, where)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _listing(root: Path) -> tuple[dict, list]:
    """{split: {class: [clips]}}, ignored files."""
    from pipeline.sources.folder import _layout, _visible_dirs

    listed, ignored = {}, []
    for split, split_dir in _layout(root).items():
        per_class = {}
        for class_dir in _visible_dirs(split_dir):
            check_class_name(class_dir.name, f"data.source audio:{root}", "class folder")
            per_class[class_dir.name], other = list_files(class_dir, EXTENSIONS)
            ignored += other
        listed[split] = per_class
    return listed, ignored


def decode(path, s: dict):
    """(spectrogram or None, reason): one clip; a clip that cannot be used gives a reason, not an error."""
    from pipeline.audio import load_features

    try:
        if os.stat(path).st_size == 0:
            return None, "empty file (0 bytes)"
        return load_features(path, s), ""
    except (OSError, ValueError) as exc:
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[0] if text else 'unreadable'}"


def load_audio(arg: str, data_cfg) -> SourceData:
    from pipeline import audio
    from pipeline.progress import track
    from pipeline.sources.folder import ignored_summary

    s = settings(data_cfg.audio)
    root = source_path(arg)
    where = f"data.source audio:{root}"
    listed, ignored = _listing(root)
    names = sort_names({c for per_class in listed.values() for c, clips in per_class.items() if clips})
    if len(names) < 2:
        raise PipelineError(f"{where}: needs at least 2 class folders with .wav clips, found {len(names)}")
    if "train" in listed:
        untrained = [c for c in names if not listed["train"].get(c)]
        if untrained:
            raise PipelineError(f"{where}: class(es) {', '.join(untrained)} have clips in val/test but none "
                                "in train/")
    shape = audio.shape(s)
    total = sum(len(clips) for per_class in listed.values() for clips in per_class.values())
    splits, skipped, first_bad, readable = {}, [], {}, set()
    with track(total, "audio features", unit="clip") as advance:
        for split, per_class in listed.items():
            xs, ys = [], []
            for label, name in enumerate(names):
                for path in per_class.get(name, []):
                    image, reason = decode(path, s)
                    advance(1)
                    if image is None:
                        skipped.append({"path": str(path), "reason": reason})
                        first_bad.setdefault(name, skipped[-1])
                        continue
                    xs.append(image)
                    ys.append(label)
                    readable.add(name)
            if xs:
                splits[split] = (np.stack(xs), np.asarray(ys, np.int64))
    dead = [c for c in names if c not in readable]
    if dead:
        bad = first_bad[dead[0]]
        raise PipelineError(f"{where}: no clip of class {dead[0]!r} could be used (e.g. {bad['path']}: "
                            f"{bad['reason']}); fix or remove its files")
    notes = []
    if ignored:
        notes.append(f"audio:{root}: {len(ignored)} file(s) that are not .wav ignored")
    n = sum(len(y) for _, y in splits.values())
    return SourceData(splits=splits, class_names=names, skipped=skipped, notes=notes,
                      ignored=ignored_summary(ignored), encoding=audio.encoding(s),
                      origin=f"audio folder {root} ({len(names)} classes; {n:,} clips as "
                             f"{shape[0]}x{shape[1]} log-mel images)")


def identity(arg: str, data_cfg) -> dict:
    """Path, size and modification time of every file (as for image folders)."""
    from pipeline.artifacts import sha256_json

    root = source_path(arg)
    listing = sorted((str(p.relative_to(root)), st.st_size, int(st.st_mtime))
                     for p, st in ((p, p.stat()) for p in root.rglob("*") if p.is_file())
                     ) if root.is_dir() else None
    return {"path": str(root.resolve()), "files": sha256_json(listing)}
