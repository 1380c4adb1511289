"""``yolo:<dir>``: images with YOLO box labels, for object detection (``task: detect``).

Layouts (``classes.txt`` always at the top of ``<dir>``)::

    <dir>/classes.txt                       class names, one per line: line i names class i (required)
    <dir>/x.jpg + <dir>/x.txt               the label file beside its image (same path, .txt), or
    <dir>/images/x.jpg + <dir>/labels/x.txt the Ultralytics layout (same relative path under labels/)
    <dir>/{train,val,test}/...              the user's own splits, each in one of the two layouts above
    <dir>/images/{train,val,test}/ + <dir>/labels/{train,val,test}/   Ultralytics' own split layout

Split folders are named as for ``folder:`` (``validation`` counts as ``val``; a missing split is carved out
of train; a top level mixing split folders with other folders is an error). Image files are those ``folder:``
reads (:data:`pipeline.sources.folder.EXTENSIONS`, nested folders too, hidden files skipped); ingest decodes
them with :func:`pipeline.sources.folder.decode`.

A label file holds one object per line, ``class cx cy w h``: an integer class id, then the box centre and size
as fractions of the image width and height. Policies:

- each bad line stops the source with one error naming the label file and line: not 5 numbers, a class id
  that is not an integer or that ``classes.txt`` does not name, ``cx``/``cy`` outside [0, 1], ``w``/``h``
  not in (0, 1], a box reaching outside the image by more than 0.001;
- an image without label file, or with an empty one, is background only (no object): allowed and counted in
  the notes; a label file without image is counted in the notes and ignored;
- ``data.resize: pad`` is refused: normalized boxes only stay in place when images are stretched;
- the split's labels (for stratified splitting) are each image's dominant class: the class with most objects
  (ties: the lowest index), 0 for a background-only image.

:func:`pair_layout` and :func:`read_classes` are shared with ``masks:`` (:mod:`pipeline.sources.masks`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError, PipelineError
from pipeline.sources import SourceData, check_class_name, list_files, source_path
from pipeline.sources.folder import EXTENSIONS, SPLIT_DIRS, _visible_dirs, ignored_summary, split_layout

TOLERANCE = 1e-3        # a box may reach this far outside 0..1 (rounding in label files)
COLOUR = re.compile(r"#[0-9a-fA-F]{6}")


def refuse_pad(data_cfg, source: str) -> None:
    if data_cfg.resize == "pad":
        raise ConfigError(f"data.resize: pad keeps no box or mask in place; use resize with data.source "
                          f"{source} (detection and segmentation stretch their images)")


def _split_folders(root: Path, where: str, subdirs: list) -> dict:
    """{split: folder} of the split folders among ``subdirs`` (the rules of folder:)."""
    return split_layout(subdirs, where, "train, val, validation and test name splits")


def pair_layout(root: Path, where: str, second: str, beside: bool) -> dict:
    """{split: (image folder, folder of the ``second`` files, or None when they lie beside the images)}.

    ``second`` is ``labels`` (yolo) or ``masks``; ``beside`` allows the label-beside-image layout."""
    if not root.exists():
        raise PipelineError(f"{where}: no such directory")
    if not root.is_dir():
        raise PipelineError(f"{where}: not a directory")
    expected = (f"expected <dir>/images/ and <dir>/{second}/, or train/images/ and train/{second}/ "
                f"(val/, test/)")

    def one(folder: Path, rel: str):
        if (folder / "images").is_dir():
            return folder / "images", folder / second
        if beside:
            return folder, None
        raise PipelineError(f"{where}: no {rel}images/ folder ({expected})")

    subdirs = _visible_dirs(root)
    if any(d.name.lower() in SPLIT_DIRS for d in subdirs):
        return {split: one(d, f"{d.name}/") for split, d in _split_folders(root, where, subdirs).items()}
    images = root / "images"
    if images.is_dir():
        inner = _visible_dirs(images)
        if inner and any(d.name.lower() in SPLIT_DIRS for d in inner):  # images/train/ + labels/train/
            splits = _split_folders(root, f"{where}: images/", inner)
            return {split: (d, root / second / d.name) for split, d in splits.items()}
    return {"all": one(root, "")}


def read_classes(path: Path, where: str, colours: bool = False) -> tuple[list, list | None]:
    """(class names, [[r, g, b], ...] or None) from a classes.txt: line i names class i; with ``colours`` a
    line may end with ``#rrggbb`` (all lines or none). Blank lines at the end are ignored."""
    rel = f"{where}: {path.name}"
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise PipelineError(f"{rel}: not UTF-8 text") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names, palette = [], []
    for i, line in enumerate(lines, 1):
        text = line.strip()
        colour = None
        if colours:
            head, _, tail = text.rpartition(" ")
            if COLOUR.fullmatch(tail.strip()) and head.strip():
                text, colour = head.strip(), tail.strip()
            elif COLOUR.fullmatch(text):
                raise PipelineError(f"{rel} line {i}: a colour without a class name")
        names.append(check_class_name(text, f"{rel} line {i}"))
        palette.append(None if colour is None else [int(colour[k:k + 2], 16) for k in (1, 3, 5)])
    if not names:
        raise PipelineError(f"{rel}: names no class")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PipelineError(f"{rel}: names {dup!r} twice")
    given = [p is not None for p in palette]
    if any(given) and not all(given):
        raise PipelineError(f"{rel} line {given.index(False) + 1}: no #rrggbb colour while other lines give "
                            "one; give every class a colour or none")
    return names, (palette if any(given) else None)


def _label_error(where: str, rel: str, line: int, text: str) -> PipelineError:
    return PipelineError(f"{where}: {rel} line {line}: {text}")


def read_labels(path: Path, rel: str, count: int, where: str) -> np.ndarray:
    """float32 [n, 5] rows (class, cx, cy, w, h) of one label file, checked (module doc)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PipelineError(f"{where}: {rel}: not UTF-8 text") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        values = []
        for field in fields:
            try:
                values.append(float(field))
            except ValueError:
                values = None
                break
        if values is None or len(values) != 5:
            hint = " (polygon labels are not supported)" if values and len(values) > 5 else ""
            raise _label_error(where, rel, number, f"malformed line {line.strip()[:60]!r}: expected 5 "
                                                   f"numbers 'class cx cy w h'{hint}")
        cls, cx, cy, w, h = values
        if not math.isfinite(cls) or not cls.is_integer():
            raise _label_error(where, rel, number, f"class id {fields[0]!r} is not an integer")
        if not 0 <= cls < count:
            raise _label_error(where, rel, number, f"unknown class id {int(cls)} (classes.txt names {count})")
        for name, v in (("cx", cx), ("cy", cy)):
            if not 0 <= v <= 1:
                raise _label_error(where, rel, number, f"{name} {fields[1 if name == 'cx' else 2]} outside "
                                                       "[0, 1] (coordinates are fractions of the image size)")
        for name, v in (("w", w), ("h", h)):
            if not 0 < v <= 1:
                raise _label_error(where, rel, number, f"{name} {fields[3 if name == 'w' else 4]} not in "
                                                       "(0, 1]")
        x0, x1, y0, y1 = cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2
        if min(x0, y0) < -TOLERANCE or max(x1, y1) > 1 + TOLERANCE:
            raise _label_error(where, rel, number, f"box outside the image (x {x0:.4f}..{x1:.4f}, "
                                                   f"y {y0:.4f}..{y1:.4f}; the image spans 0..1)")
        rows.append(values)
    return np.asarray(rows, np.float32).reshape(-1, 5)


def dominant_class(objects: np.ndarray, count: int) -> int:
    from pipeline.scenes import dominant

    return dominant(objects[:, 0].astype(np.int64), count)


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def load_yolo(arg: str, data_cfg) -> SourceData:
    """List the images and read every label file (see the module doc for the layouts and policies)."""
    from pipeline.scenes import object_array

    root = source_path(arg)
    where = f"data.source yolo:{root}"
    refuse_pad(data_cfg, f"yolo:{root}")
    layout = pair_layout(root, where, "labels", beside=True)
    classes_file = root / "classes.txt"
    if not classes_file.is_file():
        raise PipelineError(f"{where}: no classes.txt (one class name per line: line 1 names class 0, line 2 "
                            "class 1, ...)")
    names, _ = read_classes(classes_file, where)
    splits, targets, ignored = {}, {}, []
    no_file = empty = orphans = 0
    for split, (image_dir, label_dir) in layout.items():
        images, other = list_files(image_dir, EXTENSIONS)
        label_files = {p for p in other if p.suffix.lower() == ".txt" and p != classes_file}
        ignored += [p for p in other if p.suffix.lower() != ".txt"]
        if label_dir is not None and label_dir.is_dir():
            found, extra = list_files(label_dir, EXTENSIONS)
            label_files = {p for p in extra if p.suffix.lower() == ".txt"}
            ignored += found + [p for p in extra if p.suffix.lower() != ".txt"]
        claimed = {}
        paths, objects, labels = [], [], []
        for image in images:
            rel_image = image.relative_to(image_dir)
            label = (label_dir / rel_image if label_dir is not None else image).with_suffix(".txt")
            if label in claimed:
                raise PipelineError(f"{where}: images {claimed[label].relative_to(root)} and "
                                    f"{image.relative_to(root)} share the label file "
                                    f"{label.relative_to(root)}; keep one")
            claimed[label] = image
            if label.is_file():
                boxes = read_labels(label, str(label.relative_to(root)), len(names), where)
                empty += not len(boxes)
            else:
                boxes = np.zeros((0, 5), np.float32)
                no_file += 1
            paths.append(str(image))
            objects.append(boxes)
            labels.append(dominant_class(boxes, len(names)))
        orphans += len(label_files - set(claimed))
        if paths:
            splits[split] = (np.array(paths, dtype=object), np.asarray(labels, np.int64))
            targets[split] = object_array(objects)
    if not splits:
        raise PipelineError(f"{where}: no image files found")
    if "train" in layout and "train" not in splits:
        raise PipelineError(f"{where}: train/ holds no image file")
    notes = []
    if no_file:
        notes.append(f"yolo:{root}: {_plural(no_file, 'image has', 'images have')} no label file: background "
                     "only")
    if empty:
        notes.append(f"yolo:{root}: {_plural(empty, 'image has', 'images have')} an empty label file: "
                     "background only")
    if orphans:
        notes.append(f"yolo:{root}: {_plural(orphans, 'label file has', 'label files have')} no image; "
                     "ignored")
    if ignored:
        notes.append(f"yolo:{root}: {len(ignored)} other file(s) ignored")
    n = sum(len(y) for _, y in splits.values())
    count = sum(len(o) for t in targets.values() for o in t)
    per_split = ", ".join(f"{len(v[1]):,} {k}" for k, v in splits.items() if k != "all")
    return SourceData(splits=splits, class_names=names, notes=notes, files=True, task="detect",
                      targets=targets, ignored=ignored_summary(ignored),
                      origin=f"YOLO image folder {root} ({len(names)} classes; {n:,} images"
                             f"{' (' + per_split + ')' if per_split else ''}, {count:,} objects)")
