"""Generated scenes for object detection and semantic segmentation: simple shapes on textured backgrounds.

:func:`generate` draws, with numpy and Pillow only, ``n`` RGB uint8 images of ``size`` (96 x 96 by default),
each holding 0..``max_objects`` objects (a uniform count, so about one image in five is background only).
An object is a circle, a square or a triangle (squares and triangles turned by up to 25 degrees), or with
``shapes`` naming digit characters a digit drawn in Pillow's default font; its side is 12..28 px at 96 px
(scaled with the image) and its colour is chosen to stand out in brightness from the background under it, so
the scenes stay learnable in grayscale (``data.channels: 1``) too. Backgrounds are coarse colour noise, linear
gradients or stripes at a random angle, and the finished image carries mild pixel noise.

Placement rules, so that the targets are exact:

- objects never touch each other (their pixels are at least one pixel apart) and never the image border: the
  box of an object, ``(class, cx, cy, w, h)`` normalized to 0..1, is tight around every pixel drawn for it and
  the mask holds exactly those pixels;
- box centres are at least ``min_distance`` px apart (12 by default: more than the diagonal of an 8 x 8 cell,
  so two objects never share a cell of a stride-8 detector);
- two boxes overlap by at most a quarter of the smaller one.

Image ``i`` is drawn from the seed ``[seed, i]`` alone: the first images of ``generate(1000)`` are those of
``generate(10)``, and every run draws the same scenes.

Sources: ``scenes:detect`` and ``scenes:segment`` (:func:`load_source`) generate in memory; options follow
the task after commas, e.g. ``scenes:detect,n=300,size=64,seed=3`` (``n`` images, default 1,200; ``size``
side in pixels, default 96, or ``data.image_size`` when set; ``seed`` default 0; ``objects`` the most objects
per image, default 4). :func:`write` saves a dataset that ``yolo:<dir>`` (detect) or ``masks:<dir>``
(segment) reads back identically, as ``cnnpipe scenes`` does.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

VERSION = 1                     # bump when the drawing changes, so ingest re-runs (sources.identity)
SHAPES = ("circle", "square", "triangle")
TASKS = ("detect", "segment")
DEFAULT_N = 1200
DEFAULT_SIZE = 96
MIN_SIDE = 32
MAX_SIDE = 1024
MAX_N = 200_000
OPTIONS = {"n": (1, MAX_N), "size": (MIN_SIDE, MAX_SIDE), "seed": (0, 2**32 - 1), "objects": (0, 8)}
# Segment masks written by `write`: one colour per class index (index 0, background, black).
PALETTE = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
           (220, 190, 255), (170, 110, 40)]
_ATTEMPTS = 60                  # placements tried per object before the image keeps fewer objects


def class_names(task: str, shapes=SHAPES) -> list:
    """detect: the shapes; segment: ``background`` first, then the shapes (mask value = class + 1)."""
    return list(shapes) if task == "detect" else ["background", *shapes]


def _check_shapes(shapes) -> tuple:
    shapes = tuple(shapes)
    bad = [s for s in shapes if s not in SHAPES and not (len(s) == 1 and s.isdigit())]
    if not shapes or bad or len(set(shapes)) != len(shapes):
        raise ValueError(f"shapes: expected distinct names among {', '.join(SHAPES)} or digits 0-9, "
                         f"got {list(shapes)}")
    return shapes


def _hw(size) -> tuple[int, int]:
    h, w = (size, size) if np.isscalar(size) else (size[0], size[1])
    h, w = int(h), int(w)
    if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
        raise ValueError(f"size {h}x{w}: each side must be {MIN_SIDE}..{MAX_SIDE} px")
    return h, w


# ------------------------------------------------------------------------------------------ backgrounds

def _colour(rng, lo=40, hi=216) -> np.ndarray:
    return rng.uniform(lo, hi, 3)


def _background(rng, h: int, w: int) -> np.ndarray:
    """float32 [h, w, 3] in 0..255: coarse noise, a gradient or stripes."""
    kind = rng.integers(3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 0:  # coarse colour noise, upsampled smoothly, plus fine grain
        gh, gw = rng.integers(2, 7, 2)
        coarse = np.clip(_colour(rng) + rng.normal(0, 30, (gh, gw, 3)), 0, 255).astype(np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR), np.float32)
        return image + rng.normal(0, 8, (h, w, 3)).astype(np.float32)
    angle = rng.uniform(0, math.pi)
    proj = xx * math.cos(angle) + yy * math.sin(angle)
    c0 = _colour(rng)
    c1 = np.clip(c0 + rng.uniform(-70, 70, 3), 0, 255)
    if kind == 1:  # linear gradient across the image
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    else:          # stripes, soft or hard
        period = rng.uniform(5, 18)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * proj / period + rng.uniform(0, 2 * math.pi))
        if rng.random() < 0.5:
            t = (t > 0.5).astype(np.float32)
    return (c0[None, None] + t[..., None] * (c1 - c0)[None, None]).astype(np.float32)


def _luma(rgb) -> float:
    return float(np.dot(rgb, [0.299, 0.587, 0.114]))


def _object_colour(rng, under: float) -> np.ndarray:
    """A colour whose brightness differs from ``under`` (the background's) by at least 70 of 255."""
    for _ in range(30):
        colour = rng.uniform(0, 256, 3)
        if abs(_luma(colour) - under) >= 70:
            return colour
    return np.full(3, 0.0 if under > 127 else 255.0)


# ---------------------------------------------------------------------------------------------- shapes

def _font(px: int):
    return ImageFont.load_default(size=max(6, px))


def _draw_shape(kind: str, cx: float, cy: float, side: float, angle: float, h: int, w: int) -> np.ndarray:
    """bool [h, w]: the pixels of one shape (no anti-aliasing, so the mask and the box are exact)."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    r = side / 2
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r - 1, cy + r - 1], fill=255)
    elif kind in ("square", "triangle"):
        if kind == "square":
            base = [(-r, -r), (r, -r), (r, r), (-r, r)]
            base = [(0.85 * x, 0.85 * y) for x, y in base]  # a turned square's corners stay inside `side`
        else:
            corners = (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)  # equilateral, a little larger than r
            base = [(1.15 * r * math.cos(a), 1.15 * r * math.sin(a)) for a in corners]
        c, s = math.cos(angle), math.sin(angle)
        draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in base], fill=255)
    else:  # a digit character
        draw.text((cx, cy), kind, fill=255, font=_font(int(round(side * 1.3))), anchor="mm")
    return np.asarray(canvas) > 127


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel edges, x1/y1 exclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _scene(rng, h: int, w: int, shapes: tuple, max_objects: int, sizes: tuple, min_distance: float):
    """(image uint8 [h, w, 3], objects float32 [n, 5], mask uint8 [h, w]) of one scene."""
    image = _background(rng, h, w)
    mask = np.zeros((h, w), np.uint8)
    occupied = np.zeros((h, w), bool)
    boxes, objects = [], []
    for _ in range(int(rng.integers(0, max_objects + 1))):
        for _ in range(_ATTEMPTS):
            cls = int(rng.integers(len(shapes)))
            side = float(rng.uniform(*sizes))
            margin = side / 2 + 2
            cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
            angle = math.radians(rng.uniform(-25, 25))
            pixels = _draw_shape(shapes[cls], cx, cy, side, angle, h, w)
            if pixels.sum() < 4:
                continue
            x0, y0, x1, y1 = _box(pixels)
            if x0 == 0 or y0 == 0 or x1 == w or y1 == h or (_dilate(pixels) & occupied).any():
                continue
            bcx, bcy = (x0 + x1) / 2, (y0 + y1) / 2
            if any(math.hypot(bcx - (a + c) / 2, bcy - (b + d) / 2) < min_distance for a, b, c, d in boxes):
                continue
            area = (x1 - x0) * (y1 - y0)
            if any(max(0, min(x1, c) - max(x0, a)) * max(0, min(y1, d) - max(y0, b))
                   > 0.25 * min(area, (c - a) * (d - b)) for a, b, c, d in boxes):
                continue
            break
        else:
            continue  # no room left: the image keeps fewer objects
        under = _luma(image[pixels].mean(axis=0))
        image[pixels] = _object_colour(rng, under)
        mask[pixels] = cls + 1
        occupied |= pixels
        boxes.append((x0, y0, x1, y1))
        objects.append((cls, bcx / w, bcy / h, (x1 - x0) / w, (y1 - y0) / h))
    image += rng.normal(0, 4, image.shape).astype(np.float32)
    out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out, np.asarray(objects, np.float32).reshape(-1, 5), mask


def generate(n: int, size=DEFAULT_SIZE, seed: int = 0, max_objects: int = 4, shapes=SHAPES,
             min_size: float | None = None, max_size: float | None = None, min_distance: float = 12.0):
    """``n`` scenes of ``size`` (an int or [height, width]).

    Returns ``(images uint8 [n, H, W, 3], objects, masks uint8 [n, H, W])``: ``objects[i]`` is float32
    [k, 5] rows (class, cx, cy, w, h) normalized to 0..1 with boxes tight around the drawn pixels; a mask
    holds 0 for background and class + 1 under each object. Object sides default to 12..28 px at 96 px,
    scaled with the smaller image side."""
    h, w = _hw(size)
    shapes = _check_shapes(shapes)
    if n < 0 or seed < 0 or not 0 <= max_objects <= 8:
        raise ValueError(f"n {n}, seed {seed}, max_objects {max_objects}: expected n, seed >= 0 and "
                         "max_objects 0..8")
    scale = min(h, w) / 96
    sizes = (min_size or 12 * scale, max_size or 28 * scale)
    images = np.empty((n, h, w, 3), np.uint8)
    masks = np.empty((n, h, w), np.uint8)
    objects = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        images[i], boxes, masks[i] = _scene(rng, h, w, shapes, max_objects, sizes, min_distance)
        objects.append(boxes)
    return images, objects, masks


def dominant(classes, count: int) -> int:
    """The class with most objects or pixels (ties: the lowest index); 0 when there is none."""
    classes = np.asarray(classes, np.int64).ravel()
    return int(np.bincount(classes, minlength=count).argmax()) if classes.size else 0


def object_array(items: list) -> np.ndarray:
    """A numpy object array [N] holding the given arrays (np.array would stack equal shapes)."""
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


# ------------------------------------------------------------------------------------------------ write

def yolo_line(row) -> str:
    return f"{int(row[0])} {row[1]:.6f} {row[2]:.6f} {row[3]:.6f} {row[4]:.6f}"


def write(task: str, out_dir, n: int, size=DEFAULT_SIZE, seed: int = 0, **generate_kw) -> dict:
    """Write ``n`` scenes to the new folder ``out_dir`` and return a summary.

    detect: ``images/scene_00000.png``, ``labels/scene_00000.txt`` (one ``class cx cy w h`` line per object,
    6 decimals) and ``classes.txt``; of the images without objects, the first, third, ... get no label file
    and the others an empty one (both mean background only to ``yolo:``). segment: ``images/*.png``,
    ``masks/*.png`` (palette PNGs whose indices are the classes) and ``classes.txt`` with a colour per class.

    ``out_dir`` must not exist or be empty; the files are written to a temporary folder beside it that is
    renamed at the end, so a failure leaves nothing behind."""
    from pipeline.errors import PipelineError

    if task not in TASKS:
        raise ValueError(f"task {task!r}: expected detect or segment")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PipelineError(f"{out}: exists and is not an empty folder; choose a new one (nothing written)")
    images, objects, masks = generate(n, size, seed, **generate_kw)
    names = class_names(task, generate_kw.get("shapes", SHAPES))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    summary = {"path": str(out), "task": task, "images": n, "size": list(images.shape[1:3]),
               "classes": names, "objects": int(sum(len(o) for o in objects)),
               "background": int(sum(len(o) == 0 for o in objects)), "without_label_file": 0}
    try:
        (tmp / "images").mkdir()
        (tmp / ("labels" if task == "detect" else "masks")).mkdir()
        if task == "detect":
            (tmp / "classes.txt").write_text("".join(f"{c}\n" for c in names), encoding="utf-8")
        else:
            colours = [PALETTE[i % len(PALETTE)] for i in range(len(names))]
            lines = [f"{c} #{r:02x}{g:02x}{b:02x}\n" for c, (r, g, b) in zip(names, colours)]
            (tmp / "classes.txt").write_text("".join(lines), encoding="utf-8")
            flat = [v for rgb in colours for v in rgb]
        background_seen = 0
        for i in range(n):
            stem = f"scene_{i:05d}"
            Image.fromarray(images[i]).save(tmp / "images" / f"{stem}.png")
            if task == "detect":
                if len(objects[i]) == 0:
                    background_seen += 1
                    if background_seen % 2:  # the 1st, 3rd, ... background-only image: no label file
                        summary["without_label_file"] += 1
                        continue
                (tmp / "labels" / f"{stem}.txt").write_text("".join(yolo_line(r) + "\n" for r in objects[i]),
                                                            encoding="utf-8")
            else:
                pil = Image.frombytes("P", masks[i].shape[::-1], masks[i].tobytes())  # indices kept as-is
                pil.putpalette(flat)
                pil.save(tmp / "masks" / f"{stem}.png")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


# ---------------------------------------------------------------------------------------------- source

def parse_arg(arg: str) -> tuple[str, dict]:
    """``detect,n=300,size=64,seed=3`` -> ("detect", {"n": 300, "size": 64, "seed": 3}); a ConfigError if
    the task or an option is bad."""
    from pipeline.errors import ConfigError

    task, *options = [part.strip() for part in arg.split(",")]
    task = task.lower()
    if task not in TASKS:
        raise ConfigError(f"data.source: scenes: needs detect or segment, e.g. scenes:detect or "
                          f"scenes:segment,n=300,size=64,seed=3 (got {arg!r})")
    values = {}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip().lower()
        if key not in OPTIONS or not eq:
            raise ConfigError(f"data.source: scenes:{arg}: unknown option {option!r} (use n=, size=, seed=, "
                              "objects=)")
        lo, hi = OPTIONS[key]
        try:
            number = int(value.strip())
        except ValueError:
            number = None
        if number is None or not lo <= number <= hi:
            raise ConfigError(f"data.source: scenes:{arg}: {key}={value.strip()!r}: expected an integer "
                              f"{lo}..{hi}")
        values[key] = number
    return task, values


def load_source(arg: str, data_cfg):
    """``scenes:detect|segment[,n=..,size=..,seed=..,objects=..]``: generated in memory (module doc)."""
    from pipeline.errors import ConfigError
    from pipeline.imaging import conform
    from pipeline.sources import SourceData

    task, opts = parse_arg(arg)
    if data_cfg.resize == "pad":
        raise ConfigError(f"data.resize: pad keeps no box or mask in place; use resize with data.source "
                          f"scenes:{arg}")
    if data_cfg.image_size:
        h, w = (int(v) for v in data_cfg.image_size)
        if "size" in opts and (opts["size"], opts["size"]) != (h, w):
            raise ConfigError(f"data.source scenes:{arg}: size={opts['size']} differs from data.image_size "
                              f"[{h}, {w}]; give the size once")
        if min(h, w) < MIN_SIDE or max(h, w) > MAX_SIDE:
            raise ConfigError(f"data.image_size [{h}, {w}]: scenes: are drawn {MIN_SIDE}..{MAX_SIDE} px a "
                              "side")
    else:
        h = w = opts.get("size", DEFAULT_SIZE)
    n, seed, most = opts.get("n", DEFAULT_N), opts.get("seed", 0), opts.get("objects", 4)
    images, objects, masks = generate(n, (h, w), seed, max_objects=most)
    names = class_names(task)
    if task == "detect":
        targets = object_array(objects)
        labels = [dominant(o[:, 0], len(names)) for o in objects]
    else:
        targets = object_array(list(masks))
        labels = [dominant(m[m > 0], len(names)) for m in masks]
    background = sum(len(o) == 0 for o in objects)
    origin = (f"generated scenes ({task}: {n:,} {h}x{w} images of 0-{most} {', '.join(SHAPES)}, seed {seed}; "
              f"{sum(len(o) for o in objects):,} objects, {background:,} background-only images)")
    images = conform(images, data_cfg.channels, None)
    return SourceData(splits={"all": (images, np.asarray(labels, np.int64))}, class_names=names,
                      origin=origin, task=task, targets={"all": targets})
