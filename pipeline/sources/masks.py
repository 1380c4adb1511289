"""``masks:<dir>``: images with per-pixel class masks, for semantic segmentation (``task: segment``).

Layouts::

    <dir>/images/x.jpg + <dir>/masks/x.png  a mask per image: same relative path under masks/, always .png
    <dir>/{train,val,test}/images/ + .../masks/   the user's own splits (named as for folder:)
    <dir>/images/{train,val,test}/ + <dir>/masks/{train,val,test}/
    <dir>/classes.txt                       optional: line i names class i, ``name`` or ``name #rrggbb``

A mask is a single-channel PNG whose pixel values are class indices: mode ``L`` (8-bit grey), ``P`` (a palette
image: its indices count, not its colours), ``1`` or 16-bit grey with values below 256. Class 0 is the
background. Without ``classes.txt`` the classes are ``background, class1, ..., classK`` with K the largest
index found. With colours in ``classes.txt`` (every line or none) they are recorded in the source's
``encoding`` as ``{"kind": "segment", "palette": [[r, g, b], ...]}`` for figures; otherwise ``encoding`` is
None.

Masks are read when the source is listed (images only their header, for their size, upright by their EXIF
orientation as ingest decodes them) and brought to ``data.image_size`` when set with nearest-neighbour
resampling (a class index is never blended); images are decoded by ingest with
:func:`pipeline.sources.folder.decode`. Policies, each a one-line error naming the file:

- an image without a mask, a mask without an image, two images sharing a mask (x.jpg and x.png);
- a mask of another size than its image (``mask 64x48, image 64x64``), a mask that is not a single-channel
  index image (RGB, RGBA, grey with alpha), an unreadable mask, a class index that ``classes.txt`` does not
  name (``class index 9 out of range (classes.txt names 4)``);
- ``data.resize: pad`` (only a stretch keeps masks aligned with their images);
- an image whose header cannot be read is listed in ``preflight.json`` and left out with its mask.

The split's labels (for stratified splitting) are each image's dominant class: the most frequent class among
its non-background pixels, 0 for an all-background mask.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.sources import SourceData, list_files, source_path
from pipeline.sources.folder import EXTENSIONS, ignored_summary
from pipeline.sources.yolo import pair_layout, read_classes, refuse_pad

INDEX_MODES = {"L", "P", "1", "I;16", "I;16B", "I;16L", "I"}
ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as ingest decodes it (upright by its EXIF orientation), from its header."""
    from pipeline.imaging import _open_checked

    with _open_checked(path) as pil:
        w, h = pil.size
        try:
            turned = pil.getexif().get(0x0112) in ROTATED
        except Exception:  # a broken EXIF block: ingest's exif_transpose ignores it too
            turned = False
    return (h, w) if turned else (w, h)


def read_mask(path: Path, rel: str, where: str) -> np.ndarray:
    """int64 [H, W] class indices of one mask PNG."""
    try:
        with Image.open(path) as pil:
            pil.load()
            mode = pil.mode
            if mode not in INDEX_MODES:
                raise PipelineError(f"{where}: {rel} is a {mode} image; a mask is a single-channel PNG of "
                                    "class indices (mode L or P)")
            return np.asarray(pil).astype(np.int64)
    except PipelineError:
        raise
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PipelineError(f"{where}: {rel}: cannot read the mask ({reason})") from None


def resize_mask(mask: np.ndarray, size) -> np.ndarray:
    """uint8 [h, w] mask brought to ``size`` = (h, w) by nearest neighbour (indices are never blended)."""
    if not size or tuple(mask.shape) == tuple(size):
        return mask
    h, w = int(size[0]), int(size[1])
    return np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.NEAREST), np.uint8)


def _masks_of(mask_dir: Path, root: Path, where: str) -> tuple[dict, list]:
    """({relative path without suffix: mask file}, other files) under ``mask_dir``."""
    if not mask_dir.is_dir():
        raise PipelineError(f"{where}: no {mask_dir.relative_to(root)}/ folder beside "
                            f"{mask_dir.with_name('images').relative_to(root)}/ (one .png mask per image)")
    found, other = list_files(mask_dir, EXTENSIONS)
    masks = {}
    for path in found:
        if path.suffix.lower() != ".png":
            raise PipelineError(f"{where}: {path.relative_to(root)}: masks must be PNG files (lossless class "
                                "indices)")
        masks[path.relative_to(mask_dir).with_suffix("")] = path
    return masks, other


def load_masks(arg: str, data_cfg) -> SourceData:
    """Pair every image with its mask and read the masks (see the module doc for the layouts and policies)."""
    from pipeline.scenes import dominant, object_array

    root = source_path(arg)
    where = f"data.source masks:{root}"
    refuse_pad(data_cfg, f"masks:{root}")
    layout = pair_layout(root, where, "masks", beside=False)
    names = palette = None
    if (root / "classes.txt").is_file():
        names, palette = read_classes(root / "classes.txt", where, colours=True)
        if len(names) < 2:
            raise PipelineError(f"{where}: classes.txt names 1 class; a segmentation needs the background "
                                "(line 1) and at least one more class")
    listed, ignored, skipped = {}, [], []
    for split, (image_dir, mask_dir) in layout.items():
        images, other = list_files(image_dir, EXTENSIONS)
        ignored += other
        masks, other = _masks_of(mask_dir, root, where)
        ignored += other
        seen, pairs = {}, []
        for image in images:
            key = image.relative_to(image_dir).with_suffix("")
            if key in seen:
                raise PipelineError(f"{where}: images {seen[key].relative_to(root)} and "
                                    f"{image.relative_to(root)} share one mask; keep one")
            seen[key] = image
            if key not in masks:
                raise PipelineError(f"{where}: {image.relative_to(root)} has no mask (expected "
                                    f"{(mask_dir / key).relative_to(root)}.png)")
            pairs.append((image, masks[key]))
        for key, mask in masks.items():
            if key not in seen:
                raise PipelineError(f"{where}: {mask.relative_to(root)} has no image in "
                                    f"{image_dir.relative_to(root)}/")
        rows = []
        for image, mask_path in pairs:
            try:
                w, h = image_size(image)
            except Exception as exc:
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                skipped.append({"path": str(image), "reason": f"{type(exc).__name__}: {reason}"})
                continue
            rel = str(mask_path.relative_to(root))
            mask = read_mask(mask_path, rel, where)
            if mask.shape != (h, w):
                raise PipelineError(f"{where}: {rel}: mask {mask.shape[1]}x{mask.shape[0]}, image {w}x{h} "
                                    f"({image.relative_to(root)}); a mask has its image's size")
            top = int(mask.max()) if mask.size else 0
            if names is not None and top >= len(names):
                raise PipelineError(f"{where}: {rel}: class index {top} out of range (classes.txt names "
                                    f"{len(names)})")
            if top > 255 or int(mask.min()) < 0:
                raise PipelineError(f"{where}: {rel}: class index {top} out of range (at most 255)")
            rows.append((str(image), resize_mask(mask.astype(np.uint8), data_cfg.image_size)))
        listed[split] = rows
    if not any(listed.values()):
        raise PipelineError(f"{where}: no image files found")
    if "train" in listed and not listed["train"]:
        raise PipelineError(f"{where}: train/ holds no image file")
    notes = []
    if names is None:
        top = max(int(m.max()) for rows in listed.values() for _, m in rows)
        if top == 0:
            raise PipelineError(f"{where}: every mask is all 0 (background) and there is no classes.txt; "
                                "nothing to segment")
        names = ["background"] + [f"class{i}" for i in range(1, top + 1)]
        notes.append(f"masks:{root}: no classes.txt; classes named background, class1..class{top}")
    splits, targets = {}, {}
    for split, rows in listed.items():
        if rows:
            labels = [dominant(m[m > 0], len(names)) for _, m in rows]
            splits[split] = (np.array([p for p, _ in rows], dtype=object), np.asarray(labels, np.int64))
            targets[split] = object_array([m for _, m in rows])
    if ignored:
        notes.append(f"masks:{root}: {len(ignored)} other file(s) ignored")
    n = sum(len(y) for _, y in splits.values())
    per_split = ", ".join(f"{len(v[1]):,} {k}" for k, v in splits.items() if k != "all")
    encoding = {"kind": "segment", "palette": palette} if palette else None
    return SourceData(splits=splits, class_names=names, notes=notes, files=True, task="segment",
                      targets=targets, skipped=skipped, ignored=ignored_summary(ignored), encoding=encoding,
                      origin=f"segmentation folder {root} ({len(names)} classes; {n:,} images with masks"
                             f"{' (' + per_split + ')' if per_split else ''})")
