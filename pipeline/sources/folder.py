"""``folder:<dir>``: a user's own images, one subfolder per class.

Two layouts are recognised::

    <dir>/<class>/*.jpg                     one pool; the pipeline carves train/val/test out of it
    <dir>/{train,val,test}/<class>/*.jpg    the user's own splits (``validation`` counts as ``val``;
                                            any missing split is carved out of train)

Files ending in .jpg, .jpeg, .png, .bmp or .gif (any case, also in nested folders of a class) are images;
other files and hidden files are ignored (counted in a note). Every image is decoded with
:func:`pipeline.imaging.decode_file` (grayscale, RGB and RGBA converted to ``data.channels``, RGBA composited
on black, GIF: first frame) and resized with :func:`pipeline.imaging.resize_one` by ``data.resize``:
``resize`` stretches to ``data.image_size``, ``pad`` keeps the aspect ratio and pads with black. With
``image_size: []`` all images must already share one size.

Policies:

- an unreadable file (corrupt, truncated, zero bytes, not an image) is listed in ``SourceData.skipped`` with
  the reason and left out, never a crash;
- a class folder with no readable image is left out of the class list, with a note; fewer than two classes
  left is an error;
- with split folders, the class list is the union over the splits; a class with images in val/test but none
  in train is an error (the model could never learn it).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.sources import SourceData, source_path

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
SPLIT_DIRS = {"train": "train", "val": "val", "validation": "val", "test": "test"}


def _visible_dirs(path: Path) -> list:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _layout(root: Path) -> dict:
    """{split name: folder holding class folders}; split name 'all' for the single-pool layout."""
    if not root.exists():
        raise PipelineError(f"data.source folder:{root}: no such directory")
    if not root.is_dir():
        raise PipelineError(f"data.source folder:{root}: not a directory")
    subdirs = _visible_dirs(root)
    if not subdirs:
        raise PipelineError(f"data.source folder:{root}: no class subfolders (expected "
                            "<dir>/<class>/<images> or <dir>/train/<class>/<images>)")
    split_dirs = {SPLIT_DIRS[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_DIRS}
    if not split_dirs:
        return {"all": root}
    if "train" not in split_dirs:
        raise PipelineError(f"data.source folder:{root}: has {', '.join(sorted(split_dirs))}/ but no train/")
    return split_dirs


def _list_files(class_dir: Path) -> tuple[list, int]:
    """(image files sorted by path, number of other files ignored)."""
    images, ignored = [], 0
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in EXTENSIONS:
                images.append(Path(dirpath) / name)
            else:
                ignored += 1
    return sorted(images), ignored


def _decode(path: Path, data_cfg):
    """(image or None, reason): decode and resize one file; unreadable files give a reason, not an error."""
    from pipeline.imaging import decode_file, resize_one

    try:
        if path.stat().st_size == 0:
            return None, "empty file (0 bytes)"
        image = decode_file(path, data_cfg.channels)
        return resize_one(image, data_cfg.image_size, data_cfg.resize), ""
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[0] if text else 'unreadable'}"


def _read_split(split_dir: Path, data_cfg, pool: ThreadPoolExecutor) -> tuple[dict, list, int]:
    """({class name: [images]}, skipped entries, ignored file count) of one folder of class folders."""
    per_class, skipped, ignored = {}, [], 0
    for class_dir in _visible_dirs(split_dir):
        files, n_other = _list_files(class_dir)
        ignored += n_other
        images = []
        for path, (image, reason) in zip(files, pool.map(lambda p: _decode(p, data_cfg), files)):
            if image is None:
                skipped.append({"path": str(path), "reason": reason})
            else:
                images.append(image)
        per_class[class_dir.name] = images
    return per_class, skipped, ignored


def _class_list(root: Path, read: dict) -> tuple[list, list]:
    """Classes with at least one readable image (sorted) and notes about the empty ones."""
    names = sorted({c for per_class in read.values() for c in per_class})
    empty = [c for c in names if not any(per_class.get(c) for per_class in read.values())]
    notes = [f"folder:{root}: class folder {c!r} holds no readable image; left out of the classes"
             for c in empty]
    classes = [c for c in names if c not in empty]
    if "train" in read:
        untrained = [c for c in classes if not read["train"].get(c)]
        if untrained:
            raise PipelineError(f"data.source folder:{root}: class(es) {', '.join(untrained)} have images in "
                                "val/test but none in train/")
    if len(classes) < 2:
        found = f"{len(classes)}{' (' + classes[0] + ')' if classes else ''}"
        raise PipelineError(f"data.source folder:{root}: needs at least 2 class folders with readable "
                            f"images, found {found}")
    return classes, notes


def _stack(root: Path, read: dict, classes: list) -> dict:
    """{split: (uint8 [N, H, W, C], int64 [N])}; all images must share one size."""
    first = None
    splits = {}
    for split, per_class in read.items():
        xs, ys = [], []
        for label, name in enumerate(classes):
            for image in per_class.get(name, []):
                if first is None:
                    first = image.shape
                elif image.shape != first:
                    raise PipelineError(f"data.source folder:{root}: images differ in size "
                                        f"({first[0]}x{first[1]} and {image.shape[0]}x{image.shape[1]}); "
                                        "set data.image_size: [height, width]")
                xs.append(image)
                ys.append(label)
        if xs:
            splits[split] = (np.stack(xs), np.asarray(ys, np.int64))
    return splits


def load_folder(arg: str, data_cfg) -> SourceData:
    """Decode every image under ``arg`` into uint8 NHWC arrays per split (see the module doc for policies)."""
    root = source_path(arg)
    layout = _layout(root)
    read, skipped, ignored = {}, [], 0
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for split, split_dir in layout.items():
            read[split], split_skipped, split_ignored = _read_split(split_dir, data_cfg, pool)
            skipped += split_skipped
            ignored += split_ignored
    classes, notes = _class_list(root, read)
    splits = _stack(root, read, classes)
    if ignored:
        notes.append(f"folder:{root}: {ignored} file(s) without an image extension ignored")
    if skipped:
        notes.append(f"folder:{root}: {len(skipped)} unreadable file(s) skipped (see skipped)")
    counts = ", ".join(f"{len(v[1]):,} {k}" for k, v in splits.items())
    return SourceData(splits=splits, class_names=classes, skipped=skipped, notes=notes,
                      origin=f"image folder {root} ({len(classes)} classes; {counts})")
