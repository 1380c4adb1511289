"""``csv:<file>``: a list of labelled image files, the layout of many public datasets.

One row per image, ``path,label``::

    path,label                 <- optional header (the two names in either order)
    images/0001.jpg,cat
    images/0002.jpg,dog
    "images/with, comma.png",dog

Paths are relative to the CSV file's folder (absolute paths are taken as they are). Fields may be quoted (RFC
4180); blank lines are skipped; the file is UTF-8 (a byte-order mark is allowed). The classes are the labels,
sorted (numerically when every label is an integer); each must be one line of UTF-8
(:func:`pipeline.sources.check_class_name`). The CSV defines no splits: train, val and test are carved out
stratified and seeded, as for a folder of class folders, in the same order (class, then path), so the same
images listed by a CSV or laid out in class folders split identically.

Errors name the row: a missing file, a listed folder, an unknown header column, a row with more or fewer than
two columns, an empty path or label, a file listed twice. Files that exist but Pillow cannot read are skipped
at ingest and reported (with their extension) in ``preflight.json``.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sources import SourceData, check_class_name, path_key, sort_names, source_path

COLUMNS = ("path", "label")


def _text(path: Path, where: str) -> str:
    if not path.exists():
        raise PipelineError(f"{where}: no such file")
    if not path.is_file():
        raise PipelineError(f"{where}: not a file")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        row = raw[:exc.start].count(b"\n") + 1
        raise PipelineError(f"{where}: row {row}: not UTF-8 text (byte {raw[exc.start]:#04x}); "
                            "save the file as UTF-8") from None


def _header(fields: list) -> tuple | None:
    """Column order when the row is a header (it names path or label), else None."""
    names = [f.strip().lower() for f in fields]
    if not any(n in COLUMNS for n in names):
        return None
    return tuple(names)


def rows(path: Path, where: str) -> list:
    """[(row number, path text, label)] of the CSV, checked column by column (not yet file by file)."""
    reader = csv.reader(io.StringIO(_text(path, where), newline=""))
    order, first, out = COLUMNS, True, []
    try:
        for fields in reader:
            n = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            header = _header(fields) if first else None
            first = False
            if header is not None:  # only the first non-blank row may name the columns
                unknown = [h for h in header if h not in COLUMNS]
                if unknown:
                    raise PipelineError(f"{where}: row {n}: unknown column {unknown[0]!r} in the header "
                                        "(the columns are path,label)")
                if sorted(header) != sorted(COLUMNS):
                    raise PipelineError(f"{where}: row {n}: the header names {','.join(header)}; "
                                        "expected path,label")
                order = header
                continue
            if len(fields) != 2:
                raise PipelineError(f"{where}: row {n}: {len(fields)} column(s), expected 2 (path,label)")
            values = dict(zip(order, (f.strip() for f in fields)))
            if not values["path"]:
                raise PipelineError(f"{where}: row {n}: empty path")
            if not values["label"]:
                raise PipelineError(f"{where}: row {n}: empty label")
            out.append((n, values["path"], values["label"]))
    except csv.Error as exc:
        raise PipelineError(f"{where}: row {reader.line_num}: {exc}") from None
    return out


def load_csv(arg: str, data_cfg) -> SourceData:
    """List the labelled files of the CSV at ``arg`` (see the module doc for the format and the errors)."""
    path = source_path(arg)
    where = f"data.source csv:{path}"
    base = path.parent
    entries, first_seen = [], {}
    for n, text, label in rows(path, where):
        check_class_name(label, f"{where}: row {n}", "label")
        file = base / text
        if not file.exists():
            raise PipelineError(f"{where}: row {n}: {text}: no such file")
        if not file.is_file():
            raise PipelineError(f"{where}: row {n}: {text}: not a file")
        key = str(file.resolve())
        if key in first_seen:
            raise PipelineError(f"{where}: row {n}: {text} is already listed in row {first_seen[key]}")
        first_seen[key] = n
        entries.append((label, path_key(text), str(file)))
    classes = sort_names({label for label, _, _ in entries})
    if len(classes) < 2:
        found = f"{len(classes)}{' (' + classes[0] + ')' if classes else ''}"
        raise PipelineError(f"{where}: needs at least 2 labels, found {found}")
    index = {name: i for i, name in enumerate(classes)}
    entries.sort(key=lambda e: (index[e[0]], e[1]))
    paths = np.array([e[2] for e in entries], dtype=object)
    labels = np.asarray([index[e[0]] for e in entries], np.int64)
    return SourceData(splits={"all": (paths, labels)}, class_names=classes, files=True, input_files=[path],
                      origin=f"CSV {path} ({len(classes)} classes; {len(entries):,} files)")


def identity(arg: str) -> dict:
    """The CSV's content and the size and modification time of every file it lists: ingest reruns when any
    of them changes. A CSV that cannot be read is identified by its bytes alone (ingest then reports why)."""
    from pipeline.artifacts import sha256_file, sha256_json

    path = source_path(arg)
    if not path.is_file():
        return {"path": str(path), "exists": False}
    out = {"path": str(path.resolve()), "sha256": sha256_file(path)}
    try:
        listing = []
        for _, text, _ in rows(path, str(path)):
            file = path.parent / text
            st = file.stat() if file.is_file() else None
            listing.append((text, st.st_size if st else None, int(st.st_mtime) if st else None))
        out["files"] = sha256_json(listing)
    except PipelineError:
        out["files"] = None
    return out
