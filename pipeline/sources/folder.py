"""``folder:<dir>``: a user's own images, one subfolder per class.

Two layouts are recognised::

    <dir>/<class>/*.jpg                     one pool; the pipeline carves train/val/test out of it
    <dir>/{train,val,test}/<class>/*.jpg    the user's own splits (``validation`` counts as ``val``;
                                            any missing split is carved out of train)

The rule between them: at the top level, ``train``, ``val``, ``validation`` and ``test`` (any case) always
name splits. A top level holding only split folders is the split layout; one mixing split folders with other
folders is an error naming them (a class called ``test`` goes one level down: ``<dir>/train/test/``), so a
class name never switches the layout silently.

Listing only: files ending in .jpg, .jpeg, .png, .bmp, .gif, .webp, .tif or .tiff (any case, also in nested
folders of a class) are images; hidden files are skipped; other files are formats Pillow does not read and are
counted by extension (``preflight.json``). Ingest decodes the listed files in worker processes with
:func:`decode` (grayscale, RGB and RGBA converted to ``data.channels``, RGBA composited on black, GIF: first
frame) and resizes them with :func:`pipeline.imaging.resize_one` by ``data.resize``. With ``image_size: []``
all images must already share one size.

Policies:

- class folder names must be one line of UTF-8 (:func:`pipeline.sources.check_class_name`); others stop
  ingest naming the folder;
- an unreadable file (corrupt, truncated, zero bytes, not an image) is listed in ``preflight.json`` with the
  reason and left out, never a crash;
- a class folder with no image file is left out of the class list, with a note; fewer than two classes left
  is an error;
- with split folders, the class list is the union over the splits; a class with images in val/test but none
  in train is an error (the model could never learn it).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sources import SourceData, check_class_name, list_files, sort_names, source_path

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def _visible_dirs(path: Path) -> list:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _has_images(path: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in EXTENSIONS for p in path.iterdir())


def _layout(root: Path) -> dict:
    """{split name: folder holding class folders}; split name 'all' for the single-pool layout."""
    where = f"data.source folder:{root}"
    if not root.exists():
        raise PipelineError(f"{where}: no such directory")
    if not root.is_dir():
        raise PipelineError(f"{where}: not a directory")
    subdirs = _visible_dirs(root)
    if not subdirs:
        raise PipelineError(f"{where}: no class subfolders (expected "
                            "<dir>/<class>/<images> or <dir>/train/<class>/<images>)")
    if not any(d.name.lower() in SPLIT_DIRS for d in subdirs):
        return {"all": root}

    def classes_inside(d: Path) -> None:
        if not _visible_dirs(d) and _has_images(d):
            raise PipelineError(f"{where}: {d.name}/ holds images but no class folders; at the top level it "
                                f"names a split: put its images in {d.name}/<class>/ (or the classes in "
                                f"train/{d.name}/ when {d.name!r} is a class)")

    return split_layout(subdirs, where, "train, val, validation and test at the top level always name "
                        "splits: put the classes under train/ (val/, test/), or move a class named so one "
                        "level down (train/test/)", classes_inside)


def split_layout(subdirs: list, where: str, hint: str, check=None) -> dict:
    """{split: folder} of split folders (``train``, ``val``/``validation``, ``test``, any case): none of
    ``subdirs`` may be another folder (``hint`` says what to do), a split appears once, train is there;
    ``check(folder)`` may refuse a split folder's content. Also the layout of ``yolo:`` and ``masks:``."""
    splits = [d for d in subdirs if d.name.lower() in SPLIT_DIRS]
    others = [d.name for d in subdirs if d not in splits]
    if others:
        raise PipelineError(
            f"{where}: mixes split folder(s) {', '.join(d.name + '/' for d in splits)} with other folder(s) "
            f"{', '.join(ascii(n)[1:-1] + '/' for n in others[:3])}{' ...' if len(others) > 3 else ''}; "
            f"{hint}")
    layout = {}
    for d in splits:
        name = SPLIT_DIRS[d.name.lower()]
        if name in layout:
            raise PipelineError(f"{where}: has both {layout[name].name}/ and {d.name}/; keep one")
        if check is not None:
            check(d)
        layout[name] = d
    if "train" not in layout:
        raise PipelineError(f"{where}: has {', '.join(sorted(layout))}/ but no train/")
    return layout


def decode(path, data_cfg):
    """(image or None, reason): decode and resize one file; unreadable files give a reason, not an error."""
    from pipeline.imaging import decode_file, resize_one

    try:
        if os.stat(path).st_size == 0:
            return None, "empty file (0 bytes)"
        image = decode_file(path, data_cfg.channels)
        return resize_one(image, data_cfg.image_size, data_cfg.resize), ""
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[0] if text else 'unreadable'}"


def _list_split(root: Path, split_dir: Path) -> tuple[dict, list]:
    """({class name: [image paths]}, ignored files) of one folder of class folders."""
    per_class, ignored = {}, []
    for class_dir in _visible_dirs(split_dir):
        check_class_name(class_dir.name, f"data.source folder:{root}", "class folder")
        files, other = list_files(class_dir, EXTENSIONS)
        ignored += other
        per_class[class_dir.name] = files
    return per_class, ignored


def class_list(where: str, listed: dict) -> tuple[list, list]:
    """Classes with at least one image file (sorted) and notes about the empty ones."""
    names = sort_names({c for per_class in listed.values() for c in per_class})
    empty = [c for c in names if not any(per_class.get(c) for per_class in listed.values())]
    notes = [f"{where}: class folder {c!r} holds no image file; left out of the classes" for c in empty]
    classes = [c for c in names if c not in empty]
    if "train" in listed:
        untrained = [c for c in classes if not listed["train"].get(c)]
        if untrained:
            raise PipelineError(f"data.source {where}: class(es) {', '.join(untrained)} have images in "
                                "val/test but none in train/")
    if len(classes) < 2:
        found = f"{len(classes)}{' (' + classes[0] + ')' if classes else ''}"
        raise PipelineError(f"data.source {where}: needs at least 2 class folders with images, found {found}")
    return classes, notes


def as_splits(listed: dict, classes: list) -> dict:
    """{split: (paths object [N], int64 labels [N])}, ordered by class, then path."""
    splits = {}
    for split, per_class in listed.items():
        paths, labels = [], []
        for label, name in enumerate(classes):
            files = per_class.get(name, [])
            paths += [str(p) for p in files]
            labels += [label] * len(files)
        if paths:
            splits[split] = (np.array(paths, dtype=object), np.asarray(labels, np.int64))
    return splits


def ignored_summary(files: list) -> dict:
    from pipeline.preflight import by_extension

    return {"count": len(files), "by_extension": by_extension(files),
            "examples": [str(f) for f in files[:5]]}


def load_folder(arg: str, data_cfg) -> SourceData:
    """List every image under ``arg`` per split and class (see the module doc for the layout and policies)."""
    root = source_path(arg)
    layout = _layout(root)
    listed, ignored = {}, []
    for split, split_dir in layout.items():
        listed[split], other = _list_split(root, split_dir)
        ignored += other
    classes, notes = class_list(f"folder:{root}", listed)
    splits = as_splits(listed, classes)
    if ignored:
        summary = ignored_summary(ignored)
        exts = ", ".join(f"{e or '(none)'} {n}" for e, n in summary["by_extension"].items())
        notes.append(f"folder:{root}: {len(ignored)} file(s) in formats Pillow does not read ignored "
                     f"({exts})")
    counts = ", ".join(f"{len(v[1]):,} {k}" for k, v in splits.items() if k != "all")
    counts = counts or f"{len(splits['all'][1]):,}"
    return SourceData(splits=splits, class_names=classes, notes=notes, files=True,
                      ignored=ignored_summary(ignored),
                      origin=f"image folder {root} ({len(classes)} classes; {counts} files)")
