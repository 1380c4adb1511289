"""Turning a detection or segmentation model's output tensor into answers, with numpy alone.

This module imports nothing but numpy and the standard library: it is inlined into the TensorFlow-free
``predict.py`` that runs on a device, and the Keras-side metrics use the very same functions, so what the
evaluation measured is what the device computes.

Detection (FOMO-style centroids)
--------------------------------
The model divides the input into a grid of ``gh x gw`` cells (``gh = H // stride``) and gives every cell a
softmax over ``K + 1`` channels: channel 0 is background, channel ``c + 1`` is object class ``c``. Cell
``(i, j)`` covers pixels ``[i*stride, (i+1)*stride)`` down and ``[j*stride, (j+1)*stride)`` across; its centre
in input pixels is ``((j + 0.5) * W / gw, (i + 0.5) * H / gh)``.

1. A cell is an *object cell of class c* when its argmax is ``c + 1`` and ``p[c + 1] >= threshold``. A tie
   in the argmax goes to the lower channel (numpy's ``argmax``), so background wins a tie - this matters for
   int8 outputs, whose dequantized probabilities are multiples of 1/256.
2. Object cells of the same class that touch are one object. Touching means **4-connected** (sharing a side)
   by default: a FOMO object fires one cell or a small blob around its centre, which is side-connected,
   while two distinct objects a diagonal apart (about 1.4 cells) stay two. ``connectivity=8`` also merges
   cells that only share a corner.
3. Each group gives ``{"class": c, "x": x, "y": y, "score": s}``: ``(x, y)`` is the mean of the group's cell
   centres weighted by their probability ``p[c + 1]``, and ``s`` the largest ``p[c + 1]`` in the group.
   Objects are sorted by score, highest first (ties: class, then y, then x).

Segmentation
------------
The model gives a softmax over ``K`` classes for every pixel; the answer is the argmax, an uint8 mask.

Both accept any float array (Keras probabilities, or an int8/uint8 output dequantized as
``scale * (q - zero_point)``) and an optional leading batch dimension of 1.
"""
from __future__ import annotations

import numpy as np

NEIGHBOURS = {
    4: ((-1, 0), (1, 0), (0, -1), (0, 1)),
    8: ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)),
}


def _one_image(probs, rank: int, what: str) -> np.ndarray:
    """``probs`` as float64 with ``rank`` dimensions; a leading batch dimension of 1 is dropped."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == rank + 1 and probs.shape[0] == 1:
        probs = probs[0]
    if probs.ndim != rank:
        raise ValueError(f"{what} expects the output of one image with {rank} dimensions, "
                         f"got shape {probs.shape}")
    return probs


def object_cells(probs, threshold: float = 0.5) -> np.ndarray:
    """int [gh, gw]: the object class of each cell (0-based); -1 for background and cells under threshold."""
    probs = _one_image(probs, 3, "object_cells")
    winner = probs.argmax(axis=-1)
    best = np.take_along_axis(probs, winner[..., None], axis=-1)[..., 0]
    return np.where((winner > 0) & (best >= threshold), winner - 1, -1)


def groups(labels: np.ndarray, connectivity: int = 4) -> list[list[tuple[int, int]]]:
    """Connected groups of equal, non-negative labels, each a list of (row, col) cells (a flood fill)."""
    if connectivity not in NEIGHBOURS:
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    steps = NEIGHBOURS[connectivity]
    rows, cols = labels.shape
    seen = np.zeros(labels.shape, dtype=bool)
    found = []
    for i in range(rows):
        for j in range(cols):
            if labels[i, j] < 0 or seen[i, j]:
                continue
            seen[i, j] = True
            stack, group = [(i, j)], []
            while stack:
                r, c = stack.pop()
                group.append((r, c))
                for dr, dc in steps:
                    nr, nc = r + dr, c + dc
                    inside = 0 <= nr < rows and 0 <= nc < cols
                    if inside and not seen[nr, nc] and labels[nr, nc] == labels[i, j]:
                        seen[nr, nc] = True
                        stack.append((nr, nc))
            found.append(sorted(group))
    return found


def centroids(probs, image_hw, threshold: float = 0.5, connectivity: int = 4) -> list[dict]:
    """Objects found in one image's detection output ``probs`` [gh, gw, K+1], as
    ``{"class", "x", "y", "score"}`` dicts in input pixels (``image_hw`` = (H, W)), highest score first."""
    probs = _one_image(probs, 3, "centroids")
    gh, gw = probs.shape[:2]
    height, width = float(image_hw[0]), float(image_hw[1])
    labels = object_cells(probs, threshold)
    objects = []
    for group in groups(labels, connectivity):
        cls = int(labels[group[0]])
        rows = np.array([r for r, _ in group], dtype=np.float64)
        cols = np.array([c for _, c in group], dtype=np.float64)
        weight = probs[rows.astype(int), cols.astype(int), cls + 1]
        share = weight / weight.sum() if weight.sum() > 0 else np.full(len(weight), 1.0 / len(weight))
        x = float(((cols + 0.5) * share).sum() * width / gw)   # one cell: share 1.0, so x is exact
        y = float(((rows + 0.5) * share).sum() * height / gh)
        objects.append({"class": cls, "x": x, "y": y, "score": float(weight.max())})
    objects.sort(key=lambda o: (-o["score"], o["class"], o["y"], o["x"]))
    return objects


BOX_CHANNELS = 4  # detect.boxes: per cell (x offset, y offset) of the centre in the cell, (w, h) of the image


def with_boxes(output, image_hw, threshold: float = 0.5, connectivity: int = 4) -> list[dict]:
    """Objects of a detection output with boxes, [gh, gw, K+1+4]: the class scores first, then per cell the
    sigmoid box channels (ox, oy, w, h). Each object of :func:`centroids` gets ``"box": [x0, y0, x1, y1]`` in
    input pixels from the cell holding its centre: centre ((j + ox) * W / gw, (i + oy) * H / gh), size
    (w * W, h * H)."""
    output = _one_image(output, 3, "with_boxes")
    scores, box = output[..., :-BOX_CHANNELS], output[..., -BOX_CHANNELS:]
    gh, gw = scores.shape[:2]
    height, width = float(image_hw[0]), float(image_hw[1])
    found = centroids(scores, image_hw, threshold, connectivity)
    for o in found:
        i = min(gh - 1, max(0, int(o["y"] * gh / height)))
        j = min(gw - 1, max(0, int(o["x"] * gw / width)))
        ox, oy, w, h = (float(v) for v in box[i, j])
        cx, cy = (j + ox) * width / gw, (i + oy) * height / gh
        o["box"] = [round(cx - w * width / 2, 2), round(cy - h * height / 2, 2),
                    round(cx + w * width / 2, 2), round(cy + h * height / 2, 2)]
    return found


def mask(probs) -> np.ndarray:
    """uint8 [H, W]: the most probable class of each pixel of one image's segmentation output [H, W, K]."""
    probs = _one_image(probs, 3, "mask")
    if probs.shape[-1] > 256:
        raise ValueError(f"an uint8 mask holds at most 256 classes, the output has {probs.shape[-1]}")
    return probs.argmax(axis=-1).astype(np.uint8)


def describe_objects(objects: list[dict], class_names) -> str:
    """One line per object, e.g. ``circle x=34.5 y=60.0 score=0.93``; ``no objects`` when there are none."""
    if not objects:
        return "no objects"
    lines = []
    for o in objects:
        c = int(o["class"])
        name = class_names[c] if 0 <= c < len(class_names) else f"class {c}"
        lines.append(f"{name} x={o['x']:.1f} y={o['y']:.1f} score={o['score']:.2f}")
    return "\n".join(lines)
