"""The report's pictures as base64 PNG: image tiles and montages (Pillow), plots (matplotlib).

Everything returns the text of a ``data:`` URI body, so the page embeds it and needs no other file.
"""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import numpy as np

TILE = 48          # pixels: small images are enlarged (nearest neighbour) to at least this side ...
LONGEST = 192      # ... unless that makes their longest side longer than this (a one-row sequence)
GAP = 2            # pixels between the tiles of a montage


def _b64_png(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def file_b64(path: Path) -> str | None:
    """A PNG file already made by a stage, or None when it is not there."""
    path = Path(path)
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] (or [H, W]) -> uint8 [H, W, 3]: grey repeated, RGB kept, else the first channel."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 3:
        return image.astype(np.uint8)
    return np.repeat(image[..., :1], 3, axis=-1).astype(np.uint8)


def _scale(h: int, w: int, tile: int = TILE) -> int:
    """The whole-pixel enlargement of an h x w image: its short side to ``tile``, its long side within
    ``LONGEST``."""
    return max(1, min(math.ceil(tile / max(1, min(h, w))), LONGEST // max(h, w, 1)))


def montage(tiles: list, cols: int | None = None, tile: int = TILE, gap: int = GAP,
            background: int = 255) -> str:
    """uint8 RGB tiles of one size side by side (``cols`` per row, default all), enlarged, as base64 PNG."""
    from PIL import Image

    tiles = [_rgb(t) for t in tiles]
    h, w = tiles[0].shape[:2]
    k = _scale(h, w, tile)
    cols = max(1, min(cols or len(tiles), len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    canvas = np.full((rows * (h * k + gap) - gap, cols * (w * k + gap) - gap, 3), background, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        big = np.repeat(np.repeat(t, k, axis=0), k, axis=1)
        canvas[r * (h * k + gap):r * (h * k + gap) + h * k, c * (w * k + gap):c * (w * k + gap) + w * k] = big
    return _b64_png(Image.fromarray(canvas))


def image(img: np.ndarray, tile: int = TILE) -> str:
    """One image, enlarged, as base64 PNG."""
    return montage([img], 1, tile)


def colour(values: np.ndarray, cmap: str = "viridis", symmetric: bool = False) -> np.ndarray:
    """A 2-D float array -> uint8 RGB through a matplotlib colormap, scaled to its own range (or to
    [-max|v|, max|v|] when ``symmetric``, so zero is the middle colour)."""
    from matplotlib import colormaps

    v = np.asarray(values, np.float64)
    if symmetric:
        m = float(np.abs(v).max()) or 1.0
        v = (v + m) / (2 * m)
    else:
        lo, hi = float(v.min()), float(v.max())
        v = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    return (colormaps[cmap](v)[..., :3] * 255).round().astype(np.uint8)


def filter_tiles(kernel: np.ndarray, limit: int = 64) -> list:
    """A first-layer kernel [kh, kw, in, out] -> one RGB tile per output filter: an RGB image when the
    layer reads 3 channels (scaled to its range), else the mean over input channels in a diverging map."""
    tiles = []
    for i in range(min(kernel.shape[-1], limit)):
        f = kernel[..., i]
        if f.shape[-1] == 3:
            lo, hi = float(f.min()), float(f.max())
            tiles.append(((f - lo) / ((hi - lo) or 1.0) * 255).round().astype(np.uint8))
        else:
            tiles.append(colour(f.mean(axis=-1), "RdBu_r", symmetric=True))
    return tiles


def map_tiles(maps: np.ndarray, limit: int = 16) -> list:
    """Feature maps [h, w, channels] -> one RGB tile per channel (each scaled to its own range)."""
    return [colour(maps[..., i]) for i in range(min(maps.shape[-1], limit))]


def learning_rate(history: list[dict], best_epoch: int | None) -> str | None:
    """The learning rate per epoch (``history.csv``), the best epoch marked; None without that column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history or any("learning_rate" not in row for row in history):
        return None
    epochs = [int(r["epoch"]) + 1 for r in history]
    fig, ax = plt.subplots(figsize=(6, 2.8), dpi=100)
    ax.plot(epochs, [r["learning_rate"] for r in history], marker="o", ms=3, label="learning rate")
    if best_epoch:
        ax.axvline(best_epoch, color="tab:green", alpha=0.6, label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_title("learning-rate schedule")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
