"""What a detection or segmentation model's output becomes for a user: objects with labels (and boxes), or a
mask PNG of class indices with each class's share; used by ``cnnpipe predict`` and, inlined, by the bundle's
``predict.py``. numpy, Pillow and the standard library only (pipeline/decoding.py does the arithmetic).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from pipeline.decoding import centroids, mask, with_boxes


def task_decoder(card: dict, names: list):
    """None for a classifier; for a detection model ``scores -> [{"label", "x", "y", "score"}]``, for a
    segmentation model ``scores -> uint8 mask [H, W]``, by the card's ``decoding`` (pipeline/decoding.py)."""
    task, dec = card.get("task"), card.get("decoding", {})
    if task == "detect":
        decode = with_boxes if dec.get("boxes") else centroids

        def objects(scores):
            found = decode(scores, dec["input_hw"], dec["threshold"], dec.get("connectivity", 4))
            return [{"label": names[o["class"]], "x": round(float(o["x"]), 2), "y": round(float(o["y"]), 2),
                     "score": round(float(o["score"]), 4), **({"box": o["box"]} if "box" in o else {})}
                    for o in found]
        return objects
    if task == "segment":
        return mask
    return None


def mask_path(image_path, mask_dir) -> Path:
    return Path(mask_dir) / f"{Path(image_path).stem}.mask.png"


def write_mask(mask_array: np.ndarray, image_path, mask_dir, card: dict) -> Path:
    """The predicted mask as a PNG of class indices (mode L), at the input image's own size (nearest
    neighbour), in ``mask_dir``; written atomically. Returns its path."""
    from PIL import Image

    out = mask_path(image_path, mask_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(mask_array, np.uint8), mode="L")
    try:
        with Image.open(image_path) as original:
            size = original.size
    except Exception:  # a .npy input or an unreadable header: keep the model's resolution
        size = img.size
    if size != img.size:
        img = img.resize(size, Image.NEAREST)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        img.save(tmp, format="PNG")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a mask is an ordinary output file
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def mask_shares(mask_array: np.ndarray, card: dict) -> dict:
    """{class name: share of the pixels} of a predicted mask, classes present only."""
    names = card.get("class_names") or [str(i) for i in range(int(mask_array.max()) + 1)]
    counts = np.bincount(np.asarray(mask_array).ravel(), minlength=len(names))
    return {names[k]: round(float(c) / mask_array.size, 4) for k, c in enumerate(counts) if c}


def task_row(path, result, card: dict, mask_dir) -> tuple[dict, str]:
    """A detection or segmentation answer as a JSON row and a text line; a mask is written to ``mask_dir``."""
    if card.get("task") == "segment":
        written = write_mask(result, path, mask_dir, card)
        shares = mask_shares(result, card)
        text = ", ".join(f"{name} {100 * share:.1f}%" for name, share in shares.items())
        return ({"image": str(path), "mask": str(written), "classes": shares},
                f"{path}: mask {written} ({text})")
    lines = "".join(f"\n  {o['label']} x={o['x']:.1f} y={o['y']:.1f} score={o['score']:.3f}"
                    + (" box=[{:.1f}, {:.1f}, {:.1f}, {:.1f}]".format(*o["box"]) if "box" in o else "")
                    for o in result)
    return {"image": str(path), "objects": result}, f"{path}: {len(result)} object(s){lines}"
